//! Shared by the Redis test files: a backend on a harness server, raw Redis access.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use registry_core::{ConnectOptions, Registry, RegistryOptions};
use registry_redis::RedisBackend;

pub fn connect_options(address: &str, options: &RegistryOptions) -> ConnectOptions {
    ConnectOptions::for_registry(address, options)
}

pub async fn registry(address: &str, options: RegistryOptions) -> Registry {
    let backend = RedisBackend::connect(&connect_options(address, &options))
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {}", registry_core::error_chain(&e)));
    Registry::new(Arc::new(backend), options).expect("valid options")
}

pub async fn raw(address: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(address)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Writes `value` at `key` in the registry's layout (indexed, recorded in the change stream,
/// no deadline): what a foreign program writing junk the registry can see looks like.
pub async fn put_foreign(address: &str, key: &str, value: &[u8]) {
    let mut conn = raw(address).await;
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

/// [`registry`] as the boxed future [`registry_core::conformance::Connect`] wants.
pub fn registry_boxed(
    address: String,
    options: RegistryOptions,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Registry> + Send>> {
    Box::pin(async move { registry(&address, options).await })
}

pub use registry_core::conformance::init_tracing;
