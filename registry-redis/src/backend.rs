//! The [`Backend`] implementation: one script call per operation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;
use registry_core::backend::with_timeout;
use registry_core::{
    Backend, BackendError, ConnectOptions, KeyValue, Listing, Liveness, Revision, WatchStream,
};
use tracing::{debug, warn};

use crate::address;
use crate::error::{classify, request};
use crate::scripts::{meta_keys, report_rebase, revision, Scripts, DEADLINES, INDEX, MAX_CHANGES};
use crate::watch;
use crate::NAME;

/// The Redis [`Backend`]. See the [crate docs](crate).
pub struct RedisBackend {
    client: Client,
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    timeout: Duration,
    /// What this client's watches share (reaping, warnings).
    watches: Arc<watch::Shared>,
    address: String,
    /// This client's id in `rpc-registry:owners`.
    owner: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A connection failure as [`BackendError::Connect`], refused credentials as they are.
fn connect_error(error: BackendError, address: &str) -> BackendError {
    match error {
        auth @ BackendError::Auth { .. } => auth,
        other => BackendError::Connect {
            backend: NAME,
            address: address.to_owned(),
            source: Box::new(other),
        },
    }
}

impl RedisBackend {
    /// Connects to the server `options.address` names (default
    /// [`DEFAULT_ADDRESS`](crate::DEFAULT_ADDRESS)) and checks that it answers and accepts the
    /// credentials.
    ///
    /// # Errors
    /// [`BackendError::Config`] for an unusable address, [`BackendError::Auth`] for refused
    /// credentials, [`BackendError::Connect`] when the server cannot be reached.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, BackendError> {
        let address = address::url(&options.address);
        let client = address::client(&address, options)?;
        let timeout = options.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connecting = client.get_connection_manager_with_config(config);
        let mut conn = with_timeout(NAME, timeout, || "connect".into(), connecting)
            .await
            .map_err(|e| connect_error(e, &address))?
            .map_err(|e| connect_error(classify(e, String::new), &address))?;
        // Credentials are checked by the first command when the server requires them.
        let _: String = request(
            timeout,
            || "PING".into(),
            redis::cmd("PING").query_async(&mut conn),
        )
        .await
        .map_err(|e| connect_error(e, &address))?;
        let reap_every =
            (options.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(3));
        Ok(RedisBackend {
            client,
            conn,
            scripts: Arc::new(Scripts::new()),
            timeout,
            watches: Arc::new(watch::Shared::new(reap_every)),
            address,
            owner: format!("{:016x}", rand::random::<u64>()),
        })
    }

    /// Runs one request under the timeout.
    async fn run<T, F>(&self, operation: impl Fn() -> String, call: F) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        request(self.timeout, operation, call).await
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.put.prepare_invoke();
        meta_keys(&mut invocation);
        invocation
            .key(key)
            .arg(value)
            .arg(ttl.as_millis() as u64)
            .arg(MAX_CHANGES)
            .arg(&self.owner);
        let (rebased, status, holder): (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) = self
            .run(|| format!("put {key}"), invocation.invoke_async(&mut conn))
            .await?;
        report_rebase(&rebased);
        if status == b"held" {
            return Err(BackendError::Held {
                backend: NAME,
                key: key.to_owned(),
                holder: format!("client {}", String::from_utf8_lossy(&holder)),
            });
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.delete.prepare_invoke();
        meta_keys(&mut invocation);
        invocation.key(key).arg(MAX_CHANGES).arg(&self.owner);
        let (rebased, _): (Vec<Vec<u8>>, i64) = self
            .run(
                || format!("delete {key}"),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        report_rebase(&rebased);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.list.prepare_invoke();
        meta_keys(&mut invocation);
        invocation.arg(prefix);
        let reply: Vec<Vec<u8>> = self
            .run(
                || format!("list {prefix}"),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        let mut items = reply.into_iter();
        let revision = items.next().map_or(0, |r| revision(&r));
        let mut entries = Vec::new();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            match String::from_utf8(key) {
                Ok(key) => entries.push(KeyValue { key, value }),
                Err(_) => warn!("skipping a Redis key that is not UTF-8"),
            }
        }
        Ok(Listing { entries, revision })
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        watch::watch(
            watch::Context {
                client: self.client.clone(),
                conn: self.conn.clone(),
                scripts: Arc::clone(&self.scripts),
                shared: Arc::clone(&self.watches),
                prefix: prefix.to_owned(),
                timeout: self.timeout,
            },
            after,
        )
    }

    async fn keep_alive(&self, keys: &[String], ttl: Duration) -> Result<Liveness, BackendError> {
        if keys.is_empty() {
            return Ok(Liveness::Alive {
                missing: Vec::new(),
            });
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.keep_alive.prepare_invoke();
        meta_keys(&mut invocation);
        for key in keys {
            invocation.key(key.as_str());
        }
        invocation
            .arg(ttl.as_millis() as u64)
            .arg(MAX_CHANGES)
            .arg(&self.owner);
        let (rebased, missing): (Vec<Vec<u8>>, Vec<String>) = self
            .run(
                || format!("keep-alive of {} nodes", keys.len()),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        report_rebase(&rebased);
        if !missing.is_empty() {
            debug!(
                missing = missing.len(),
                "nodes lost by the store, putting them back"
            );
        }
        Ok(Liveness::Alive { missing })
    }

    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.ttl.prepare_invoke();
        invocation.key(DEADLINES).arg(key);
        let left: i64 = self
            .run(|| format!("ttl {key}"), invocation.invoke_async(&mut conn))
            .await?;
        Ok(u64::try_from(left).ok().map(Duration::from_millis))
    }

    /// One script call for the whole prefix (the deadlines of the indexed nodes under it).
    async fn ttls(&self, prefix: &str) -> Result<HashMap<String, Duration>, BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.ttls.prepare_invoke();
        invocation.key(INDEX).key(DEADLINES).arg(prefix);
        let pairs: Vec<(String, u64)> = self
            .run(
                || format!("ttls {prefix}"),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        Ok(pairs
            .into_iter()
            .map(|(key, ms)| (key, Duration::from_millis(ms)))
            .collect())
    }

    async fn health(&self) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .run(|| "PING".into(), redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.delete.prepare_invoke();
        meta_keys(&mut invocation);
        for key in keys {
            invocation.key(key.as_str());
        }
        invocation.arg(MAX_CHANGES).arg(&self.owner);
        let (rebased, _): (Vec<Vec<u8>>, i64) = self
            .run(
                || format!("delete {} nodes", keys.len()),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        report_rebase(&rebased);
        Ok(())
    }
}
