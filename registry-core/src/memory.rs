//! The embedded in-memory backend, the default.
//!
//! A [`MemoryStore`] is a small in-process store with the semantics the registry needs from a
//! real one, modelled on etcd: every change gets a revision, keys are bound to *leases* that
//! expire when not kept alive, a bounded history lets a watch resume from a revision (older
//! history is compacted away, and a watch from before it gets
//! [`HistoryLost`](crate::BackendError::HistoryLost)). Each [`MemoryBackend`] is one client with
//! its own lease, so several registries on one store behave like several processes on one etcd.
//!
//! Named stores ([`MemoryStore::named`]) are shared process-wide: a provider and a consumer in
//! one process that both use the `memory` registry meet in the same store.
//!
//! For tests, with the `testing` feature, it can also write and delete keys behind a client's
//! back (`put`, `delete`: junk too), compact its history (`compact`), simulate an outage
//! (`set_down`, `is_down`) and tell what its clients are doing (`watch_count`, `list_count`).
//!
//! # Time
//! Lease deadlines follow Tokio's clock ([`tokio::time::Instant`]), so a test under
//! `tokio::time::pause()` (or `#[tokio::test(start_paused = true)]`) sees leases run out
//! exactly when it advances time, without waiting for it. Nothing reaps in the background:
//! - every operation on the store first expires the leases whose deadline has passed, so no
//!   read ever shows a key whose lease ran out, and a store nobody uses costs nothing;
//! - every open watch also sleeps until the earliest lease deadline and expires the leases
//!   then, so a watcher sees a dead owner's keys go on time even when nobody calls the store.
//!
//! Both read the clock of the runtime that calls (the system clock outside a runtime), and a
//! watch needs a runtime with time enabled (as a [`Registry`](crate::Registry) does). A store
//! follows one clock: do not share one between a paused test runtime and another runtime.
//!
//! # Memory
//! Every key and value once, plus the last [`DEFAULT_HISTORY`] events.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::backend::{
    Backend, BackendError, KeyValue, Listing, Liveness, Revision, WatchEvent, WatchStream,
};

/// Events kept for watches that resume from an older revision.
pub const DEFAULT_HISTORY: usize = 10_000;
/// Events buffered per live watch before it is told to relist.
const WATCH_BUFFER: usize = 16_384;
const NAME: &str = "memory";

/// A lease id.
pub type LeaseId = u64;

struct Stored {
    value: Vec<u8>,
    lease: Option<LeaseId>,
}

/// Why [`MemoryStore::put_owned`] did not write.
enum PutRefused {
    /// The writer's lease does not exist (expired or revoked).
    LeaseGone(LeaseId),
    /// Another live lease holds the key.
    Held(LeaseId),
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

#[derive(Default)]
struct State {
    revision: Revision,
    kv: BTreeMap<String, Stored>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    history: VecDeque<WatchEvent>,
    compacted: Revision,
}

/// An in-process store. See the [module docs](self).
pub struct MemoryStore {
    name: String,
    /// This store, for the watches it hands out (they expire leases on time).
    me: Weak<MemoryStore>,
    state: Mutex<State>,
    lists: AtomicU64,
    history_limit: usize,
    events: broadcast::Sender<Arc<WatchEvent>>,
    down: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A new, empty, unnamed store.
    pub fn new() -> Arc<Self> {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// A new store keeping the last `limit` events for resuming watches.
    pub fn with_history(limit: usize) -> Arc<Self> {
        Self::build(String::new(), limit)
    }

    fn build(name: String, history_limit: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            name,
            me: me.clone(),
            state: Mutex::default(),
            lists: AtomicU64::new(0),
            history_limit: history_limit.max(1),
            events: broadcast::channel(WATCH_BUFFER).0,
            down: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The process-wide store called `name` (created on first use). The `memory` registry
    /// address selects it; an empty address is the store `default`.
    pub fn named(name: &str) -> Arc<Self> {
        static STORES: OnceLock<Mutex<HashMap<String, Arc<MemoryStore>>>> = OnceLock::new();
        let name = if name.is_empty() { "default" } else { name };
        let mut stores = STORES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stores
            .entry(name.to_owned())
            .or_insert_with(|| Self::build(name.to_owned(), DEFAULT_HISTORY))
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, with every lease whose deadline has passed expired first.
    fn current(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        Self::expire_locked(&mut state, &self.events, self.history_limit, Instant::now());
        state
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.current().revision
    }

    /// How many watches are open on this store (streams from [`watch`](Self::watch), hence
    /// from every client's [`Backend::watch`], not yet ended or dropped). A watch ends when the
    /// store goes down, so a test can wait for this to reach 0 to know every client noticed an
    /// outage.
    ///
    /// ```
    /// use registry_core::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = MemoryStore::new();
    /// let watch = store.watch("/rpc/", 0);
    /// assert_eq!(store.watch_count(), 1);
    /// drop(watch);
    /// assert_eq!(store.watch_count(), 0);
    /// # }
    /// ```
    #[cfg(any(test, feature = "testing"))]
    pub fn watch_count(&self) -> usize {
        self.events.receiver_count()
    }

    /// How many listings this store served ([`list`](Self::list) calls, hence every client's
    /// [`Backend::list`]): a test can tell from it that a client listed (again).
    ///
    /// ```
    /// use registry_core::MemoryStore;
    ///
    /// let store = MemoryStore::new();
    /// store.list("/rpc/");
    /// assert_eq!(store.list_count(), 1);
    /// ```
    #[cfg(any(test, feature = "testing"))]
    pub fn list_count(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// Simulates an outage: while down every client request fails and live watches end with
    /// an error. Leases keep running out meanwhile, as they would on a real server.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// Whether the store is down.
    #[cfg(any(test, feature = "testing"))]
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    fn check_up(&self) -> Result<(), BackendError> {
        if *self.down.borrow() {
            Err(BackendError::Connect {
                backend: NAME,
                address: self.name.clone(),
                source: "the memory store is down (simulated outage)".into(),
            })
        } else {
            Ok(())
        }
    }

    /// Grants a lease that expires `ttl` from now unless kept alive.
    pub fn grant(&self, ttl: Duration) -> LeaseId {
        let mut state = self.current();
        state.next_lease += 1;
        let id = state.next_lease;
        state.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: HashSet::new(),
            },
        );
        id
    }

    /// Renews a lease for its TTL; false when it does not exist (expired or revoked).
    pub fn keep_alive(&self, lease: LeaseId) -> bool {
        let mut state = self.current();
        let now = Instant::now();
        match state.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = now + l.ttl;
                true
            }
            None => false,
        }
    }

    /// Time left on a lease; `None` when it does not exist (expired or revoked).
    pub fn lease_remaining(&self, lease: LeaseId) -> Option<Duration> {
        let state = self.current();
        state
            .leases
            .get(&lease)
            .map(|l| l.deadline.saturating_duration_since(Instant::now()))
    }

    /// Revokes a lease, deleting every key bound to it.
    pub fn revoke(&self, lease: LeaseId) {
        let mut state = self.current();
        Self::drop_lease(&mut state, &self.events, self.history_limit, lease);
    }

    /// Writes `key`, bound to `lease` when given. Fails when the lease does not exist.
    #[cfg(any(test, feature = "testing"))]
    pub fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, LeaseId> {
        let mut state = self.current();
        self.put_locked(&mut state, key, value, lease)
    }

    /// Writes `key` bound to `lease` unless another live lease holds it (then returns that
    /// lease): the ownership rule of [`Backend::put`].
    fn put_owned(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<Revision, PutRefused> {
        let mut state = self.current();
        if let Some(holder) = state.kv.get(key).and_then(|s| s.lease) {
            if holder != lease && state.leases.contains_key(&holder) {
                return Err(PutRefused::Held(holder));
            }
        }
        self.put_locked(&mut state, key, value, Some(lease))
            .map_err(PutRefused::LeaseGone)
    }

    fn put_locked(
        &self,
        state: &mut State,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, LeaseId> {
        if let Some(id) = lease {
            match state.leases.get_mut(&id) {
                Some(l) => {
                    l.keys.insert(key.to_owned());
                }
                None => return Err(id),
            }
        }
        let previous = state.kv.insert(
            key.to_owned(),
            Stored {
                value: value.to_vec(),
                lease,
            },
        );
        if let Some(old) = previous
            .and_then(|p| p.lease)
            .filter(|old| Some(*old) != lease)
        {
            if let Some(l) = state.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
        };
        Ok(Self::record(
            state,
            &self.events,
            self.history_limit,
            |revision| WatchEvent::Put { kv, revision },
        ))
    }

    /// Deletes `key` when it is bound to `lease` or to no live lease.
    fn delete_owned(&self, key: &str, lease: Option<LeaseId>) {
        let mut state = self.current();
        let holder = state.kv.get(key).and_then(|s| s.lease);
        let held_by_other =
            holder.is_some_and(|h| Some(h) != lease && state.leases.contains_key(&h));
        if !held_by_other {
            Self::delete_locked(&mut state, &self.events, self.history_limit, key);
        }
    }

    /// Deletes `key`; returns the revision of the delete, or `None` when it did not exist.
    #[cfg(any(test, feature = "testing"))]
    pub fn delete(&self, key: &str) -> Option<Revision> {
        let mut state = self.current();
        Self::delete_locked(&mut state, &self.events, self.history_limit, key)
    }

    /// Every entry under `prefix`, with the current revision.
    pub fn list(&self, prefix: &str) -> Listing {
        self.lists.fetch_add(1, Ordering::Relaxed);
        let state = self.current();
        let entries = state
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.value.clone(),
            })
            .collect();
        Listing {
            entries,
            revision: state.revision,
        }
    }

    /// Forgets the history before `revision` (as etcd's compaction does): watches from before
    /// it fail with `HistoryLost`, a watch from `revision` on still works.
    #[cfg(any(test, feature = "testing"))]
    pub fn compact(&self, revision: Revision) {
        let mut state = self.current();
        while state
            .history
            .front()
            .is_some_and(|e| e.revision() < revision)
        {
            state.history.pop_front();
        }
        let oldest_kept = revision.min(state.revision + 1);
        state.compacted = state.compacted.max(oldest_kept.saturating_sub(1));
    }

    /// Streams the changes under `prefix` after `after`.
    pub fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        if let Err(e) = self.check_up() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let (backlog, rx) = {
            let state = self.current();
            if after < state.compacted {
                let reason = format!(
                    "revision {after} is compacted (history starts after {})",
                    state.compacted
                );
                return futures::stream::once(
                    async move { Err(BackendError::HistoryLost { reason }) },
                )
                .boxed();
            }
            let backlog: Vec<Result<WatchEvent, BackendError>> = state
                .history
                .iter()
                .filter(|e| e.revision() > after && e.key().starts_with(prefix))
                .cloned()
                .map(Ok)
                .collect();
            // Subscribing under the lock: every later event reaches `rx`.
            (backlog, self.events.subscribe())
        };
        let down = self.down.subscribe();
        let prefix = prefix.to_owned();
        let store = self.me.clone();
        let live = futures::stream::unfold(Some((rx, down)), move |channels| {
            let prefix = prefix.clone();
            let store = store.clone();
            async move {
                let (mut rx, mut down) = channels?;
                loop {
                    // Expire leases on time even when nobody calls the store: wake at the
                    // earliest deadline (looked at again after every event, as keep-alives
                    // and new leases move it).
                    let deadline = store.upgrade()?.next_deadline();
                    let lease_runs_out = async {
                        match deadline {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    let received = tokio::select! {
                        biased;
                        _ = down.wait_for(|d| *d) => None,
                        received = rx.recv() => Some(received),
                        () = lease_runs_out => {
                            // The expiry's deletes reach `rx` like any change.
                            drop(store.upgrade()?.current());
                            continue;
                        }
                    };
                    match received {
                        None => {
                            let e = BackendError::Connect {
                                backend: NAME,
                                address: String::new(),
                                source: "the memory store went down (simulated outage)".into(),
                            };
                            return Some((Err(e), None));
                        }
                        Some(Ok(event)) => {
                            if event.revision() > after && event.key().starts_with(&prefix) {
                                let event = WatchEvent::clone(&event);
                                return Some((Ok(event), Some((rx, down))));
                            }
                        }
                        Some(Err(broadcast::error::RecvError::Lagged(n))) => {
                            let reason = format!("watch fell {n} events behind");
                            return Some((Err(BackendError::HistoryLost { reason }), None));
                        }
                        Some(Err(broadcast::error::RecvError::Closed)) => return None,
                    }
                }
            }
        });
        futures::stream::iter(backlog).chain(live).boxed()
    }

    fn record(
        state: &mut State,
        events: &broadcast::Sender<Arc<WatchEvent>>,
        history_limit: usize,
        make: impl FnOnce(Revision) -> WatchEvent,
    ) -> Revision {
        state.revision += 1;
        let event = make(state.revision);
        state.history.push_back(event.clone());
        while state.history.len() > history_limit {
            if let Some(old) = state.history.pop_front() {
                state.compacted = old.revision();
            }
        }
        // No receiver is fine: nobody watches.
        let _ = events.send(Arc::new(event));
        state.revision
    }

    fn delete_locked(
        state: &mut State,
        events: &broadcast::Sender<Arc<WatchEvent>>,
        history_limit: usize,
        key: &str,
    ) -> Option<Revision> {
        let stored = state.kv.remove(key)?;
        if let Some(l) = stored.lease.and_then(|id| state.leases.get_mut(&id)) {
            l.keys.remove(key);
        }
        let key = key.to_owned();
        Some(Self::record(state, events, history_limit, |revision| {
            WatchEvent::Delete { key, revision }
        }))
    }

    fn drop_lease(
        state: &mut State,
        events: &broadcast::Sender<Arc<WatchEvent>>,
        history_limit: usize,
        lease: LeaseId,
    ) {
        if let Some(l) = state.leases.remove(&lease) {
            let mut keys: Vec<String> = l.keys.into_iter().collect();
            keys.sort();
            for key in keys {
                Self::delete_locked(state, events, history_limit, &key);
            }
        }
    }

    fn expire_locked(
        state: &mut State,
        events: &broadcast::Sender<Arc<WatchEvent>>,
        history_limit: usize,
        now: Instant,
    ) {
        let expired: Vec<LeaseId> = state
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            Self::drop_lease(state, events, history_limit, id);
        }
    }

    /// The earliest lease deadline.
    fn next_deadline(&self) -> Option<Instant> {
        self.lock().leases.values().map(|l| l.deadline).min()
    }

    /// Whether `key` is stored bound to `lease`.
    fn bound_to(&self, key: &str, lease: LeaseId) -> bool {
        self.current()
            .kv
            .get(key)
            .is_some_and(|s| s.lease == Some(lease))
    }
}

/// One client of a [`MemoryStore`], with its own lease: the `memory` [`Backend`].
#[derive(Debug)]
pub struct MemoryBackend {
    store: Arc<MemoryStore>,
    lease: Mutex<Option<LeaseId>>,
}

impl MemoryBackend {
    /// A client of `store`.
    pub fn new(store: Arc<MemoryStore>) -> Self {
        Self {
            store,
            lease: Mutex::new(None),
        }
    }

    /// The store this client talks to.
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    fn lease(&self) -> MutexGuard<'_, Option<LeaseId>> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.store.check_up()?;
        let mut lease = self.lease();
        let id = match *lease {
            Some(id) if self.store.lease_remaining(id).is_some() => id,
            _ => {
                let id = self.store.grant(ttl);
                *lease = Some(id);
                id
            }
        };
        match self.store.put_owned(key, value, id) {
            Ok(_) => Ok(()),
            Err(PutRefused::LeaseGone(id)) => Err(BackendError::request(
                NAME,
                format!("put {key}"),
                format!("lease {id} expired"),
            )),
            Err(PutRefused::Held(holder)) => Err(BackendError::Held {
                backend: NAME,
                key: key.to_owned(),
                holder: format!("lease {holder}"),
            }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.store.check_up()?;
        let lease = *self.lease();
        self.store.delete_owned(key, lease);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        self.store.check_up()?;
        Ok(self.store.list(prefix))
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        self.store.watch(prefix, after)
    }

    async fn keep_alive(&self, keys: &[String], _ttl: Duration) -> Result<Liveness, BackendError> {
        self.store.check_up()?;
        let lease = *self.lease();
        match lease {
            Some(id) if self.store.keep_alive(id) => Ok(Liveness::Alive {
                missing: keys
                    .iter()
                    .filter(|k| !self.store.bound_to(k, id))
                    .cloned()
                    .collect(),
            }),
            _ => Ok(Liveness::Lost),
        }
    }

    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        self.store.check_up()?;
        let lease = self.store.current().kv.get(key).and_then(|s| s.lease);
        Ok(lease.and_then(|id| self.store.lease_remaining(id)))
    }

    async fn admin_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        self.store.check_up()?;
        match value {
            Some(value) => {
                let mut state = self.store.lock();
                let now = tokio::time::Instant::now();
                MemoryStore::expire_locked(
                    &mut state,
                    &self.store.events,
                    self.store.history_limit,
                    now,
                );
                self.store
                    .put_locked(&mut state, key, value, None)
                    .map(|_| ())
                    .map_err(|id| {
                        BackendError::request(NAME, format!("put {key}"), format!("lease {id}"))
                    })
            }
            None => {
                let mut state = self.store.lock();
                MemoryStore::delete_locked(
                    &mut state,
                    &self.store.events,
                    self.store.history_limit,
                    key,
                );
                Ok(())
            }
        }
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.store.check_up()
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        self.store.check_up()?;
        let lease = self.lease().take();
        for key in keys {
            self.store.delete_owned(key, lease);
        }
        if let Some(id) = lease {
            self.store.revoke(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn watch_resumes_from_a_revision_and_reports_compaction() {
        let store = MemoryStore::with_history(3);
        let r1 = store.put("/a/1", b"1", None).unwrap();
        store.put("/a/2", b"2", None).unwrap();
        store.put("/b/1", b"x", None).unwrap();
        let mut w = store.watch("/a/", r1);
        let e = w.next().await.unwrap().unwrap();
        assert_eq!(e.key(), "/a/2");
        store.delete("/a/1");
        let e = w.next().await.unwrap().unwrap();
        assert!(matches!(e, WatchEvent::Delete { ref key, .. } if key == "/a/1"));
        // History holds 3 events: revision 1 is gone.
        let mut old = store.watch("/a/", 0);
        assert!(matches!(
            old.next().await,
            Some(Err(BackendError::HistoryLost { .. }))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_and_delete_their_keys() {
        let store = MemoryStore::new();
        let lease = store.grant(Duration::from_millis(50));
        store.put("/k", b"v", Some(lease)).unwrap();
        let mut w = store.watch("/", store.revision());
        // Nobody polls the watch: the next operation expires the lease first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(store.list("/").entries.is_empty());
        assert!(matches!(
            w.next().await,
            Some(Ok(WatchEvent::Delete { .. }))
        ));
        assert!(!store.keep_alive(lease));
        assert!(store.put("/k", b"v", Some(lease)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_sees_an_expiry_on_time_without_any_other_call() {
        let store = MemoryStore::new();
        let lease = store.grant(Duration::from_secs(3));
        store.put("/k", b"v", Some(lease)).unwrap();
        let mut w = store.watch("/", store.revision());
        let start = Instant::now();
        // Kept alive once after 2 s: the deadline moves to 5 s.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(store.keep_alive(lease));
        let event = tokio::time::timeout(Duration::from_secs(60), w.next())
            .await
            .unwrap();
        assert!(matches!(event, Some(Ok(WatchEvent::Delete { .. }))));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(store.lease_remaining(lease), None);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_open_watches_and_listings() {
        let store = MemoryStore::new();
        let backend = MemoryBackend::new(store.clone());
        assert_eq!(store.watch_count(), 0);
        let mut w = backend.watch("/", 0);
        assert_eq!(store.watch_count(), 1);
        store.set_down(true);
        assert!(w.next().await.unwrap().is_err());
        assert_eq!(
            store.watch_count(),
            0,
            "a watch ends when the store goes down"
        );
        let _refused = backend.watch("/", 0);
        assert_eq!(store.watch_count(), 0);
        store.set_down(false);
        assert_eq!(store.list_count(), 0);
        backend.list("/").await.unwrap();
        store.list("/a/");
        assert_eq!(store.list_count(), 2);
    }

    #[tokio::test]
    async fn outage_fails_requests_and_ends_watches() {
        let store = MemoryStore::new();
        let backend = MemoryBackend::new(store.clone());
        let mut w = backend.watch("/", 0);
        store.set_down(true);
        assert!(matches!(
            w.next().await,
            Some(Err(BackendError::Connect { .. }))
        ));
        assert!(backend.list("/").await.is_err());
        store.set_down(false);
        assert!(backend.list("/").await.is_ok());
    }
}
