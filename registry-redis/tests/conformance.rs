//! The conformance suite on a real Redis (one server per test, started by the harness).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use registry_core::conformance::Harness;
use registry_core::{Registry, RegistryOptions};
use registry_test_support::RedisServer;

struct Redis {
    server: RedisServer,
}

#[async_trait]
impl Harness for Redis {
    async fn client(&self, options: RegistryOptions) -> Registry {
        support::registry(&self.server.url(), options).await
    }

    async fn delete_raw(&self, key: &str) {
        // A bare DEL: no change is recorded; the owner's next heartbeat notices.
        let mut conn = support::raw(&self.server.url()).await;
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    async fn put_raw(&self, key: &str, value: &[u8]) {
        support::put_foreign(&self.server.url(), key, value).await;
    }
}

async fn redis() -> Redis {
    support::init_tracing();
    Redis {
        server: RedisServer::start().unwrap_or_else(|e| panic!("{e}")),
    }
}

registry_core::conformance_tests!(redis);
