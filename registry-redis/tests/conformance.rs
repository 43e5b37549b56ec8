//! The conformance suite on a real Redis (one server per test, started by the harness).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use registry_conformance::{RawStore, StoreHarness};
use registry_test_support::RedisServer;

/// Plain Redis commands to the server at this URL.
struct RawRedis(String);

#[async_trait]
impl RawStore for RawRedis {
    async fn delete(&self, key: &str) {
        // A bare DEL: no change is recorded; the owner's next heartbeat notices.
        let mut conn = support::raw(&self.0).await;
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    async fn put(&self, key: &str, value: &[u8]) {
        support::put_foreign(&self.0, key, value).await;
    }
}

async fn redis() -> StoreHarness<RedisServer> {
    let redis = support::start();
    let raw = RawRedis(redis.url());
    StoreHarness::new(redis, raw)
}

registry_conformance::conformance_tests!(redis);
