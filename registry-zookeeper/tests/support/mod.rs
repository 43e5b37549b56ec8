//! What the ZooKeeper test files need beyond `registry-conformance`: a started ZooKeeper,
//! ZooKeeper as a [`Target`] and a plain ZooKeeper session.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use registry_conformance::{init_tracing, BackendUnderTest, Target};
use registry_test_support::ZkServer;
use registry_zookeeper::ZkBackend;

/// A fresh server with `tickTime` 200 ms (so sessions of 0.4–4 s are allowed) and its
/// target; test logs on.
pub fn start() -> BackendUnderTest<ZkServer> {
    init_tracing();
    let server = ZkServer::start_with_tick(200).unwrap_or_else(|e| panic!("{e}"));
    let target = target(&server.connect_string());
    BackendUnderTest::new(server, target)
}

/// The ZooKeeper at `address` (`host:port,...[/chroot]`).
pub fn target(address: &str) -> Target {
    Target::new(address, |options| async move {
        ZkBackend::connect(&options).await
    })
}

/// A plain ZooKeeper session, for writes behind the registry's back.
pub async fn raw(address: &str) -> zookeeper_client::Client {
    zookeeper_client::Client::connect(address).await.unwrap()
}
