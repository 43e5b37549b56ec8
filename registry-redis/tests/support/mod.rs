//! What the Redis test files need beyond `registry-conformance`: a started Redis, Redis as a
//! [`Target`], a plain connection, and writes in the registry's layout behind its back.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use registry_conformance::{init_tracing, BackendUnderTest, Target};
use registry_redis::RedisBackend;
use registry_test_support::RedisServer;

/// A fresh Redis (persistence off) and its target; test logs on.
pub fn start() -> BackendUnderTest<RedisServer> {
    init_tracing();
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let target = target(&server.url());
    BackendUnderTest::new(server, target)
}

/// The Redis at `url` (`redis://[user:pass@]host:port[/db]`).
pub fn target(url: &str) -> Target {
    Target::new(url, |options| async move {
        RedisBackend::connect(&options).await
    })
}

/// A plain connection, for commands behind the registry's back.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Writes `value` at `key` in the registry's layout (indexed, recorded in the change stream,
/// no deadline): what a foreign program writing junk the registry can see looks like.
pub async fn put_foreign(url: &str, key: &str, value: &[u8]) {
    let mut conn = raw(url).await;
    let _: () = redis::Script::new(
        r"
        redis.call('SET', KEYS[1], ARGV[1])
        redis.call('ZADD', 'rpc-registry:index', 0, KEYS[1])
        redis.call('ZADD', 'rpc-registry:deadlines', 99999999999999, KEYS[1])
        local rev = redis.call('INCR', 'rpc-registry:revision')
        redis.call('XADD', 'rpc-registry:changes', rev .. '-1', 'op', 'put', 'key', KEYS[1], 'value', ARGV[1])
        ",
    )
    .key(key)
    .arg(value)
    .invoke_async(&mut conn)
    .await
    .unwrap();
}
