//! The members of the cluster: one client per endpoint and a current one.
//!
//! `etcd-client` keeps sending requests to a dead member and lets streams on it stop silently,
//! so a request that fails with a transport error moves to the next endpoint and is retried
//! there (each endpoint once); streams (watches, keep-alives) are created on the current one.

use std::sync::atomic::{AtomicUsize, Ordering};

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
}

impl Endpoints {
    /// A client for the current endpoint (connecting it if needed), and its index.
    pub(crate) async fn client(&self) -> Result<(usize, Client), BackendError> {
        let index = self.current.load(Ordering::Relaxed) % self.urls.len();
        self.client_at(index).await.map(|c| (index, c))
    }

    async fn client_at(&self, index: usize) -> Result<Client, BackendError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = &clients[index] {
            return Ok(client.clone());
        }
        let url = &self.urls[index];
        let client = Client::connect([url.as_str()], Some(self.options.clone()))
            .await
            .map_err(|e| classify(e, || format!("connect {url}"), Some(url)))?;
        clients[index] = Some(client.clone());
        Ok(client)
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
    /// endpoint at most once.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: impl Fn() -> String,
        op: F,
    ) -> Result<T, BackendError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.urls.len() {
            let (index, client) = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    self.rotate();
                    last = Some(e);
                    continue;
                }
            };
            match op(client).await {
                Ok(value) => return Ok(value),
                Err(e) if is_transport(&e) => {
                    self.rotate_from(index);
                    last = Some(classify(e, &what, Some(&self.urls[index])));
                }
                Err(e) => return Err(classify(e, &what, None)),
            }
        }
        Err(last.unwrap_or(BackendError::Closed { backend: NAME }))
    }

    /// Moves off the current endpoint (a stream on it failed to open).
    pub(crate) fn rotate(&self) {
        self.rotate_from(self.current.load(Ordering::Relaxed) % self.urls.len());
    }
}

/// Splits `address` into endpoint URLs (`http://` added when missing); empty when it names
/// none (`",,,"`).
pub(crate) fn parse_endpoints(address: &str) -> Vec<String> {
    let address = if address.trim().is_empty() {
        DEFAULT_ADDRESS
    } else {
        address
    };
    address
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_owned()
            } else {
                format!("http://{s}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_a_default() {
        assert_eq!(parse_endpoints(""), vec![DEFAULT_ADDRESS.to_owned()]);
        assert_eq!(
            parse_endpoints("127.0.0.1:1, http://h:2 ,"),
            vec!["http://127.0.0.1:1".to_owned(), "http://h:2".to_owned()]
        );
        assert!(parse_endpoints(",,,").is_empty());
    }
}
