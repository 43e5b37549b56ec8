//! The members of the cluster: one client per endpoint and a current one.
//!
//! `etcd-client` keeps sending requests to a dead member and lets streams on it stop silently,
//! so a request that fails with a transport error moves to the next endpoint and is retried
//! there (each endpoint once); streams (watches, keep-alives) are created on the current one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions as EtcdOptions};
use registry_core::BackendError;
use tokio::sync::Mutex;
use tracing::debug;

use crate::error::{classify, is_transport};
use crate::oversized::UndecodableStarts;
use crate::{DEFAULT_ADDRESS, NAME};

/// The endpoints and their clients.
pub(crate) struct Endpoints {
    pub(crate) urls: Vec<String>,
    pub(crate) options: EtcdOptions,
    pub(crate) clients: Mutex<Vec<Option<Client>>>,
    pub(crate) current: AtomicUsize,
    /// Most bytes of one listing page or watch response the client decodes.
    pub(crate) max_decoding: usize,
    /// Watch starts whose first response could not be decoded.
    pub(crate) undecodable: UndecodableStarts,
    /// How long one attempt on one member may take before the next member is tried: the
    /// request timeout with one endpoint, at most a quarter of the TTL with several (a hung
    /// member must be left well before the nodes' leases run out).
    pub(crate) attempt: Duration,
}

/// The limit of one attempt on one member (see [`Endpoints::attempt`]).
pub(crate) fn attempt_timeout(endpoints: usize, timeout: Duration, ttl: Duration) -> Duration {
    if endpoints > 1 {
        timeout.min(ttl / 4).max(Duration::from_millis(100))
    } else {
        timeout
    }
}

impl Endpoints {
    /// One service client of the current endpoint (connecting it if needed), taken by `pick`
    /// (`Client::kv_client`, ...), and the endpoint's index.
    pub(crate) async fn client<C>(
        &self,
        pick: impl FnOnce(&Client) -> C,
    ) -> Result<(usize, C), BackendError> {
        let index = self.current.load(Ordering::Relaxed) % self.urls.len();
        self.with_client(index, pick).await.map(|c| (index, c))
    }

    /// Runs `f` on the client of endpoint `index` (connecting it if needed). A whole
    /// `etcd_client::Client` holds a client per etcd service, each with its own channel
    /// handle: a request clones only the one it uses.
    async fn with_client<R>(
        &self,
        index: usize,
        f: impl FnOnce(&Client) -> R,
    ) -> Result<R, BackendError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = &clients[index] {
            return Ok(f(client));
        }
        let url = &self.urls[index];
        let connecting = Client::connect([url.as_str()], Some(self.options.clone()));
        let client = match tokio::time::timeout(self.attempt, connecting).await {
            Ok(result) => {
                result.map_err(|e| classify(e, || format!("connect {url}"), Some(url)))?
            }
            Err(_) => return Err(self.hung(index, "connect")),
        };
        Ok(f(clients[index].insert(client)))
    }

    /// Moves off `index` after a transport failure (unless another caller already did).
    pub(crate) fn rotate_from(&self, index: usize) {
        if self.urls.len() > 1 {
            let _ = self.current.compare_exchange(
                index,
                (index + 1) % self.urls.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            debug!(from = %self.urls[index], "moving to the next etcd endpoint");
        }
    }

    /// Runs `op` on the current endpoint, moving to the next one on transport errors, each
    /// endpoint at most once. `op` takes the endpoint's client for a moment: it clones the
    /// service client it needs (`kv_client()`, `lease_client()`, ...) into the request it
    /// returns.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: impl Fn() -> String,
        op: F,
    ) -> Result<T, BackendError>
    where
        F: Fn(&Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.urls.len() {
            let index = self.current.load(Ordering::Relaxed) % self.urls.len();
            let request = match self.with_client(index, &op).await {
                Ok(request) => request,
                Err(e) => {
                    self.rotate();
                    last = Some(e);
                    continue;
                }
            };
            match tokio::time::timeout(self.attempt, request).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if is_transport(&e) => {
                    self.rotate_from(index);
                    last = Some(classify(e, &what, Some(&self.urls[index])));
                }
                Ok(Err(e)) => return Err(classify(e, &what, None)),
                // A member that takes the request and never answers (paused, partitioned).
                Err(_) => {
                    self.rotate_from(index);
                    last = Some(self.hung(index, &what()));
                }
            }
        }
        Err(last.unwrap_or(BackendError::Closed { backend: NAME }))
    }

    /// The error for a member that did not answer within [`Self::attempt`].
    pub(crate) fn hung(&self, index: usize, what: &str) -> BackendError {
        BackendError::Connect {
            backend: NAME,
            address: self.urls[index].clone(),
            source: format!("{what}: no answer within {:?}", self.attempt).into(),
        }
    }

    /// Moves off the current endpoint (a stream on it failed to open).
    pub(crate) fn rotate(&self) {
        self.rotate_from(self.current.load(Ordering::Relaxed) % self.urls.len());
    }
}

/// Splits `address` into endpoint URLs (`http://` added when missing, `https://` when `tls`);
/// empty when it names none (`",,,"`).
pub(crate) fn parse_endpoints(address: &str, tls: bool) -> Vec<String> {
    let address = if address.trim().is_empty() {
        DEFAULT_ADDRESS.trim_start_matches("http://")
    } else {
        address
    };
    let scheme = if tls { "https" } else { "http" };
    address
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_owned()
            } else {
                format!("{scheme}://{s}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_a_default() {
        assert_eq!(parse_endpoints("", false), vec![DEFAULT_ADDRESS.to_owned()]);
        assert_eq!(
            parse_endpoints("", true),
            vec![DEFAULT_ADDRESS.replace("http:", "https:")]
        );
        assert_eq!(
            parse_endpoints("127.0.0.1:1, http://h:2 ,", false),
            vec!["http://127.0.0.1:1".to_owned(), "http://h:2".to_owned()]
        );
        assert_eq!(
            parse_endpoints("127.0.0.1:1", true),
            vec!["https://127.0.0.1:1".to_owned()]
        );
        assert!(parse_endpoints(",,,", false).is_empty());
    }

    #[test]
    fn a_hung_member_is_left_within_a_quarter_of_the_ttl() {
        let (timeout, ttl) = (Duration::from_secs(10), Duration::from_secs(6));
        assert_eq!(attempt_timeout(1, timeout, ttl), timeout);
        assert_eq!(
            attempt_timeout(3, timeout, ttl),
            Duration::from_millis(1500)
        );
        assert_eq!(
            attempt_timeout(3, Duration::from_secs(1), ttl),
            Duration::from_secs(1)
        );
    }
}
