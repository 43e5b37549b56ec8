//! What the Redis test files need beyond `registry-conformance`: a started Redis, Redis as a
//! [`Target`], a plain connection, writes in the registry's layout behind its back, and
//! clients whose relists are counted.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use registry_conformance::{init_tracing, BackendUnderTest, Target};
use registry_core::{
    Backend, BackendError, Listing, Liveness, Registry, RegistryOptions, Revision, WatchStream,
};
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
/// no lease): what a foreign program writing junk the registry can see looks like.
pub async fn put_foreign(url: &str, key: &str, value: &[u8]) {
    let mut conn = raw(url).await;
    let _: () = redis::Script::new(
        r"
        redis.call('SET', KEYS[1], ARGV[1])
        redis.call('ZADD', 'rpc-registry:index', 0, KEYS[1])
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

/// A Redis backend that counts the watch errors asking a service's watch for a relist (a
/// client's watch of the overrides records is left out: the bounds are per service watch).
pub struct Counting {
    inner: Arc<dyn Backend>,
    history_lost: Arc<AtomicUsize>,
}

impl Counting {
    /// `inner`, its relists counted in `history_lost`.
    pub fn new(inner: Arc<dyn Backend>, history_lost: Arc<AtomicUsize>) -> Self {
        Counting {
            inner,
            history_lost,
        }
    }
}

#[async_trait]
impl Backend for Counting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.inner.put(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        self.inner.list(prefix).await
    }
    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        let count = Arc::clone(&self.history_lost);
        let counted = !prefix.contains("~overrides");
        self.inner
            .watch(prefix, after)
            .inspect(move |item| {
                if let (true, Err(BackendError::HistoryLost { reason })) = (counted, item) {
                    count.fetch_add(1, Ordering::Relaxed);
                    println!("history lost: {reason}");
                }
            })
            .boxed()
    }
    async fn keep_alive(&self, keys: &[String], ttl: Duration) -> Result<Liveness, BackendError> {
        self.inner.keep_alive(keys, ttl).await
    }
    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        self.inner.ttl_remaining(key).await
    }
    async fn ttls(
        &self,
        prefix: &str,
    ) -> Result<std::collections::HashMap<String, Duration>, BackendError> {
        self.inner.ttls(prefix).await
    }
    async fn health(&self) -> Result<(), BackendError> {
        self.inner.health().await
    }
    async fn admin_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        self.inner.admin_write(key, value).await
    }
    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.close(keys).await
    }
}

/// The Redis at `url` (any address form), every client's relists counted in `history_lost`.
pub fn counting_target(url: &str, history_lost: &Arc<AtomicUsize>) -> Target {
    let history_lost = Arc::clone(history_lost);
    Target::new(url, move |options| {
        let history_lost = Arc::clone(&history_lost);
        async move {
            let inner = RedisBackend::connect(&options).await?;
            Ok(Counting::new(Arc::new(inner), history_lost))
        }
    })
}

/// A registry client whose watches' relists are counted.
pub async fn counted(url: &str, options: RegistryOptions) -> (Registry, Arc<AtomicUsize>) {
    let history_lost = Arc::new(AtomicUsize::new(0));
    let registry = counting_target(url, &history_lost).registry(options).await;
    (registry, history_lost)
}

/// Calls per command Redis ran so far (`INFO commandstats`, commands run by scripts
/// included).
pub async fn command_calls(url: &str) -> BTreeMap<String, u64> {
    let mut conn = raw(url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}
