//! The consumer-side cache: one entry per service key, each kept current by one watch.
//!
//! # Reads
//! A cache hit is one lock-free load of the [`index`] shard holding the service key and one
//! `Arc` clone of its current snapshot: no lock, no I/O, no allocation. Readers never wait for a
//! writer and never see a partial list: every change builds a new list aside and swaps it in.
//!
//! # Writes
//! The first discover of a service key lists the service prefix from the store (callers asking
//! concurrently share that one list) and starts exactly one watch from the listing's revision.
//! Each watch event is then applied to the entry (add, update or remove one node). When the
//! watch breaks, the entry keeps serving its last nodes while the watcher re-creates the watch
//! from the last revision seen; when the store has lost that history, it waits a jittered
//! cooldown and lists again.
//!
//! # Entries nobody reads
//! A provider watches the services it registers (to put back a node deleted behind its back),
//! which makes an entry too, but it never reads that entry's served list. Such an entry keeps
//! the store's truth current and builds no served list on changes: it is not in the index, so
//! a reader's first [`discover`](crate::Registry::discover) takes the slow path, which marks
//! the entry read, builds its list from the current truth and indexes it. From then on it is
//! published like any other. (A provider registering many nodes of one service otherwise spent
//! most of its time rebuilding a list it never read: one reference count per node per change.)
//!
//! # Memory
//! An entry holds the service's nodes once (as `Arc<ServiceMetaInfo>`), shared by the store
//! truth, the served list and every snapshot a reader still holds. Entries live as long as the
//! registry: a process that discovers N services keeps N entries and N watches.

mod index;
mod overrides;
pub mod snapshot;
pub(crate) mod state;
mod watcher;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::backend::Backend;
use crate::error::RegistryError;
use crate::options::RegistryOptions;
use crate::tasks::Tasks;
use crate::truth::TruthObserver;
use state::ServiceState;
pub(crate) use state::{decode_listing, decode_overrides_listing};
pub use state::{Node, NodeDiff};
pub(crate) use watcher::list;

/// Where a discovered node list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from the store by this call (first discover of the service).
    Registry,
    /// Served from the consumer cache.
    Cache,
}

impl Origin {
    /// `"registry"` or `"cache"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Registry => "registry",
            Origin::Cache => "cache",
        }
    }
}

/// One published version of a service's node list.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) nodes: Arc<[Node]>,
    pub(crate) stale: bool,
    pub(crate) generation: u64,
    /// When it was published (for the event-to-listener metric).
    pub(crate) published_at: std::time::Instant,
}

/// The nodes of one service, as returned by [`Registry::discover`](crate::Registry::discover).
///
/// Derefs to `[Node]`; cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct ServiceNodes {
    snapshot: Arc<Snapshot>,
    origin: Origin,
}

impl ServiceNodes {
    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.snapshot.nodes
    }

    /// The nodes as a shared slice (for keeping beyond this value).
    pub fn shared(&self) -> Arc<[Node]> {
        self.snapshot.nodes.clone()
    }

    /// Whether they came from the store or the cache.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// True when the store currently shows no node and these are the last known ones, kept by
    /// the [`EmptyProtection`](crate::EmptyProtection) policy.
    pub fn is_stale(&self) -> bool {
        self.snapshot.stale
    }
}

impl ServiceNodes {
    pub(crate) fn from_registry(snapshot: Arc<Snapshot>) -> Self {
        Self {
            snapshot,
            origin: Origin::Registry,
        }
    }
}

impl Deref for ServiceNodes {
    type Target = [Node];
    fn deref(&self) -> &[Node] {
        &self.snapshot.nodes
    }
}

/// The cache entry of one service key.
pub(crate) struct ServiceEntry {
    /// The backend's name, for metrics.
    pub(crate) backend: &'static str,
    /// Where fresh lists go to the disk snapshot, when one is kept.
    snapshots: Option<snapshot::Writer>,
    state: Mutex<ServiceState>,
    /// Where readers find the published snapshot, under `key` (hashed once, here).
    index: Arc<index::Index>,
    key: Arc<str>,
    hash: u64,
    changes: tokio::sync::watch::Sender<Arc<Snapshot>>,
    relist: Notify,
    generation: std::sync::atomic::AtomicU64,
    /// Whether anything in this process reads the served list (see the module docs); until
    /// then nothing is published.
    read: std::sync::atomic::AtomicBool,
}

impl ServiceEntry {
    fn new(
        state: ServiceState,
        backend: &'static str,
        snapshots: Option<snapshot::Writer>,
        index: Arc<index::Index>,
        read: bool,
    ) -> Self {
        let snapshot = Arc::new(Snapshot {
            nodes: state.served().nodes.clone(),
            stale: state.served().stale,
            generation: 1,
            published_at: std::time::Instant::now(),
        });
        if snapshot.stale {
            crate::metrics::stale_changed(backend, true);
        } else if let Some(writer) = &snapshots {
            if !state.service_key().is_empty() {
                writer.save(state.service_key(), &snapshot.nodes);
            }
        }
        let key = state.service_key().clone();
        Self {
            backend,
            snapshots,
            state: Mutex::new(state),
            hash: index.hash(&key),
            index,
            key,
            changes: tokio::sync::watch::Sender::new(snapshot),
            relist: Notify::new(),
            generation: std::sync::atomic::AtomicU64::new(1),
            read: std::sync::atomic::AtomicBool::new(read),
        }
    }

    /// Whether the served list is read in this process (else it is not kept published).
    pub(crate) fn is_read(&self) -> bool {
        self.read.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks the served list read: the first time, builds it from the current truth and
    /// publishes it (which indexes it).
    fn start_reading(&self) {
        if self.read.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // The watcher checks the mark after applying events under this lock: whatever it
        // applied before is in this list, whatever after it publishes itself.
        let mut state = self.lock();
        let _ = state.republish(state::Cause::Event, Instant::now());
        self.publish(&state);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ServiceState> {
        // The state stays consistent across a panic (every mutation is one assignment), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Derives the served list from the truth in `state` (this entry's, locked) and publishes
    /// it when it changed; nothing while no one reads it (see the module docs).
    pub(crate) fn republish(&self, state: &mut ServiceState, cause: state::Cause) {
        if self.is_read() && state.republish(cause, Instant::now()).is_some() {
            self.publish(state);
        }
    }

    /// Publishes the served list of `state` to readers and listeners (nothing while no one
    /// reads it).
    pub(crate) fn publish(&self, state: &ServiceState) {
        if !self.is_read() {
            return;
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let snapshot = Arc::new(Snapshot {
            nodes: state.served().nodes.clone(),
            stale: state.served().stale,
            generation,
            published_at: std::time::Instant::now(),
        });
        if let Some(writer) = &self.snapshots {
            if !snapshot.stale && !state.service_key().is_empty() {
                writer.save(state.service_key(), &snapshot.nodes);
            }
        }
        let was_stale = self.changes.borrow().stale;
        if was_stale != snapshot.stale {
            crate::metrics::stale_changed(self.backend, snapshot.stale);
        }
        self.index.publish(self.hash, &self.key, &snapshot);
        self.changes.send_replace(snapshot);
    }

    /// Asks the watcher to list the service again.
    pub(crate) fn request_relist(&self) {
        self.relist.notify_one();
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.changes.borrow().clone()
    }

    /// Lets readers find this entry's current snapshot (called once its watch runs), when it
    /// is read.
    fn index(&self) {
        if self.is_read() {
            self.index.publish(self.hash, &self.key, &self.snapshot());
        }
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.changes.subscribe()
    }
}

/// The entries by service key, for the paths that need more than the snapshot (first discover,
/// subscribe, evict, overrides). Hits never take this lock: they read the [`index::Index`].
#[derive(Default)]
pub(crate) struct Entries(RwLock<HashMap<String, Arc<ServiceEntry>, foldhash::fast::RandomState>>);

impl Entries {
    pub(crate) fn get(&self, service_key: &str) -> Option<Arc<ServiceEntry>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service_key)
            .cloned()
    }

    fn insert(&self, service_key: &str, entry: Arc<ServiceEntry>) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service_key.to_owned(), entry);
    }

    fn keys(&self) -> Vec<String> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.keys().cloned().collect()
    }
}

/// All cache entries of one registry.
pub(crate) struct ServiceCache {
    index: Arc<index::Index>,
    entries: Arc<Entries>,
    overrides: Arc<overrides::OverridesWatch>,
    loading: Mutex<HashMap<String, Arc<OnceCell<Arc<ServiceEntry>>>>>,
    backend: Arc<dyn Backend>,
    options: Arc<RegistryOptions>,
    observer: Arc<dyn TruthObserver>,
    tasks: Arc<Tasks>,
    snapshots: Option<snapshot::Writer>,
}

impl ServiceCache {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        options: Arc<RegistryOptions>,
        observer: Arc<dyn TruthObserver>,
        tasks: Arc<Tasks>,
    ) -> Self {
        let snapshots = options.snapshot_dir.clone().and_then(|dir| {
            let (writer, task) = snapshot::Writer::new(dir, tasks.child_token());
            tasks.spawn(task).then_some(writer)
        });
        Self {
            index: Arc::default(),
            entries: Arc::default(),
            overrides: Arc::default(),
            loading: Mutex::default(),
            backend,
            options,
            observer,
            tasks,
            snapshots,
        }
    }

    /// The hot path: the cached nodes of `service_key`, if the service was discovered before.
    #[inline]
    pub(crate) fn get(&self, service_key: &str) -> Option<ServiceNodes> {
        index::Index::get(&self.index, service_key).map(|snapshot| ServiceNodes {
            snapshot,
            origin: Origin::Cache,
        })
    }

    pub(crate) fn entry(&self, service_key: &str) -> Option<Arc<ServiceEntry>> {
        self.entries.get(service_key)
    }

    /// The service keys with an entry.
    pub(crate) fn service_keys(&self) -> Vec<String> {
        self.entries.keys()
    }

    /// The entry of `service_key`, listing the store and starting its watch on first use.
    /// Concurrent first callers share one listing. Its served list is read from now on.
    pub(crate) async fn load(&self, service_key: &str) -> Result<Arc<ServiceEntry>, RegistryError> {
        let entry = self.load_as(service_key, true).await?;
        entry.start_reading();
        Ok(entry)
    }

    /// Like [`load`](Self::load), for a watch of the store's truth only (a provider's watch of
    /// its own services): the entry builds no served list until something reads it.
    pub(crate) async fn load_unread(
        &self,
        service_key: &str,
    ) -> Result<Arc<ServiceEntry>, RegistryError> {
        self.load_as(service_key, false).await
    }

    async fn load_as(
        &self,
        service_key: &str,
        read: bool,
    ) -> Result<Arc<ServiceEntry>, RegistryError> {
        if let Some(entry) = self.entry(service_key) {
            return Ok(entry);
        }
        let cell = {
            let mut loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
            loading.entry(service_key.to_owned()).or_default().clone()
        };
        let result = cell
            .get_or_try_init(|| self.start_entry(service_key, read))
            .await
            .cloned();
        self.loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(service_key);
        result
    }

    async fn start_entry(
        &self,
        service_key: &str,
        read: bool,
    ) -> Result<Arc<ServiceEntry>, RegistryError> {
        // Another caller may have finished between our map check and taking the cell.
        if let Some(entry) = self.entry(service_key) {
            return Ok(entry);
        }
        if self.tasks.is_cancelled() {
            return Err(RegistryError::Shutdown);
        }
        let mut state = ServiceState::new(
            &self.options.keys,
            service_key,
            self.options.empty_protection,
        );
        if let Some(max_gone) = self.options.protect_threshold {
            state = state.with_threshold(max_gone, self.options.ttl);
        }
        let mut from_snapshot = false;
        // The overrides records (listed once per registry) and the service, side by side.
        let (listed, ()) = tokio::join!(
            watcher::list(&*self.backend, state.prefix(), self.options.timeout),
            self.overrides
                .start(&self.backend, &self.options, &self.entries, &self.tasks),
        );
        self.overrides.seed(&mut state);
        match listed {
            Ok(listing) => {
                state.relist(&listing, Instant::now());
                self.observer
                    .listed(state.prefix(), &|key| state.holds(key));
                debug!(
                    service = service_key,
                    nodes = state.served().nodes.len(),
                    revision = listing.revision,
                    "listed service, starting its watch"
                );
            }
            Err(source) => {
                // The store does not answer: the nodes this process saw last time, if it
                // kept them, are served (stale) until it does.
                let saved = self
                    .options
                    .snapshot_dir
                    .as_deref()
                    .filter(|_| !service_key.is_empty())
                    .and_then(|dir| snapshot::read(dir, service_key))
                    .filter(|nodes| !nodes.is_empty());
                let Some(nodes) = saved else {
                    return Err(RegistryError::Store {
                        operation: format!("discover {service_key}"),
                        source,
                    });
                };
                warn!(
                    service = service_key,
                    nodes = nodes.len(),
                    error = %crate::util::error_chain(&source),
                    "the store does not answer: serving the nodes of the disk snapshot (stale) until it does"
                );
                state.seed_from_snapshot(nodes);
                from_snapshot = true;
            }
        }
        let entry = Arc::new(ServiceEntry::new(
            state,
            self.backend.name(),
            self.snapshots.clone(),
            self.index.clone(),
            read,
        ));
        if from_snapshot {
            // The watcher lists first (retrying until the store answers).
            entry.request_relist();
        }
        let watcher = watcher::run(
            entry.clone(),
            self.backend.clone(),
            self.options.clone(),
            self.observer.clone(),
            self.tasks.child_token(),
        );
        if !self.tasks.spawn(watcher) {
            return Err(RegistryError::Shutdown);
        }
        self.entries.insert(service_key, entry.clone());
        entry.index();
        // A record that changed between the seed and the entry's arrival in the map.
        self.overrides.catch_up(&entry);
        Ok(entry)
    }
}
