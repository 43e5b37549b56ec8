//! The conformance suite on a real ZooKeeper (one server per test, `tickTime` 200 ms so
//! sessions of 0.4–4 s are allowed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use registry_conformance::{RawStore, StoreHarness};
use registry_test_support::ZkServer;
use zookeeper_client as zk;

/// Plain ZooKeeper requests to the server at this address.
struct RawZk(String);

#[async_trait]
impl RawStore for RawZk {
    async fn delete(&self, key: &str) {
        let raw = support::raw(&self.0).await;
        raw.delete(key, None).await.unwrap();
    }

    async fn put(&self, key: &str, value: &[u8]) {
        let raw = support::raw(&self.0).await;
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        if let Some((dir, _)) = key.rsplit_once('/') {
            match raw.mkdir(dir, &persistent).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(e) => panic!("mkdir {dir}: {e}"),
            }
        }
        match raw.create(key, value, &persistent).await {
            Ok(_) => {}
            // Overwrites, as a put does in the other stores.
            Err(zk::Error::NodeExists) => {
                raw.set_data(key, value, None).await.unwrap();
            }
            Err(e) => panic!("create {key}: {e}"),
        }
    }
}

async fn zk() -> StoreHarness<ZkServer> {
    let zk = support::start();
    let raw = RawZk(zk.connect_string());
    StoreHarness::new(zk, raw)
}

registry_conformance::conformance_tests!(zk);
