//! What a store backend implements: a small key-value contract with liveness and a change feed.
//!
//! Everything else (the set of nodes this process registered, heartbeat scheduling, re-registering
//! lost nodes, the consumer cache, listeners, graceful shutdown) lives once in
//! [`Registry`](crate::Registry) and works the same for every backend.
//!
//! The contract:
//! - [`put`](Backend::put) writes a node *with liveness*: the key disappears on its own when this
//!   client stops keeping it alive (an etcd lease, a ZooKeeper ephemeral node, a Redis expiry).
//!   If the liveness handle was lost (lease expired, session expired), `put` creates a new one.
//! - **Ownership.** A key is *held* by the client whose liveness handle it is bound to. `put`
//!   never takes over a key held by another client's live handle: it fails with
//!   [`BackendError::Held`] and the core retries (with backoff, and at once when a watch sees
//!   the key go), so two registrants of one address never delete each other's node in a loop:
//!   the first one keeps it, the second takes over when the first is gone. A key without
//!   liveness (written by a tool) is taken over. [`delete`](Backend::delete) and
//!   [`close`](Backend::close) remove only keys this client holds.
//! - [`keep_alive`](Backend::keep_alive) renews the liveness of this client's keys and reports
//!   whether it was lost, or which keys the store no longer holds; the core then puts them again.
//! - [`list`](Backend::list) reads a prefix (the key root, or one service's directory) together
//!   with a [`Revision`] and
//!   [`watch`](Backend::watch) streams the changes *after* that revision, so nothing changed
//!   between the list and the watch is missed.
//! - [`close`](Backend::close) removes this client's keys in as few requests as the store allows
//!   (etcd revokes the lease) and releases the connection.
//!
//! Registry data lives exactly two levels below the root (`root/service/host:port`, see
//! [`KeySpace`](crate::KeySpace)): a backend whose store is a tree (ZooKeeper) reads no deeper,
//! whatever else was written there.
//!
//! A backend never retries on its own behalf beyond what one request needs; the core decides when
//! to retry, with jittered backoff.
//!
//! # Writing a backend
//!
//! A backend holds only what is specific to its store. The scaffolding is here, once:
//! [`watch_stream`] turns "open a watch" and "next batch of events" ([`WatchSource`]) into a
//! [`WatchStream`] (errors as the last item, a batch delivered event by event), and
//! [`with_timeout`] bounds one request, turning a timeout into [`BackendError::Timeout`].

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

mod error;
mod junk;
mod lazy;
mod options;
mod request;
mod stream;
mod tls;

pub use error::{BackendError, BoxError};
pub use junk::Junk;
pub use lazy::LazyBackend;
pub use options::ConnectOptions;
pub use request::with_timeout;
pub use stream::{watch_stream, WatchSource};
pub use tls::{SecretBytes, TlsFiles, TlsPem};

/// A position in the store's change history (etcd revision, ZooKeeper zxid, a Redis stream
/// sequence, the memory store's counter). Revisions increase with every change.
pub type Revision = u64;

/// A raw entry read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key (path), e.g. `/rpc/users:1.0/10.0.0.1:8080`.
    pub key: String,
    /// The stored value (JSON of a [`ServiceMetaInfo`](crate::ServiceMetaInfo) when well-formed).
    pub value: Vec<u8>,
}

/// The result of [`Backend::list`]: every entry under a prefix as of `revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Entries under the prefix.
    pub entries: Vec<KeyValue>,
    /// The revision the listing reflects; watch from here.
    pub revision: Revision,
}

/// One change seen by [`Backend::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or its value changed.
    Put {
        /// The entry as written.
        kv: KeyValue,
        /// Revision of the change.
        revision: Revision,
    },
    /// A key was deleted or expired.
    Delete {
        /// Full key.
        key: String,
        /// Revision of the change.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { revision, .. } | WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// The stream returned by [`Backend::watch`].
///
/// An `Err` item is not the end: [`BackendError::HistoryLost`] asks for a relist, any other
/// error (and the end of the stream) asks for a new watch from the last revision seen.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, BackendError>>;

/// The answer of [`Backend::keep_alive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The liveness handle is alive. `missing` lists the keys (among those passed in) the store
    /// no longer holds, when the backend can tell cheaply; the core puts them again.
    Alive {
        /// Keys to put again.
        missing: Vec<String>,
    },
    /// The liveness handle (lease, session) is gone: every key must be put again.
    Lost,
}

/// A store backend. See the [module docs](self) for the contract.
///
/// Implementations are used as `Arc<dyn Backend>`, chosen at run time by name.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short name, e.g. `etcd`.
    fn name(&self) -> &'static str;

    /// Writes `key` with liveness bound to this client, creating the liveness handle (lease,
    /// session) when there is none or it was lost. `ttl` is the time the key outlives its owner.
    ///
    /// # Errors
    /// [`BackendError::Held`] when another client's live handle holds `key` (it is left as it
    /// is); the store's errors otherwise.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError>;

    /// Deletes `key` when this client holds it (or nobody does). Deleting a missing key, or one
    /// held by another client (left as it is), is not an error.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// Lists every entry under `prefix`, with the revision the listing reflects.
    async fn list(&self, prefix: &str) -> Result<Listing, BackendError>;

    /// Streams the changes under `prefix` with a revision greater than `after`.
    ///
    /// The stream yields [`BackendError::HistoryLost`] when the changes after `after` are no
    /// longer available; the caller lists again.
    fn watch(&self, prefix: &str, after: Revision) -> WatchStream;

    /// Renews the liveness of this client's `keys` (the ones it put and still wants).
    async fn keep_alive(&self, keys: &[String], ttl: Duration) -> Result<Liveness, BackendError>;

    /// Time left before `key` expires, where the store can tell.
    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        let _ = key;
        Ok(None)
    }

    /// Time left before each key under `prefix` expires, where the store can tell (keys
    /// without one are left out), for tools that show many nodes at once. The default lists
    /// the prefix and asks [`ttl_remaining`](Self::ttl_remaining) per key; a backend whose
    /// keys share a liveness handle answers with one request per handle (etcd: per lease).
    async fn ttls(&self, prefix: &str) -> Result<HashMap<String, Duration>, BackendError> {
        let listing = self.list(prefix).await?;
        let mut ttls = HashMap::with_capacity(listing.entries.len());
        for kv in listing.entries {
            if let Some(left) = self.ttl_remaining(&kv.key).await? {
                ttls.insert(kv.key, left);
            }
        }
        Ok(ttls)
    }

    /// Writes `key` as an administrator (or, with `None`, deletes it): without liveness and
    /// whatever client holds it. For a service's overrides record (see
    /// [`crate::overrides`]) and for tools; nodes are written with [`put`](Self::put). A
    /// store that cannot answers [`BackendError::Config`].
    async fn admin_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        let _ = (key, value);
        Err(BackendError::Config {
            backend: self.name(),
            reason: "this backend does not support administrators' writes".into(),
        })
    }

    /// Checks that the store answers.
    async fn health(&self) -> Result<(), BackendError>;

    /// Graceful shutdown: removes those of `keys` this client holds in as few requests as the
    /// store allows, then releases the connection. Called once, by
    /// [`Registry::shutdown`](crate::Registry::shutdown).
    async fn close(&self, keys: &[String]) -> Result<(), BackendError>;
}
