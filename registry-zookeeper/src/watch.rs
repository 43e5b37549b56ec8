//! A watch on a prefix: a persistent recursive watch, with the catch-up ZooKeeper needs.
//!
//! ZooKeeper cannot replay history, so a watch adds its persistent recursive watch first, then
//! reads the prefix; what changed after the caller's revision is delivered first (nodes
//! changed since, by their `mzxid`, as puts; deletions by comparing with the keys this client
//! last told the caller about). Events carry no data: a created or changed node is read, a
//! deleted one reported with the last revision seen. Events for znodes that are not node keys
//! (directories, junk at any depth) are dropped without a read.

use std::collections::HashSet;
use std::sync::Arc;

use registry_core::backend::{watch_stream, WatchSource};
use registry_core::{BackendError, KeyValue, Revision, WatchEvent, WatchStream};
use tracing::debug;
use zookeeper_client as zk;

use crate::backend::Inner;
use crate::listing::snapshot;
use crate::path::{is_node_key, node_depth, path};
use crate::session::classify;

/// The stream of changes under `prefix` after `after`.
pub(crate) fn watch(inner: Arc<Inner>, prefix: &str, after: Revision) -> WatchStream {
    let depth = node_depth(&inner.session.settings.keys, prefix);
    watch_stream(start(inner, prefix.to_owned(), depth, after))
}

/// An open persistent watch.
struct Watching {
    inner: Arc<Inner>,
    client: Arc<zk::Client>,
    watcher: zk::PersistentWatcher,
    prefix: String,
    depth: usize,
    last: Revision,
    disconnected: bool,
    /// Catch-up events, delivered as the first batch.
    catch_up: Vec<WatchEvent>,
}

impl WatchSource for Watching {
    async fn next_batch(&mut self) -> Result<Option<Vec<WatchEvent>>, BackendError> {
        if !self.catch_up.is_empty() {
            return Ok(Some(std::mem::take(&mut self.catch_up)));
        }
        Ok(Some(self.next_event().await?.into_iter().collect()))
    }
}

async fn start(
    inner: Arc<Inner>,
    prefix: String,
    depth: usize,
    after: Revision,
) -> Result<Watching, BackendError> {
    let session = &inner.session;
    let client = session.get().await?;
    let node = path(&prefix).to_owned();
    let watcher = session
        .run(
            || format!("watch {node}"),
            client.watch(&node, zk::AddWatchMode::PersistentRecursive),
        )
        .await?;
    // The watch is in place: what changed since the caller's listing is read now and
    // delivered first (deletions against the keys the caller knows).
    let snap = session
        .run(
            || format!("list {prefix}"),
            snapshot(&client, &prefix, depth),
        )
        .await?;
    snap.junk
        .report(&prefix, "znodes that are not registry nodes");
    if snap.revision < after {
        // zxids only grow while the ensemble keeps its data: this one restarted empty or was
        // restored from an older snapshot.
        return Err(BackendError::HistoryLost {
            reason: format!(
                "the ZooKeeper zxid under {prefix} went back from {after:#x} to {:#x}: the store lost data",
                snap.revision
            ),
        });
    }
    let mut catch_up = Vec::new();
    if snap.revision > after + 1 {
        let Some(known) = inner.known().get(&prefix).cloned() else {
            return Err(BackendError::HistoryLost {
                reason: format!("{prefix} changed and this client never listed it"),
            });
        };
        let present: HashSet<&str> = snap.entries.iter().map(|(kv, _)| kv.key.as_str()).collect();
        for key in known.iter().filter(|k| !present.contains(k.as_str())) {
            catch_up.push(WatchEvent::Delete {
                key: key.clone(),
                revision: snap.revision,
            });
        }
        // Every catch-up event carries the snapshot's revision: they are delivered in key
        // order, and a cache ignores an event older than the last one it applied.
        for (kv, revision) in &snap.entries {
            if *revision > after || !known.contains(&kv.key) {
                catch_up.push(WatchEvent::Put {
                    kv: kv.clone(),
                    revision: snap.revision,
                });
            }
        }
        debug!(%prefix, changes = catch_up.len(), "caught up with changes made before the watch");
    }
    let keys = snap.entries.iter().map(|(kv, _)| kv.key.clone()).collect();
    inner.known().insert(prefix.clone(), keys);
    Ok(Watching {
        inner,
        client,
        watcher,
        prefix,
        depth,
        last: snap.revision.max(after),
        disconnected: false,
        catch_up,
    })
}

impl Watching {
    /// The next change of a node key, `None` for an event that is not one.
    async fn next_event(&mut self) -> Result<Option<WatchEvent>, BackendError> {
        use zk::{EventType, SessionState};
        let event = self.watcher.changed().await;
        let key = event.path;
        let item = match event.event_type {
            EventType::Session => {
                return match event.session_state {
                    SessionState::Disconnected => {
                        self.disconnected = true;
                        // Deletions may go unseen: no node is known to be held any more.
                        self.inner.own.forget_all();
                        Ok(None)
                    }
                    // Events during the disconnection may be lost (ZOOKEEPER-4698): relist.
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly
                        if self.disconnected =>
                    {
                        Err(BackendError::HistoryLost {
                            reason: "reconnected to ZooKeeper: changes during the disconnection may be lost".into(),
                        })
                    }
                    // No more events after a terminal state (and `changed` would panic).
                    state if state.is_terminated() => Err(BackendError::HistoryLost {
                        reason: format!("ZooKeeper session ended ({state:?})"),
                    }),
                    _ => Ok(None),
                };
            }
            EventType::NodeChildrenChanged => return Ok(None),
            _ if !is_node_key(&self.prefix, self.depth, &key) => return Ok(None),
            EventType::NodeDeleted => {
                // Gone: if this client wrote it, it no longer holds it (see `own`).
                self.inner.own.forget(&key);
                WatchEvent::Delete {
                    key,
                    revision: self.last,
                }
            }
            EventType::NodeCreated | EventType::NodeDataChanged => {
                let seen = i64::try_from(self.last).unwrap_or(i64::MAX);
                if let Some((value, mzxid)) = self.inner.own.written_after(&key, seen).await {
                    // This client's own write: no need to read it back.
                    self.last = self.last.max(mzxid.max(0) as Revision);
                    let item = WatchEvent::Put {
                        kv: KeyValue { key, value },
                        revision: self.last,
                    };
                    self.remember(&item);
                    return Ok(Some(item));
                }
                match self.client.get_data(&key).await {
                    Ok((data, stat)) if !data.is_empty() => {
                        self.last = self.last.max(stat.mzxid.max(0) as Revision);
                        WatchEvent::Put {
                            kv: KeyValue { key, value: data },
                            revision: self.last,
                        }
                    }
                    Ok(_) => return Ok(None),
                    Err(zk::Error::NoNode) => WatchEvent::Delete {
                        key,
                        revision: self.last,
                    },
                    Err(e) => return Err(classify(e, || "watch read".into())),
                }
            }
        };
        self.remember(&item);
        Ok(Some(item))
    }

    /// Records the key of `item` as told to the caller (or gone).
    fn remember(&self, item: &WatchEvent) {
        let mut known = self.inner.known();
        let keys = known.entry(self.prefix.clone()).or_default();
        match item {
            WatchEvent::Put { kv, .. } => {
                keys.insert(kv.key.clone());
            }
            WatchEvent::Delete { key, .. } => {
                keys.remove(key);
            }
        }
    }
}
