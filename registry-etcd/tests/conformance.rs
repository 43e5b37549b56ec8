//! The conformance suite on a real etcd (one server per test, started by the harness).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use registry_core::conformance::Harness;
use registry_core::{Registry, RegistryOptions};
use registry_test_support::EtcdServer;

struct Etcd {
    server: EtcdServer,
}

#[async_trait]
impl Harness for Etcd {
    async fn client(&self, options: RegistryOptions) -> Registry {
        support::registry(&self.server.endpoint(), options).await
    }

    async fn delete_raw(&self, key: &str) {
        support::raw(&self.server.endpoint())
            .await
            .delete(key, None)
            .await
            .unwrap();
    }

    async fn put_raw(&self, key: &str, value: &[u8]) {
        support::raw(&self.server.endpoint())
            .await
            .put(key, value, None)
            .await
            .unwrap();
    }
}

async fn etcd() -> Etcd {
    support::init_tracing();
    Etcd {
        server: EtcdServer::start().unwrap_or_else(|e| panic!("{e}")),
    }
}

registry_core::conformance_tests!(etcd);
