//! The ZooKeeper session: the liveness handle of every node this client registers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use registry_core::backend::with_timeout;
use registry_core::{BackendError, KeySpace};
use tracing::{debug, info, warn};
use zookeeper_client as zk;

use crate::tls::Tls;
use crate::NAME;

/// What a session is opened with.
pub(crate) struct Settings {
    pub(crate) address: String,
    pub(crate) auth: Option<Vec<u8>>,
    pub(crate) session_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) keys: KeySpace,
    /// TLS to the servers' secure client ports (`rpc.registryConfig.tls.*`).
    pub(crate) tls: Option<Tls>,
}

/// The current session (replaced when it expires) and what outlives it.
pub(crate) struct Session {
    pub(crate) settings: Settings,
    client: ArcSwap<zk::Client>,
    /// Serialises session replacement.
    reconnecting: tokio::sync::Mutex<()>,
    /// Set when a new session replaced an expired one: the next keep-alive reports the loss.
    replaced: AtomicBool,
}

/// Maps a client error to the core's kinds. Call it on the `zk::Error` itself, before wrapping.
pub(crate) fn classify(error: zk::Error, operation: impl FnOnce() -> String) -> BackendError {
    match error {
        zk::Error::AuthFailed => BackendError::Auth {
            backend: NAME,
            source: Box::new(error),
        },
        zk::Error::NoAuth => BackendError::Denied {
            backend: NAME,
            operation: operation(),
            source: Box::new(error),
        },
        other => BackendError::request(NAME, operation(), other),
    }
}

fn connector(s: &Settings) -> zk::Connector {
    // Detached: dropping the client without `close` (a crash, a forgotten shutdown) leaves the
    // session to expire after its timeout, as a killed process would, instead of removing
    // the nodes at once. A graceful shutdown deletes them explicitly.
    let mut connector = zk::Client::connector()
        .with_session_timeout(s.session_timeout)
        .with_connection_timeout(s.timeout)
        .with_detached();
    if let Some(auth) = &s.auth {
        connector = connector.with_auth("digest", auth);
    }
    if let Some(tls) = &s.tls {
        connector = connector.with_tls(tls.options.clone());
    }
    connector
}

/// Connects `connector` to the servers of `s`: every one over TLS when it is configured.
async fn connect(connector: zk::Connector, s: &Settings) -> Result<zk::Client, zk::Error> {
    if s.tls.is_some() {
        connector.secure_connect(&s.address).await
    } else {
        connector.connect(&s.address).await
    }
}

async fn open(s: &Settings) -> Result<zk::Client, BackendError> {
    match tokio::time::timeout(s.timeout, connect(connector(s), s)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(zk::Error::AuthFailed)) => Err(BackendError::Auth {
            backend: NAME,
            source: Box::new(zk::Error::AuthFailed),
        }),
        Ok(Err(e)) => Err(BackendError::Connect {
            backend: NAME,
            address: s.address.clone(),
            source: Box::new(e),
        }),
        Err(_) => Err(BackendError::Connect {
            backend: NAME,
            address: s.address.clone(),
            source: format!("no session within {:?}", s.timeout).into(),
        }),
    }
}

/// Re-establishes `session`, which the client library declared expired.
///
/// zookeeper-client gives a session up when it reaches no server for 1.4 times its timeout,
/// but only the ensemble's leader expires sessions, and a leader elected after a quorum loss
/// gives every session a fresh timeout: after an outage of a majority, the session and its
/// ephemeral nodes are still there. A new session would find every node held by the old one
/// until that expires, then see them all deleted (every consumer with them) before putting
/// them back; taking the old session back keeps them.
///
/// `Ok(Some)`: the session is back. `Ok(None)`: the ensemble answered and does not hold it
/// any more (open a new one). `Err`: no server answered (no quorum yet): try again later.
async fn resume(
    s: &Settings,
    session: &zk::SessionInfo,
) -> Result<Option<zk::Client>, BackendError> {
    // One pass over the servers: while there is no quorum the caller's retries pace the
    // attempts, so the session is taken back soon after a quorum is, before the new leader
    // expires it (one session timeout after it took over).
    let attempt = connect(
        connector(s)
            .with_session(session.clone())
            .with_fail_eagerly(),
        s,
    );
    match tokio::time::timeout(s.timeout, attempt).await {
        Ok(Ok(client)) => {
            // Read from where the session was left (the tradition after re-establishing).
            match with_timeout(NAME, s.timeout, || "sync".into(), client.sync("/")).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "sync after taking the session back failed"),
                Err(e) => debug!(error = %e, "sync after taking the session back failed"),
            }
            Ok(Some(client))
        }
        Ok(Err(zk::Error::Timeout | zk::Error::ConnectionLoss | zk::Error::NoHosts)) | Err(_) => {
            Err(BackendError::Connect {
                backend: NAME,
                address: s.address.clone(),
                source: format!(
                    "no ZooKeeper server took session {} back (no quorum?)",
                    session.id()
                )
                .into(),
            })
        }
        Ok(Err(e)) => {
            debug!(session = %session.id(), error = %e, "the ensemble does not hold the session any more");
            Ok(None)
        }
    }
}

impl Session {
    /// Opens the first session.
    pub(crate) async fn open(settings: Settings) -> Result<Self, BackendError> {
        let client = open(&settings).await?;
        let negotiated = client.session_timeout();
        if negotiated != settings.session_timeout {
            warn!(
                requested = ?settings.session_timeout,
                ?negotiated,
                "ZooKeeper negotiated another session timeout than rpc.registryConfig.ttl (a server \
                 allows 2 to 20 times its tickTime): the nodes of a dead process go after the negotiated one"
            );
        }
        Ok(Session {
            settings,
            client: ArcSwap::from_pointee(client),
            reconnecting: tokio::sync::Mutex::new(()),
            replaced: AtomicBool::new(false),
        })
    }

    /// The session as it is, even when it ended (for a graceful shutdown).
    pub(crate) fn current(&self) -> Arc<zk::Client> {
        self.client.load_full()
    }

    /// The current session, replaced by a new one when it expired or was closed.
    pub(crate) async fn get(&self) -> Result<Arc<zk::Client>, BackendError> {
        let current = self.client.load_full();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        let _guard = self.reconnecting.lock().await;
        let current = self.client.load_full();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        if current.state() == zk::SessionState::Expired {
            if let Some(resumed) = resume(&self.settings, current.session()).await? {
                let resumed = Arc::new(resumed);
                info!(
                    session = %resumed.session_id(),
                    "the ZooKeeper client gave up a session the ensemble still holds: taken back, its nodes stay"
                );
                self.client.store(Arc::clone(&resumed));
                return Ok(resumed);
            }
        }
        let fresh = Arc::new(open(&self.settings).await?);
        info!(state = ?current.state(), "ZooKeeper session ended, a new one replaces it (nodes will be put again)");
        self.client.store(Arc::clone(&fresh));
        self.replaced.store(true, Ordering::Release);
        Ok(fresh)
    }

    /// True once after a new session replaced an expired one.
    pub(crate) fn take_replaced(&self) -> bool {
        self.replaced.swap(false, Ordering::AcqRel)
    }

    /// Runs one request under the timeout, classifying its error.
    pub(crate) async fn run<T, F>(
        &self,
        operation: impl Fn() -> String,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = Result<T, zk::Error>>,
    {
        self.raw(&operation, call)
            .await?
            .map_err(|e| classify(e, operation))
    }

    /// Runs one request under the timeout, leaving its `zk::Error` for the caller to classify.
    pub(crate) async fn raw<T, F>(
        &self,
        operation: impl Fn() -> String,
        call: F,
    ) -> Result<Result<T, zk::Error>, BackendError>
    where
        F: std::future::Future<Output = Result<T, zk::Error>>,
    {
        with_timeout(NAME, self.settings.timeout, operation, call).await
    }
}
