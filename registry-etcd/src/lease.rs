//! The lease of one client: every node it registers is bound to it.
//!
//! Granted at the first put with the configured TTL. A heartbeat ([`Lease::renew`]) costs one
//! keep-alive on a kept stream plus one `LeaseTimeToLive` read listing the keys still bound to
//! the lease, whatever the node count, and no put: a key deleted behind our back while the
//! lease lives is reported missing at the next beat (and put back by the core), whether or not
//! this process watches that service. A lease that expired (a keep-alive answers TTL 0, or
//! "lease not found") is forgotten and reported lost; the next put grants a new one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions};
use registry_core::{BackendError, Liveness};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::endpoints::Endpoints;
use crate::error::{classify, is_transport};
use crate::NAME;

/// Why one keep-alive round trip failed.
enum KeepAliveFailure {
    /// No member could be asked: the endpoints' own error, returned as is.
    Endpoint(BackendError),
    /// The client failed (classified by the caller).
    Client(etcd_client::Error),
}

/// The keep-alive stream of the current lease.
struct KeepAlive {
    lease: i64,
    endpoint: usize,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

/// The lease of one client and its keep-alive stream.
pub(crate) struct Lease {
    endpoints: Arc<Endpoints>,
    id: Mutex<Option<i64>>,
    keep_alive: Mutex<Option<KeepAlive>>,
    /// Set when a put found the lease gone and granted a new one: the other nodes of the old
    /// lease are gone too, so the next keep-alive reports the liveness lost.
    replaced: AtomicBool,
}

impl Lease {
    pub(crate) fn new(endpoints: Arc<Endpoints>) -> Self {
        Self {
            endpoints,
            id: Mutex::new(None),
            keep_alive: Mutex::new(None),
            replaced: AtomicBool::new(false),
        }
    }

    /// The lease, when one is granted.
    pub(crate) async fn current(&self) -> Option<i64> {
        *self.id.lock().await
    }

    /// The lease, granted with `ttl` when there is none.
    pub(crate) async fn ensure(&self, ttl: Duration) -> Result<i64, BackendError> {
        let mut lease = self.id.lock().await;
        if let Some(id) = *lease {
            return Ok(id);
        }
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let granted = self
            .endpoints
            .call(
                || "lease grant".into(),
                |c| {
                    let mut c = c.lease_client();
                    async move { c.grant(seconds, None).await }
                },
            )
            .await?;
        info!(
            lease = granted.id(),
            ttl = granted.ttl(),
            "granted etcd lease"
        );
        *lease = Some(granted.id());
        Ok(granted.id())
    }

    /// Forgets lease `id` (it expired); with `replaced`, the next [`renew`](Self::renew)
    /// reports the liveness lost.
    pub(crate) async fn forget(&self, id: i64, replaced: bool) {
        let mut lease = self.id.lock().await;
        if *lease == Some(id) {
            *lease = None;
        }
        let mut keep_alive = self.keep_alive.lock().await;
        if keep_alive.as_ref().is_some_and(|k| k.lease == id) {
            *keep_alive = None;
        }
        if replaced {
            self.replaced.store(true, Ordering::Release);
        }
    }

    /// One heartbeat: keeps the lease alive and tells which of `keys` are no longer bound to
    /// it.
    pub(crate) async fn renew(&self, keys: &[String]) -> Result<Liveness, BackendError> {
        if self.replaced.swap(false, Ordering::AcqRel) {
            // Nodes written under the lost lease must be written again under the new one.
            return Ok(Liveness::Lost);
        }
        let Some(lease) = self.current().await else {
            // Nothing was written with a lease yet: every node must be put.
            return Ok(if keys.is_empty() {
                Liveness::Alive {
                    missing: Vec::new(),
                }
            } else {
                Liveness::Lost
            });
        };
        let mut last_error = None;
        // Try on up to two streams: the kept one, then a fresh one on the next endpoint.
        for _ in 0..2 {
            match self.keep_alive_once(lease).await {
                Ok(ttl) if ttl > 0 => {
                    return Ok(Liveness::Alive {
                        missing: self.missing(lease, keys).await?,
                    })
                }
                Ok(_) => {
                    warn!(lease, "etcd lease expired; nodes will be registered again");
                    self.forget(lease, false).await;
                    return Ok(Liveness::Lost);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(KeepAliveFailure::Endpoint(e)) => e,
            Some(KeepAliveFailure::Client(e)) => {
                classify(e, || format!("keep-alive of lease {lease}"), None)
            }
            None => BackendError::Closed { backend: NAME },
        })
    }

    /// Which of `keys` are not bound to `lease`: one read of the lease's keys.
    async fn missing(&self, lease: i64, keys: &[String]) -> Result<Vec<String>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self
            .endpoints
            .call(
                || format!("keys of lease {lease}"),
                |c| {
                    let mut c = c.lease_client();
                    let options = LeaseTimeToLiveOptions::new().with_keys();
                    async move { c.time_to_live(lease, Some(options)).await }
                },
            )
            .await?;
        let bound: HashSet<&[u8]> = answer.keys().iter().map(Vec::as_slice).collect();
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| !bound.contains(k.as_bytes()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            debug!(
                lease,
                missing = missing.len(),
                "nodes no longer bound to the lease"
            );
        }
        Ok(missing)
    }

    /// One keep-alive round trip on the kept stream; the TTL it answers (0: expired).
    async fn keep_alive_once(&self, lease: i64) -> Result<i64, KeepAliveFailure> {
        let mut guard = self.keep_alive.lock().await;
        // (Creating the stream sends one keep-alive request and consumes its answer itself.)
        let fresh = guard.as_ref().is_none_or(|k| k.lease != lease);
        if fresh {
            let (endpoint, mut client) = self
                .endpoints
                .client(Client::lease_client)
                .await
                .map_err(KeepAliveFailure::Endpoint)?;
            let (keeper, stream) = match client.keep_alive(lease).await {
                Ok(pair) => pair,
                // The client answers an expired lease with this error at stream creation.
                Err(etcd_client::Error::LeaseKeepAliveError(message))
                    if message.contains("lease not found") =>
                {
                    return Ok(0);
                }
                Err(e) => {
                    if is_transport(&e) {
                        self.endpoints.rotate_from(endpoint);
                    }
                    return Err(KeepAliveFailure::Client(e));
                }
            };
            *guard = Some(KeepAlive {
                lease,
                endpoint,
                keeper,
                stream,
            });
        }
        let Some(ka) = guard.as_mut() else {
            return Err(KeepAliveFailure::Client(
                etcd_client::Error::LeaseKeepAliveError("no stream".into()),
            ));
        };
        let round_trip = async {
            ka.keeper.keep_alive().await?;
            match ka.stream.message().await? {
                Some(response) => Ok(response.ttl()),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keep-alive stream closed".into(),
                )),
            }
        };
        // One attempt per member: a hung one is left for the next within a fraction of the
        // TTL (see `Endpoints::attempt`).
        let attempt = self.endpoints.attempt;
        let result = match tokio::time::timeout(attempt, round_trip).await {
            Ok(result) => result,
            Err(_) => Err(etcd_client::Error::LeaseKeepAliveError(format!(
                "no keep-alive answer within {attempt:?}"
            ))),
        };
        if result.is_err() {
            // The stream is broken (or its member is gone): next time, a new one elsewhere.
            let endpoint = ka.endpoint;
            *guard = None;
            self.endpoints.rotate_from(endpoint);
        }
        result.map_err(KeepAliveFailure::Client)
    }

    /// Graceful shutdown: revokes the lease (deleting every key bound to it in one request).
    /// Returns the lease revoked, if any.
    pub(crate) async fn revoke(&self) -> Result<Option<i64>, BackendError> {
        *self.keep_alive.lock().await = None;
        let Some(id) = self.id.lock().await.take() else {
            return Ok(None);
        };
        self.endpoints
            .call(
                || format!("revoke lease {id}"),
                |c| {
                    let mut c = c.lease_client();
                    async move { c.revoke(id).await }
                },
            )
            .await?;
        Ok(Some(id))
    }
}
