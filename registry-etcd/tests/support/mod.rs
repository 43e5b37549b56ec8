//! What the etcd test files need beyond `registry-conformance`: a started etcd, etcd as a
//! [`Target`] (with [`EtcdSettings`] when a test tunes them) and a plain etcd client.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use registry_conformance::{init_tracing, BackendUnderTest, Target};
use registry_etcd::{EtcdBackend, EtcdSettings};
use registry_test_support::EtcdServer;

/// A fresh etcd (on a free port, with a throwaway data dir) and its target; test logs on.
pub fn start() -> BackendUnderTest<EtcdServer> {
    init_tracing();
    let server = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let target = target(&server.endpoint());
    BackendUnderTest::new(server, target)
}

/// The etcd at `address` (comma-separated endpoints), default settings.
pub fn target(address: &str) -> Target {
    target_with(address, EtcdSettings::default())
}

/// The etcd at `address`, connected with `settings`.
pub fn target_with(address: &str, settings: EtcdSettings) -> Target {
    Target::new(address, move |options| {
        let settings = settings.clone();
        async move { EtcdBackend::connect_with(&options, settings).await }
    })
}

/// A plain etcd client, for reads and writes behind the registry's back.
pub async fn raw(address: &str) -> etcd_client::Client {
    let endpoints: Vec<&str> = address.split(',').collect();
    etcd_client::Client::connect(endpoints, None)
        .await
        .expect("raw etcd client")
}

/// Time for a provider's own watch to confirm what it just wrote.
pub const SETTLE: Duration = Duration::from_millis(300);
