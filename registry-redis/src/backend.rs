//! The [`Backend`] implementation: one script call per operation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use registry_core::{
    Backend, BackendError, ConnectOptions, KeyValue, Listing, Liveness, Revision, WatchStream,
};
use tracing::warn;

use crate::address;
use crate::error::{connect_error, silent_tls_peer};
use crate::lease::{Lease, PutOutcome};
use crate::link::Link;
use crate::locator::Locator;
use crate::scripts::{
    lease_set, meta_keys, report_rebase, revision, Scripts, INDEX, LEASES, MAX_CHANGES, OWNERS,
};
use crate::tracking::Tracker;
use crate::watch;
use crate::NAME;

/// The Redis [`Backend`]. See the [crate docs](crate).
pub struct RedisBackend {
    link: Arc<Link>,
    scripts: Arc<Scripts>,
    timeout: Duration,
    /// What this client's watches share (reaping, warnings, where listings were read).
    watches: Arc<watch::Shared>,
    /// This client's lease.
    lease: Lease,
    /// The TTL of this client's lease (the grace leases get on a new history).
    ttl: Duration,
    address: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &registry_core::redact_address(&self.address))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a put's script answered.
enum Put {
    Written,
    Held(String),
    Expired,
}

impl RedisBackend {
    /// Connects to the server `options.address` names (default
    /// [`DEFAULT_ADDRESS`](crate::DEFAULT_ADDRESS)), or to the primary its Sentinels name
    /// (`redis+sentinel://...`, see the [crate docs](crate#addresses)), and checks that it
    /// answers and accepts the credentials.
    ///
    /// # Errors
    /// [`BackendError::Config`] for an unusable address, [`BackendError::Auth`] for refused
    /// credentials, [`BackendError::Connect`] when the server (or no primary) cannot be
    /// reached.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, BackendError> {
        let address = address::url(&options.address);
        let parsed = address::parse(&address, options)?;
        let locator = Arc::new(Locator::new(parsed).map_err(|e| BackendError::Config {
            backend: NAME,
            reason: format!("`{}`: {e}", registry_core::redact_address(&address)),
        })?);
        let timeout = options.timeout;
        let link = Arc::new(Link::new(Arc::clone(&locator), timeout));
        // Credentials are checked by the first command when the server requires them.
        let (_, replid): (String, _) = link
            .run_traced(
                || "PING".into(),
                |mut conn, _| async move { redis::cmd("PING").query_async(&mut conn).await },
            )
            .await
            .map_err(|e| {
                let error = connect_error(e, &registry_core::redact_address(&address));
                if locator.uses_tls() {
                    silent_tls_peer(error, timeout)
                } else {
                    error
                }
            })?;
        let reap_every =
            (options.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(3));
        if locator.follows_sentinels() {
            let every = (options.ttl / 3).clamp(Duration::from_millis(250), Duration::from_secs(2));
            tokio::spawn(crate::locator::follow_sentinels(
                Arc::downgrade(&locator),
                every,
                timeout,
            ));
        }
        let lease = Lease::new(Tracker::new(locator, timeout), options.ttl);
        lease.first_server(replid);
        Ok(RedisBackend {
            link,
            scripts: Arc::new(Scripts::new()),
            timeout,
            watches: Arc::new(watch::Shared::new(reap_every, options.ttl)),
            lease,
            ttl: options.ttl,
            address,
        })
    }

    async fn put_on(
        &self,
        lease: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Put, BackendError> {
        let mut invocation = self.scripts.put.prepare_invoke();
        meta_keys(&mut invocation);
        invocation
            .key(lease_set(lease))
            .key(key)
            .arg(value)
            .arg(ttl.as_millis() as u64)
            .arg(MAX_CHANGES)
            .arg(lease)
            .arg(self.lease.client());
        let (rebased, status, holder): (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) =
            self.link
                .run(
                    || format!("put {key}"),
                    |mut conn, replid| async move {
                        invocation.arg(&*replid).invoke_async(&mut conn).await
                    },
                )
                .await?;
        report_rebase(&rebased);
        Ok(match status.as_slice() {
            b"held" => Put::Held(String::from_utf8_lossy(&holder).into_owned()),
            b"expired" => Put::Expired,
            _ => Put::Written,
        })
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let mut lease = self.lease.put_starts(key);
        let mut outcome = self.put_on(&lease, key, value, ttl).await;
        if matches!(outcome, Ok(Put::Expired)) {
            // Once, on a new lease (which cannot be expired yet).
            self.lease.put_done(key, &lease, PutOutcome::NotWritten);
            self.lease.expired(&lease);
            lease = self.lease.put_starts(key);
            outcome = self.put_on(&lease, key, value, ttl).await;
        }
        let written = matches!(outcome, Ok(Put::Written));
        self.lease.put_done(
            key,
            &lease,
            if written {
                PutOutcome::Written
            } else {
                PutOutcome::NotWritten
            },
        );
        match outcome? {
            Put::Written => Ok(()),
            Put::Held(holder) => Err(BackendError::Held {
                backend: NAME,
                key: key.to_owned(),
                holder: format!("lease {holder}"),
            }),
            Put::Expired => Err(BackendError::request(
                NAME,
                format!("put {key}"),
                std::io::Error::other(
                    "the new lease expired at once (is the server clock jumping?)",
                ),
            )),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let key = key.to_owned();
        self.lease.forget([&key]);
        self.lease
            .delete(
                &self.link,
                &self.scripts,
                &self.lease.id(),
                std::slice::from_ref(&key),
                false,
            )
            .await
    }

    async fn admin_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        let mut invocation = self.scripts.admin.prepare_invoke();
        meta_keys(&mut invocation);
        invocation.key(key).arg(MAX_CHANGES);
        match value {
            Some(value) => invocation.arg("1").arg(value),
            None => invocation.arg("0"),
        };
        let (rebased,): (Vec<Vec<u8>>,) = self
            .link
            .run(
                || format!("administrator's write of {key}"),
                |mut conn, _| async move { invocation.invoke_async(&mut conn).await },
            )
            .await?;
        report_rebase(&rebased);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        let mut invocation = self.scripts.list.prepare_invoke();
        meta_keys(&mut invocation);
        invocation.arg(prefix).arg(self.ttl.as_millis() as u64);
        let (reply, replid): (Vec<Vec<u8>>, _) =
            self.link
                .run_traced(
                    || format!("list {prefix}"),
                    |mut conn, replid| async move {
                        invocation.arg(&*replid).invoke_async(&mut conn).await
                    },
                )
                .await?;
        self.watches.listed(prefix, replid);
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
                link: Arc::clone(&self.link),
                scripts: Arc::clone(&self.scripts),
                shared: Arc::clone(&self.watches),
                prefix: prefix.to_owned(),
                timeout: self.timeout,
            },
            after,
        )
    }

    /// One short script call whatever the number of nodes (see the [crate docs](crate)).
    async fn keep_alive(&self, keys: &[String], ttl: Duration) -> Result<Liveness, BackendError> {
        if keys.is_empty() {
            return Ok(Liveness::Alive {
                missing: Vec::new(),
            });
        }
        self.lease
            .keep_alive(&self.link, &self.scripts, keys, ttl)
            .await
    }

    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        let mut invocation = self.scripts.ttl.prepare_invoke();
        invocation.key(OWNERS).key(LEASES).arg(key);
        let left: i64 = self
            .link
            .run(
                || format!("ttl {key}"),
                |mut conn, _| async move { invocation.invoke_async(&mut conn).await },
            )
            .await?;
        Ok(u64::try_from(left).ok().map(Duration::from_millis))
    }

    /// One script call for the whole prefix (one deadline read per lease).
    async fn ttls(&self, prefix: &str) -> Result<HashMap<String, Duration>, BackendError> {
        let mut invocation = self.scripts.ttls.prepare_invoke();
        invocation.key(INDEX).key(OWNERS).key(LEASES).arg(prefix);
        let pairs: Vec<(String, u64)> = self
            .link
            .run(
                || format!("ttls {prefix}"),
                |mut conn, _| async move { invocation.invoke_async(&mut conn).await },
            )
            .await?;
        Ok(pairs
            .into_iter()
            .map(|(key, ms)| (key, Duration::from_millis(ms)))
            .collect())
    }

    async fn health(&self) -> Result<(), BackendError> {
        let _: String = self
            .link
            .run(
                || "PING".into(),
                |mut conn, _| async move { redis::cmd("PING").query_async(&mut conn).await },
            )
            .await?;
        Ok(())
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.lease.forget(keys);
        self.lease
            .delete(&self.link, &self.scripts, &self.lease.id(), keys, true)
            .await
    }
}
