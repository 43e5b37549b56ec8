//! ZooKeeper backend for `registry-core`: ephemeral nodes in a session, persistent recursive
//! watches.
//!
//! # Layout and liveness
//!
//! A node is an **ephemeral** znode at its key (`/rpc/users:1.0/10.0.0.7:8080`, data: the
//! node's JSON) under a **container** znode per service, so `zkCli.sh get` shows readable
//! nodes and empty service directories are cleaned up by the server. The session is the
//! liveness handle: its timeout is the TTL (the server clamps it to 2–20 × its `tickTime`),
//! the client library pings for it, and when it expires ZooKeeper removes every node of this
//! process at once. A heartbeat costs one request whatever the node count: `getEphemerals`
//! lists this session's nodes, and the ones missing (deleted behind our back) are put back.
//! An expired session is replaced by a new one and reported as lost, so the core puts every
//! node again.
//!
//! # Watching
//!
//! ZooKeeper cannot replay history, so a watch works the other way round from etcd: it adds a
//! persistent recursive watch on the prefix first, then reads the prefix (revision: the
//! highest `pzxid`/`mzxid` in it). If something changed after the revision the caller listed,
//! the stream first delivers those changes itself: nodes changed since (by their `mzxid`) as
//! puts, and deletions found by comparing with the keys this client last told the caller
//! about for that prefix (kept per watched prefix: keys only). Every later change arrives
//! through the watch. Events carry no data: a created or changed node is read, a deleted one
//! reported with the last revision seen. After a disconnection the server may have dropped
//! events (ZOOKEEPER-4698), so reconnecting asks for a relist
//! ([`BackendError::HistoryLost`]), as does an expired session.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::future::{join_all, BoxFuture};
use futures::stream::{self, StreamExt};
use registry_core::{
    Backend, BackendError, ConnectOptions, KeyValue, Listing, Liveness, Revision, WatchEvent,
    WatchStream,
};
use tracing::{debug, info, warn};
use zookeeper_client as zk;

const NAME: &str = "zookeeper";
/// The address used when none is configured.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2181";

/// The ZooKeeper [`Backend`].
pub struct ZkBackend {
    inner: Arc<Inner>,
}

struct Settings {
    address: String,
    auth: Option<Vec<u8>>,
    session_timeout: Duration,
    timeout: Duration,
}

struct Inner {
    settings: Settings,
    timeout: Duration,
    client: ArcSwap<zk::Client>,
    /// Serialises session replacement.
    reconnecting: tokio::sync::Mutex<()>,
    /// Set when a new session replaced an expired one: the next keep-alive reports the loss.
    replaced: AtomicBool,
    /// Per watched prefix, the keys the caller was told about (by a listing or the watch):
    /// what a new watch compares the store with, since ZooKeeper cannot replay history.
    known: std::sync::Mutex<HashMap<String, HashSet<String>>>,
}

impl std::fmt::Debug for ZkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkBackend")
            .field("address", &self.inner.settings.address)
            .field("session_timeout", &self.inner.settings.session_timeout)
            .finish_non_exhaustive()
    }
}

fn classify(error: zk::Error, operation: impl FnOnce() -> String) -> BackendError {
    match error {
        zk::Error::AuthFailed | zk::Error::NoAuth => BackendError::Auth {
            backend: NAME,
            source: Box::new(error),
        },
        other => BackendError::request(NAME, operation(), other),
    }
}

/// The znode path of a key or prefix (no trailing slash).
fn path(key: &str) -> &str {
    let trimmed = key.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

fn parent(key: &str) -> Option<&str> {
    let p = path(key);
    match p.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&p[..i]),
    }
}

async fn open_session(s: &Settings) -> Result<zk::Client, BackendError> {
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
    match tokio::time::timeout(s.timeout, connector.connect(&s.address)).await {
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

impl Inner {
    /// The current session, replaced by a new one when it expired or was closed.
    async fn session(&self) -> Result<Arc<zk::Client>, BackendError> {
        let current = self.client.load_full();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        let _guard = self.reconnecting.lock().await;
        let current = self.client.load_full();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        let fresh = Arc::new(open_session(&self.settings).await?);
        info!(state = ?current.state(), "ZooKeeper session ended, a new one replaces it (nodes will be put again)");
        self.client.store(Arc::clone(&fresh));
        self.replaced.store(true, Ordering::Release);
        Ok(fresh)
    }

    async fn run<T, F>(&self, operation: impl Fn() -> String, call: F) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = Result<T, zk::Error>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e, operation)),
            Err(_) => Err(BackendError::Timeout {
                backend: NAME,
                operation: operation(),
                timeout: self.timeout,
            }),
        }
    }
}

impl ZkBackend {
    /// Opens a session with the ensemble `options.address` names (comma-separated
    /// `host:port`, optionally followed by a chroot; default [`DEFAULT_ADDRESS`]). The session
    /// timeout is `options.ttl`; `username`/`password` are sent as `digest` credentials.
    ///
    /// # Errors
    /// [`BackendError::Auth`] for refused credentials, [`BackendError::Connect`] when no
    /// session could be opened within `options.timeout`.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, BackendError> {
        let address = match options.address.trim() {
            "" => DEFAULT_ADDRESS.to_owned(),
            a => a.trim_start_matches("zk://").to_owned(),
        };
        let auth = match (&options.username, &options.password) {
            (Some(user), Some(password)) if !user.is_empty() => {
                Some(format!("{user}:{password}").into_bytes())
            }
            _ => None,
        };
        let or = |d: Duration, default: u64| {
            if d.is_zero() {
                Duration::from_secs(default)
            } else {
                d
            }
        };
        let settings = Settings {
            address,
            auth,
            session_timeout: or(options.ttl, 30),
            timeout: or(options.timeout, 10),
        };
        let client = open_session(&settings).await?;
        let inner = Inner {
            timeout: settings.timeout,
            settings,
            client: ArcSwap::from_pointee(client),
            reconnecting: tokio::sync::Mutex::new(()),
            replaced: AtomicBool::new(false),
            known: std::sync::Mutex::default(),
        };
        // Some servers only refuse wrong credentials at the first request.
        let client = inner.client.load_full();
        inner
            .run(|| "check /".into(), client.check_stat("/"))
            .await?;
        Ok(ZkBackend {
            inner: Arc::new(inner),
        })
    }
}

/// Every node under `prefix` and the highest zxid seen in its subtree.
fn collect<'a>(
    client: &'a zk::Client,
    node: String,
    out: &'a std::sync::Mutex<Collected>,
) -> BoxFuture<'a, Result<(), zk::Error>> {
    Box::pin(async move {
        let (children, stat) = match client.get_children(&node).await {
            Ok(v) => v,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(e),
        };
        bump(out, stat.pzxid.max(stat.mzxid));
        let base = if node == "/" { String::new() } else { node };
        let reads = children.into_iter().map(|child| {
            let child_path = format!("{base}/{child}");
            async move {
                match client.get_data(&child_path).await {
                    Ok((data, stat)) => {
                        bump(out, stat.mzxid.max(stat.pzxid));
                        if stat.num_children > 0 {
                            collect(client, child_path.clone(), out).await?;
                        }
                        if !data.is_empty() {
                            let mut guard = out
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            guard.0.push((
                                KeyValue {
                                    key: child_path,
                                    value: data,
                                },
                                stat.mzxid.max(0) as Revision,
                            ));
                        }
                        Ok(())
                    }
                    Err(zk::Error::NoNode) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        });
        for result in join_all(reads).await {
            result?;
        }
        Ok(())
    })
}

/// Entries found (with the zxid of their last change) and the highest zxid seen.
type Collected = (Vec<(KeyValue, Revision)>, i64);

fn bump(out: &std::sync::Mutex<Collected>, zxid: i64) {
    let mut guard = out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.1 = guard.1.max(zxid);
}

/// A listing with the zxid of each entry's last change.
struct Snapshot {
    entries: Vec<(KeyValue, Revision)>,
    revision: Revision,
}

async fn snapshot(client: &zk::Client, prefix: &str) -> Result<Snapshot, zk::Error> {
    let out = std::sync::Mutex::new((Vec::new(), 0i64));
    collect(client, path(prefix).to_owned(), &out).await?;
    let (mut entries, revision) = out
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    entries.retain(|(kv, _)| kv.key.starts_with(prefix) || !prefix.ends_with('/'));
    entries.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(Snapshot {
        entries,
        revision: revision.max(0) as Revision,
    })
}

impl Inner {
    /// Records the keys under `prefix` the caller now knows (after a listing or events).
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Backend for ZkBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let client = inner.session().await?;
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let container = zk::CreateMode::Container.with_acls(zk::Acls::anyone_all());
        let node = path(key);
        // The service's directory usually exists: create first, make the directory on NoNode.
        let mut need_dir = false;
        for _ in 0..4 {
            if need_dir {
                if let Some(dir) = parent(key) {
                    match client.mkdir(dir, &container).await {
                        Ok(()) | Err(zk::Error::NodeExists) => {}
                        Err(e) => return Err(classify(e, || format!("mkdir {dir}"))),
                    }
                }
            }
            match inner
                .run(
                    || format!("create {node}"),
                    client.create(node, value, &ephemeral),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(BackendError::Request { source, .. })
                    if matches!(source.downcast_ref::<zk::Error>(), Some(zk::Error::NoNode)) =>
                {
                    // No directory yet (or the empty container was just removed): make it.
                    need_dir = true;
                    continue;
                }
                Err(BackendError::Request { source, .. })
                    if matches!(
                        source.downcast_ref::<zk::Error>(),
                        Some(zk::Error::NodeExists)
                    ) =>
                {
                    let (_, stat) = match client.get_data(node).await {
                        Ok(v) => v,
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(classify(e, || format!("get {node}"))),
                    };
                    if stat.ephemeral_owner == client.session_id().0 {
                        inner
                            .run(
                                || format!("set {node}"),
                                client.set_data(node, value, Some(stat.version)),
                            )
                            .await?;
                        return Ok(());
                    }
                    // Left by an earlier session of ours (or squatted): take it over.
                    match client.delete(node, Some(stat.version)).await {
                        Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => continue,
                        Err(e) => return Err(classify(e, || format!("delete {node}"))),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(BackendError::request(
            NAME,
            format!("create {node}"),
            "the node kept changing under us",
        ))
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let client = self.inner.session().await?;
        match tokio::time::timeout(self.inner.timeout, client.delete(path(key), None)).await {
            Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => Ok(()),
            Ok(Err(e)) => Err(classify(e, || format!("delete {key}"))),
            Err(_) => Err(BackendError::Timeout {
                backend: NAME,
                operation: format!("delete {key}"),
                timeout: self.inner.timeout,
            }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        let client = self.inner.session().await?;
        let snap = self
            .inner
            .run(|| format!("list {prefix}"), snapshot(&client, prefix))
            .await?;
        let keys = snap.entries.iter().map(|(kv, _)| kv.key.clone()).collect();
        self.inner.known().insert(prefix.to_owned(), keys);
        Ok(Listing {
            entries: snap.entries.into_iter().map(|(kv, _)| kv).collect(),
            revision: snap.revision,
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        let state = WatchState::Start {
            inner: Arc::clone(&self.inner),
            prefix: prefix.to_owned(),
            after,
        };
        stream::unfold(state, next_watch_item).boxed()
    }

    async fn keep_alive(&self, keys: &[String], _ttl: Duration) -> Result<Liveness, BackendError> {
        let inner = &*self.inner;
        let client = inner.session().await?;
        if inner.replaced.swap(false, Ordering::AcqRel) {
            return Ok(Liveness::Lost);
        }
        if keys.is_empty() {
            return Ok(Liveness::Alive {
                missing: Vec::new(),
            });
        }
        // One request: the ephemerals this session owns.
        let mine: std::collections::HashSet<String> = inner
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

    async fn health(&self) -> Result<(), BackendError> {
        let client = self.inner.session().await?;
        self.inner
            .run(|| "check /".into(), client.check_stat("/"))
            .await?;
        Ok(())
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        let client = self.inner.client.load_full();
        if !keys.is_empty() && !client.state().is_terminated() {
            let mut writer = client.new_multi_writer();
            for key in keys {
                if let Err(e) = writer.add_delete(path(key), None) {
                    warn!(key, error = %e, "cannot delete node at shutdown");
                }
            }
            // Closing the session removes whatever this misses.
            if let Err(e) = tokio::time::timeout(self.inner.timeout, writer.commit()).await {
                debug!(error = %e, "graceful delete timed out; the session close removes the nodes");
            }
        }
        Ok(())
    }
}

enum WatchState {
    Start {
        inner: Arc<Inner>,
        prefix: String,
        after: Revision,
    },
    Watching {
        inner: Arc<Inner>,
        client: Arc<zk::Client>,
        watcher: Box<zk::PersistentWatcher>,
        prefix: String,
        last: Revision,
        disconnected: bool,
        /// Catch-up events to deliver before the watch's own.
        pending: VecDeque<WatchEvent>,
    },
    Done,
}

type Item = Result<WatchEvent, BackendError>;

async fn next_watch_item(state: WatchState) -> Option<(Item, WatchState)> {
    let mut state = state;
    loop {
        match state {
            WatchState::Done => return None,
            WatchState::Start {
                inner,
                prefix,
                after,
            } => {
                let client = match inner.session().await {
                    Ok(c) => c,
                    Err(e) => return Some((Err(e), WatchState::Done)),
                };
                let node = path(&prefix).to_owned();
                let watcher = match inner
                    .run(
                        || format!("watch {node}"),
                        client.watch(&node, zk::AddWatchMode::PersistentRecursive),
                    )
                    .await
                {
                    Ok(w) => w,
                    Err(e) => return Some((Err(e), WatchState::Done)),
                };
                // The watch is in place: what changed since the caller's listing is read now
                // and delivered first (deletions against the keys the caller knows).
                let snap = match inner
                    .run(|| format!("list {prefix}"), snapshot(&client, &prefix))
                    .await
                {
                    Ok(snap) => snap,
                    Err(e) => return Some((Err(e), WatchState::Done)),
                };
                let mut pending = VecDeque::new();
                if snap.revision > after + 1 {
                    let Some(known) = inner.known().get(&prefix).cloned() else {
                        let reason = format!("{prefix} changed and this client never listed it");
                        return Some((Err(BackendError::HistoryLost { reason }), WatchState::Done));
                    };
                    let present: HashSet<&str> =
                        snap.entries.iter().map(|(kv, _)| kv.key.as_str()).collect();
                    for key in known.iter().filter(|k| !present.contains(k.as_str())) {
                        pending.push_back(WatchEvent::Delete {
                            key: key.clone(),
                            revision: snap.revision,
                        });
                    }
                    for (kv, revision) in &snap.entries {
                        if *revision > after || !known.contains(&kv.key) {
                            pending.push_back(WatchEvent::Put {
                                kv: kv.clone(),
                                revision: (*revision).max(after + 1),
                            });
                        }
                    }
                    debug!(%prefix, changes = pending.len(), "caught up with changes made before the watch");
                }
                let keys = snap.entries.iter().map(|(kv, _)| kv.key.clone()).collect();
                inner.known().insert(prefix.clone(), keys);
                state = WatchState::Watching {
                    inner,
                    client,
                    watcher: Box::new(watcher),
                    prefix,
                    last: snap.revision.max(after),
                    disconnected: false,
                    pending,
                };
            }
            WatchState::Watching {
                inner,
                client,
                mut watcher,
                prefix,
                mut last,
                mut disconnected,
                mut pending,
            } => {
                if let Some(event) = pending.pop_front() {
                    let next = WatchState::Watching {
                        inner,
                        client,
                        watcher,
                        prefix,
                        last,
                        disconnected,
                        pending,
                    };
                    return Some((Ok(event), next));
                }
                let event = watcher.changed().await;
                use zk::{EventType, SessionState};
                let key = event.path.clone();
                let item = match event.event_type {
                    EventType::Session => match event.session_state {
                        SessionState::Disconnected => {
                            disconnected = true;
                            None
                        }
                        SessionState::SyncConnected | SessionState::ConnectedReadOnly
                            if disconnected =>
                        {
                            // Events during the disconnection may be lost: relist.
                            let reason = "reconnected to ZooKeeper: changes during the disconnection may be lost".to_owned();
                            return Some((
                                Err(BackendError::HistoryLost { reason }),
                                WatchState::Done,
                            ));
                        }
                        state if state.is_terminated() => {
                            // No more events after a terminal state (and `changed` would panic).
                            let reason = format!("ZooKeeper session ended ({state:?})");
                            return Some((
                                Err(BackendError::HistoryLost { reason }),
                                WatchState::Done,
                            ));
                        }
                        _ => None,
                    },
                    _ if !key.starts_with(prefix.as_str()) => None,
                    EventType::NodeDeleted => Some(WatchEvent::Delete {
                        key,
                        revision: last,
                    }),
                    EventType::NodeCreated | EventType::NodeDataChanged => {
                        match client.get_data(&key).await {
                            Ok((data, stat)) if !data.is_empty() => {
                                last = last.max(stat.mzxid.max(0) as Revision);
                                Some(WatchEvent::Put {
                                    kv: KeyValue { key, value: data },
                                    revision: last,
                                })
                            }
                            Ok(_) => None, // a service directory
                            Err(zk::Error::NoNode) => Some(WatchEvent::Delete {
                                key,
                                revision: last,
                            }),
                            Err(e) => {
                                return Some((
                                    Err(classify(e, || "watch read".into())),
                                    WatchState::Done,
                                ))
                            }
                        }
                    }
                    EventType::NodeChildrenChanged => None,
                };
                if let Some(event) = &item {
                    let mut known = inner.known();
                    let keys = known.entry(prefix.clone()).or_default();
                    match event {
                        WatchEvent::Put { kv, .. } => {
                            keys.insert(kv.key.clone());
                        }
                        WatchEvent::Delete { key, .. } => {
                            keys.remove(key);
                        }
                    }
                }
                let next = WatchState::Watching {
                    inner,
                    client,
                    watcher,
                    prefix,
                    last,
                    disconnected,
                    pending,
                };
                match item {
                    Some(event) => return Some((Ok(event), next)),
                    None => state = next,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_keys_and_prefixes() {
        assert_eq!(path("/rpc/"), "/rpc");
        assert_eq!(path("/rpc/a:1.0/h:1"), "/rpc/a:1.0/h:1");
        assert_eq!(path("/"), "/");
        assert_eq!(parent("/rpc/a:1.0/h:1"), Some("/rpc/a:1.0"));
        assert_eq!(parent("/rpc"), None);
    }
}
