//! The conformance suite on a real ZooKeeper (one server per test, `tickTime` 200 ms so
//! sessions of 0.4–4 s are allowed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use registry_core::conformance::Harness;
use registry_core::{Registry, RegistryOptions};
use registry_test_support::ZkServer;

struct Zk {
    server: ZkServer,
}

#[async_trait]
impl Harness for Zk {
    async fn client(&self, options: RegistryOptions) -> Registry {
        support::registry(&self.server.connect_string(), options).await
    }

    async fn delete_raw(&self, key: &str) {
        let raw = support::raw(&self.server.connect_string()).await;
        raw.delete(key, None).await.unwrap();
    }

    async fn put_raw(&self, key: &str, value: &[u8]) {
        let raw = support::raw(&self.server.connect_string()).await;
        let persistent = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::anyone_all());
        if let Some((dir, _)) = key.rsplit_once('/') {
            match raw.mkdir(dir, &persistent).await {
                Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => panic!("mkdir {dir}: {e}"),
            }
        }
        raw.create(key, value, &persistent).await.unwrap();
    }
}

async fn zk() -> Zk {
    support::init_tracing();
    Zk {
        server: ZkServer::start_with_tick(200).unwrap_or_else(|e| panic!("{e}")),
    }
}

registry_core::conformance_tests!(zk);
