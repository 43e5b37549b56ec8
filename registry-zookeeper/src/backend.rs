//! The [`Backend`] implementation over one session.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use registry_core::{
    Backend, BackendError, ConnectOptions, Listing, Liveness, Revision, WatchStream,
};
use tracing::debug;

use crate::listing::snapshot;
use crate::own::OwnWrites;
use crate::path::{node_depth, path};
use crate::session::{Session, Settings};
use crate::tls::Tls;
use crate::{DEFAULT_ADDRESS, NAME};

/// The ZooKeeper [`Backend`]. See the [crate docs](crate).
pub struct ZkBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) session: Session,
    /// Per watched prefix, the keys the caller was told about (by a listing or the watch):
    /// what a new watch compares the store with, since ZooKeeper cannot replay history.
    known: Mutex<HashMap<String, HashSet<String>>>,
    /// The nodes this client wrote, so that its watches need not read them back.
    pub(crate) own: OwnWrites,
}

impl Inner {
    pub(crate) fn known(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for ZkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings = &self.inner.session.settings;
        f.debug_struct("ZkBackend")
            .field("address", &settings.address)
            .field("session_timeout", &settings.session_timeout)
            .finish_non_exhaustive()
    }
}

impl ZkBackend {
    /// Opens a session with the ensemble `options.address` names (comma-separated
    /// `host:port`, optionally followed by a chroot; default [`DEFAULT_ADDRESS`]). The session
    /// timeout is `options.ttl`; `username`/`password` are sent as `digest` credentials.
    /// With `options.tls` every server is reached over TLS (its `secureClientPort`): the
    /// server's certificate is checked against the CA file and the address's host, and the
    /// client certificate, when configured, is presented (`ssl.clientAuth=need`).
    ///
    /// # Errors
    /// [`BackendError::Auth`] for refused credentials, [`BackendError::Connect`] when no
    /// session could be opened within `options.timeout`, [`BackendError::Config`] when the
    /// chroot does not exist or the TLS settings are unusable (no CA file, a server name,
    /// unreadable files, a plain `tcp://` server), [`BackendError::Tls`] when a server's TLS
    /// handshake fails (untrusted or expired certificate, client certificate refused, a plain
    /// port).
    pub async fn connect(options: &ConnectOptions) -> Result<Self, BackendError> {
        let address = match options.address.trim() {
            "" => DEFAULT_ADDRESS.to_owned(),
            a => a.trim_start_matches("zk://").to_owned(),
        };
        let tls = match &options.tls {
            None => None,
            Some(files) => Some(Tls::new(&files.read(NAME, "rpc.registryConfig.tls")?)?),
        };
        if let Some(tls) = &tls {
            // The client library retries a failed handshake until its deadline and then says
            // only that no server answered: a handshake of our own names the cause at once.
            crate::tls::check_servers(tls, &address, options.timeout).await?;
        }
        let auth = match (&options.username, &options.password) {
            (Some(user), Some(password)) if !user.is_empty() => {
                Some(format!("{user}:{password}").into_bytes())
            }
            _ => None,
        };
        let session = Session::open(Settings {
            address,
            auth,
            session_timeout: options.ttl,
            timeout: options.timeout,
            keys: options.keys(),
            tls,
        })
        .await?;
        // Some servers only refuse wrong credentials at the first request; a chroot that does
        // not exist would fail every later request.
        let client = session.current();
        let top = session
            .run(|| "check /".into(), client.check_stat("/"))
            .await?;
        if top.is_none() {
            return Err(BackendError::Config {
                backend: NAME,
                reason: format!(
                    "the chroot of `{}` does not exist (create it first)",
                    session.settings.address
                ),
            });
        }
        Ok(ZkBackend {
            inner: Arc::new(Inner {
                session,
                known: Mutex::default(),
                own: OwnWrites::default(),
            }),
        })
    }
}

#[async_trait]
impl Backend for ZkBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), BackendError> {
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        let session = &self.inner.session;
        let client = session.get().await?;
        let depth = node_depth(&session.settings.keys, prefix);
        let snap = session
            .run(
                || format!("list {prefix}"),
                snapshot(&client, prefix, depth),
            )
            .await?;
        snap.junk
            .report(prefix, "znodes that are not registry nodes");
        let keys = snap.entries.iter().map(|(kv, _)| kv.key.clone()).collect();
        self.inner.known().insert(prefix.to_owned(), keys);
        Ok(Listing {
            entries: snap.entries.into_iter().map(|(kv, _)| kv).collect(),
            revision: snap.revision,
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        crate::watch::watch(Arc::clone(&self.inner), prefix, after)
    }

    async fn keep_alive(&self, keys: &[String], _ttl: Duration) -> Result<Liveness, BackendError> {
        let session = &self.inner.session;
        let client = session.get().await?;
        if session.take_replaced() {
            return Ok(Liveness::Lost);
        }
        if keys.is_empty() {
            return Ok(Liveness::Alive {
                missing: Vec::new(),
            });
        }
        // One request: the ephemerals this session owns.
        let mine: HashSet<String> = session
            .run(
                || "list this session's nodes".into(),
                client.list_ephemerals("/"),
            )
            .await?
            .into_iter()
            .collect();
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| !mine.contains(path(k)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            debug!(
                missing = missing.len(),
                "nodes missing from the session, putting them back"
            );
        }
        Ok(Liveness::Alive { missing })
    }

    /// Nothing: liveness is the owner's session, not a per-node timer.
    async fn ttls(&self, _prefix: &str) -> Result<HashMap<String, Duration>, BackendError> {
        Ok(HashMap::new())
    }

    async fn admin_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        self.inner.admin_write(key, value).await
    }

    async fn health(&self) -> Result<(), BackendError> {
        let session = &self.inner.session;
        let client = session.get().await?;
        session
            .run(|| "check /".into(), client.check_stat("/"))
            .await?;
        Ok(())
    }

    /// Deletes this session's nodes among `keys`: one `multi` (all-or-nothing), and when that
    /// fails (one node already gone, say), one delete per node, so every node still held is
    /// removed. Reports the nodes it could not remove (they go when the session expires).
    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.close(keys).await
    }
}
