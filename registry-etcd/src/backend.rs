//! The [`Backend`] implementation: puts and deletes under ownership, the rest delegated.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, ConnectOptions as EtcdOptions, DeleteOptions, GetOptions, Txn, TxnOp,
};
use registry_core::{
    Backend, BackendError, ConnectOptions, Listing, Liveness, Revision, WatchStream,
};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::endpoints::{attempt_timeout, parse_endpoints, Endpoints};
use crate::error::{classify, is_transport, lease_not_found};
use crate::lease::Lease;
use crate::oversized::UndecodableStarts;
use crate::ownership::{put_owned, PutError};
use crate::tls::{closed_at_handshake, tls_options};
use crate::{listing, watch, EtcdSettings, NAME};

/// The shortest TTL etcd can honour: leases count whole seconds.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The `etcd` [`Backend`]. See the [crate docs](crate).
pub struct EtcdBackend {
    endpoints: Arc<Endpoints>,
    lease: Lease,
    settings: EtcdSettings,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.endpoints.urls)
            .finish_non_exhaustive()
    }
}

impl EtcdBackend {
    /// Connects to the endpoints in `options.address` (comma-separated; default
    /// [`DEFAULT_ADDRESS`](crate::DEFAULT_ADDRESS)) with the credentials given, and checks
    /// that one answers.
    ///
    /// # Errors
    /// [`BackendError::Auth`] for wrong credentials, [`BackendError::Connect`] when no
    /// endpoint answers, [`BackendError::Config`] for a TTL below [`MIN_TTL`].
    pub async fn connect(options: &ConnectOptions) -> Result<Self, BackendError> {
        Self::connect_with(options, EtcdSettings::default()).await
    }

    /// [`connect`](Self::connect) with [`EtcdSettings`] (decode limit, listing page size).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(
        options: &ConnectOptions,
        settings: EtcdSettings,
    ) -> Result<Self, BackendError> {
        if options.ttl < MIN_TTL {
            return Err(BackendError::Config {
                backend: NAME,
                reason: format!(
                    "rpc.registryConfig.ttl must be at least {MIN_TTL:?} on etcd (leases count whole seconds), got {:?}",
                    options.ttl
                ),
            });
        }
        let pem = options
            .tls
            .as_ref()
            .map(|t| t.read(NAME, "rpc.registryConfig.tls"))
            .transpose()?;
        let urls = parse_endpoints(&options.address, pem.is_some());
        let config_error = |reason: String| BackendError::Config {
            backend: NAME,
            reason,
        };
        if urls.is_empty() {
            return Err(config_error(format!(
                "no endpoint in `{}` (expected http://host:port or https://host:port,...)",
                registry_core::redact_address(&options.address)
            )));
        }
        if let Some(url) = urls
            .iter()
            .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            return Err(config_error(format!(
                "`{}`: only http:// and https:// endpoints are supported",
                registry_core::redact_address(url)
            )));
        }
        let secure = urls.iter().filter(|u| u.starts_with("https://")).count();
        if secure != 0 && secure != urls.len() {
            return Err(config_error(format!(
                "`{}` mixes http:// and https:// endpoints",
                registry_core::redact_address(&options.address)
            )));
        }
        if pem.is_some() && secure == 0 {
            return Err(config_error(format!(
                "TLS is configured (rpc.registryConfig.tls.*) but `{}` names plain http:// \
                 endpoints: use https://",
                registry_core::redact_address(&options.address)
            )));
        }
        let attempt = attempt_timeout(urls.len(), options.timeout, options.ttl);
        let mut etcd = EtcdOptions::new()
            .with_timeout(attempt)
            .with_connect_timeout(attempt)
            .with_require_leader(true);
        if secure != 0 {
            etcd = etcd.with_tls(tls_options(pem.unwrap_or_default(), attempt));
        }
        if let (Some(user), Some(password)) = (&options.username, &options.password) {
            etcd = etcd.with_user(user.clone(), password.clone());
        }
        let endpoints = Arc::new(Endpoints {
            clients: Mutex::new(vec![None; urls.len()]),
            urls,
            options: etcd,
            current: AtomicUsize::new(0),
            max_decoding: settings.max_decoding_message_size(),
            undecodable: UndecodableStarts::default(),
            attempt,
        });
        let backend = Self {
            lease: Lease::new(Arc::clone(&endpoints)),
            endpoints,
            settings,
        };
        // One request now, so wrong credentials or no reachable member fail at startup.
        backend.health().await.map_err(|e| {
            if secure != 0 {
                closed_at_handshake(e)
            } else {
                e
            }
        })?;
        Ok(backend)
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints.urls
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let lease = self.lease.ensure(ttl).await?;
            let error = match put_owned(&self.endpoints, key, value, lease).await {
                Ok(()) => return Ok(()),
                Err(PutError::Held(holder)) => {
                    return Err(BackendError::Held {
                        backend: NAME,
                        key: key.to_owned(),
                        holder: format!("lease {holder:x}"),
                    })
                }
                Err(PutError::Backend(e)) => return Err(e),
                Err(PutError::Changed) if attempts < 4 => continue,
                Err(PutError::Changed) => {
                    return Err(BackendError::request(
                        NAME,
                        format!("put {key}"),
                        "the key kept changing under us",
                    ))
                }
                Err(PutError::Etcd(e)) => e,
            };
            match error {
                e if lease_not_found(&e) && attempts < 3 => {
                    warn!(lease, "etcd lease is gone, granting a new one");
                    self.lease.forget(lease, true).await;
                }
                e if is_transport(&e) && attempts < self.endpoints.urls.len() + 1 => {
                    debug!(error = %e, "put failed on this endpoint, trying the next");
                }
                e => return Err(classify(e, || format!("put {key}"), None)),
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        // Only a key bound to this client's lease is ours to delete.
        let Some(lease) = self.lease.current().await else {
            return Ok(());
        };
        let key = key.to_owned();
        self.endpoints
            .call(
                || format!("delete {key}"),
                |c| {
                    let mut c = c.kv_client();
                    let txn = Txn::new()
                        .when([Compare::lease(key.as_str(), CompareOp::Equal, lease)])
                        .and_then([TxnOp::delete(key.as_str(), None::<DeleteOptions>)]);
                    async move { c.txn(txn).await }
                },
            )
            .await
            .map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        listing::list(&self.endpoints, self.settings.list_page_keys(), prefix).await
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        watch::watch(Arc::clone(&self.endpoints), prefix, after)
    }

    async fn keep_alive(&self, keys: &[String], _ttl: Duration) -> Result<Liveness, BackendError> {
        self.lease.renew(keys).await
    }

    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        let key = key.to_owned();
        let response = self
            .endpoints
            .call(
                || format!("get {key}"),
                |c| {
                    let (mut c, key) = (c.kv_client(), key.clone());
                    // Only the lease is wanted: leave the value (up to etcd's request limit) out.
                    async move { c.get(key, Some(GetOptions::new().with_keys_only())).await }
                },
            )
            .await?;
        let Some(lease) = response
            .kvs()
            .first()
            .map(|kv| kv.lease())
            .filter(|l| *l != 0)
        else {
            return Ok(None);
        };
        let ttl = self
            .endpoints
            .call(
                || format!("lease time-to-live {lease}"),
                |c| {
                    let mut c = c.lease_client();
                    async move { c.time_to_live(lease, None).await }
                },
            )
            .await?;
        Ok((ttl.ttl() >= 0).then(|| Duration::from_secs(ttl.ttl() as u64)))
    }

    /// One keys-only range read of `prefix`, then one `LeaseTimeToLive` per distinct lease (see
    /// `listing::ttls`).
    async fn ttls(&self, prefix: &str) -> Result<HashMap<String, Duration>, BackendError> {
        listing::ttls(&self.endpoints, prefix).await
    }

    async fn admin_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        let (key, value) = (key.to_owned(), value.map(<[u8]>::to_vec));
        self.endpoints
            .call(
                || format!("admin write {key}"),
                |c| {
                    let (mut c, key, value) = (c.kv_client(), key.clone(), value.clone());
                    async move {
                        match value {
                            Some(value) => c.put(key, value, None).await.map(|_| ()),
                            None => c.delete(key, None).await.map(|_| ()),
                        }
                    }
                },
            )
            .await
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.endpoints
            .call(
                || "status".into(),
                |c| {
                    let mut c = c.maintenance_client();
                    async move { c.status().await }
                },
            )
            .await
            .map(|_| ())
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        if let Some(lease) = self.lease.revoke().await? {
            debug!(lease, nodes = keys.len(), "revoked etcd lease");
        }
        Ok(())
    }
}
