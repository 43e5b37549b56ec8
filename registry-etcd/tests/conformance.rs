//! The conformance suite on a real etcd (one server per test, started by the harness).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use registry_conformance::{RawStore, StoreHarness};
use registry_test_support::EtcdServer;

/// Plain etcd requests to the server at this address.
struct RawEtcd(String);

#[async_trait]
impl RawStore for RawEtcd {
    async fn delete(&self, key: &str) {
        support::raw(&self.0).await.delete(key, None).await.unwrap();
    }

    async fn put(&self, key: &str, value: &[u8]) {
        support::raw(&self.0)
            .await
            .put(key, value, None)
            .await
            .unwrap();
    }
}

async fn etcd() -> StoreHarness<EtcdServer> {
    let etcd = support::start();
    let raw = RawEtcd(etcd.endpoint());
    StoreHarness::new(etcd, raw)
}

registry_conformance::conformance_tests!(etcd);
