//! The provider side: the nodes this process wants registered, and the one task that keeps them
//! in the store.
//!
//! One desired-state map drives everything. `register` adds a node to it and writes it;
//! `unregister` takes it out first and deletes it after, so a node unregistered on purpose is
//! never written again. The heartbeat task renews liveness every `heartbeat_interval` and puts
//! back every wanted node the store lost: when the backend reports the lease or session lost,
//! when it reports keys missing, when a watch sees a confirmed node deleted behind our back, or
//! when a write failed. It retries with jittered backoff for as long as the registry runs.
//!
//! A node unregistered while the store could not take the delete stays in the store, and it
//! stays alive there: its liveness (an etcd lease, a ZooKeeper session, a Redis lease) is shared
//! with the nodes still wanted, and the heartbeats keep renewing it. So a delete that failed for
//! a reason that may pass (the store unreachable or slow) is not left to the TTL: the path is
//! kept as a *leftover*, and every round of the heartbeat task deletes the leftovers
//! (owner-checked, as every delete) until the store takes it, or until the node is registered
//! again. A delete refused for good (a missing permission) is not retried.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt as _;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{Backend, BackendError, Liveness};
use crate::backoff::Backoff;
use crate::instance::ServiceMetaInfo;
use crate::options::RegistryOptions;
use crate::registration::RegistrationState;
use crate::truth::TruthObserver;
use crate::util::{error_chain, timed, Failures};

/// How many puts run at once when many nodes must be written again.
const REPAIR_CONCURRENCY: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteState {
    /// Must be written (never was, write failed, or the store lost it).
    Pending,
    /// Written by us; the watch has not shown it yet.
    Written,
    /// Written and seen in the store by a watch or a listing.
    Confirmed,
}

struct Desired {
    node: Arc<ServiceMetaInfo>,
    value: Arc<[u8]>,
    state: WriteState,
    /// Whether the store ever took it.
    ever_written: bool,
    /// When it became pending (last).
    pending_since: Instant,
    /// What applications see: the state, published on every change.
    public: watch::Sender<RegistrationState>,
}

impl Desired {
    fn new(node: Arc<ServiceMetaInfo>, value: Arc<[u8]>) -> Self {
        Self {
            node,
            value,
            state: WriteState::Pending,
            ever_written: false,
            pending_since: Instant::now(),
            public: watch::Sender::new(RegistrationState::Pending),
        }
    }

    /// Moves to `state` and publishes what it means; `ttl` decides when a repair is `Lost`.
    fn set(&mut self, state: WriteState, ttl: std::time::Duration) {
        if state == WriteState::Pending && self.state != WriteState::Pending {
            self.pending_since = Instant::now();
        }
        if state != WriteState::Pending {
            self.ever_written = true;
        }
        self.state = state;
        self.publish(ttl, std::time::Duration::ZERO);
    }

    /// Publishes the state: `Lost` once a repair, or the heartbeats (failing for
    /// `unconfirmed`), have lasted longer than `ttl`.
    fn publish(&self, ttl: std::time::Duration, unconfirmed: std::time::Duration) {
        let public = match self.state {
            WriteState::Written | WriteState::Confirmed if unconfirmed > ttl => {
                RegistrationState::Lost
            }
            WriteState::Written | WriteState::Confirmed => RegistrationState::Live,
            WriteState::Pending if !self.ever_written => RegistrationState::Pending,
            WriteState::Pending if self.pending_since.elapsed() > ttl => RegistrationState::Lost,
            WriteState::Pending => RegistrationState::Repairing,
        };
        self.public.send_if_modified(|current| {
            let changed = *current != public;
            *current = public;
            changed
        });
    }
}

/// The desired-state map and the heartbeat machinery of one registry.
pub(crate) struct Registrar {
    backend: Arc<dyn Backend>,
    options: Arc<RegistryOptions>,
    desired: Mutex<HashMap<String, Desired>>,
    /// Paths unregistered whose delete the store did not take yet (see the module docs).
    leftovers: Mutex<HashSet<String>>,
    wake: Notify,
    /// When the store last confirmed this client's liveness (a keep-alive answered).
    alive_at: Mutex<Instant>,
    /// Held by the heartbeat task while it runs.
    running: Arc<()>,
}

impl Registrar {
    pub(crate) fn new(backend: Arc<dyn Backend>, options: Arc<RegistryOptions>) -> Self {
        Self {
            backend,
            options,
            desired: Mutex::default(),
            leftovers: Mutex::default(),
            wake: Notify::new(),
            alive_at: Mutex::new(Instant::now()),
            running: Arc::new(()),
        }
    }

    fn desired(&self) -> MutexGuard<'_, HashMap<String, Desired>> {
        self.desired.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn leftovers(&self) -> MutexGuard<'_, HashSet<String>> {
        self.leftovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes `path`, which is not wanted; when the store cannot take it now (a retryable
    /// error), the path becomes a leftover the heartbeat task deletes later.
    async fn delete(&self, path: &str) -> Result<(), BackendError> {
        match self
            .timed_request(|| format!("delete {path}"), self.backend.delete(path))
            .await
        {
            Ok(()) => {
                self.leftovers().remove(path);
                Ok(())
            }
            // Worth trying again (the store was unreachable or slow): a leftover.
            Err(error) if error.is_retryable() => {
                if !self.desired().contains_key(path) {
                    self.leftovers().insert(path.to_owned());
                    self.wake.notify_one();
                }
                Err(error)
            }
            // Refused for good (a permission): trying again would not help.
            Err(error) => {
                self.leftovers().remove(path);
                Err(error)
            }
        }
    }

    async fn timed_request<T>(
        &self,
        operation: impl FnOnce() -> String,
        fut: impl std::future::Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        timed(&*self.backend, self.options.timeout, operation, fut).await
    }

    /// Adds `node` (stored at `path`) to the wanted set and writes it. On failure the node stays
    /// wanted and the heartbeat task retries it in the background.
    pub(crate) async fn register(
        &self,
        path: String,
        node: Arc<ServiceMetaInfo>,
    ) -> Result<(), BackendError> {
        let value: Arc<[u8]> = serde_json::to_vec(&*node)
            .map_err(|e| BackendError::request(self.backend.name(), format!("encode {path}"), e))?
            .into();
        self.desired()
            .insert(path.clone(), Desired::new(node, value.clone()));
        self.leftovers().remove(&path);
        match self.write(&path, &value).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.wake.notify_one();
                Err(error)
            }
        }
    }

    /// Takes `path` out of the wanted set, then deletes it. Returns false when it was not wanted.
    pub(crate) async fn unregister(&self, path: &str) -> Result<bool, BackendError> {
        let was_wanted = self.desired().remove(path).is_some();
        self.delete(path).await?;
        Ok(was_wanted)
    }

    /// The state of the registration at `path`, and its changes; `None` when not wanted.
    pub(crate) fn registration(&self, path: &str) -> Option<watch::Receiver<RegistrationState>> {
        self.desired().get(path).map(|d| d.public.subscribe())
    }

    /// Waits (up to `within`) until the heartbeat task has ended: no write of it is in flight
    /// any more. True when it ended.
    pub(crate) async fn stopped(&self, within: std::time::Duration) -> bool {
        let deadline = Instant::now() + within;
        while Arc::strong_count(&self.running) > 1 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        true
    }

    /// How many nodes are wanted now.
    pub(crate) fn len(&self) -> usize {
        self.desired().len()
    }

    /// The nodes wanted now.
    pub(crate) fn registered(&self) -> Vec<Arc<ServiceMetaInfo>> {
        self.desired().values().map(|d| d.node.clone()).collect()
    }

    /// Empties the wanted set and the leftovers (graceful shutdown) and returns the paths they
    /// held: every node this client may still have in the store.
    pub(crate) fn drain(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.desired().drain().map(|(path, _)| path).collect();
        paths.extend(self.leftovers().drain());
        paths
    }

    /// Puts one node; marks it written if it is still wanted with this value, deletes it again
    /// if it was unregistered while the put was in flight.
    async fn write(&self, path: &str, value: &Arc<[u8]>) -> Result<(), BackendError> {
        self.timed_request(
            || format!("put {path}"),
            self.backend.put(path, value, self.options.ttl),
        )
        .await?;
        let still_wanted = {
            let mut desired = self.desired();
            match desired.get_mut(path) {
                Some(d) => {
                    if Arc::ptr_eq(&d.value, value) && d.state == WriteState::Pending {
                        d.set(WriteState::Written, self.options.ttl);
                    }
                    true
                }
                None => false,
            }
        };
        if !still_wanted {
            debug!(%path, "unregistered while being written, deleting again");
            self.delete(path).await?;
        }
        Ok(())
    }

    fn mark_pending<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> usize {
        let mut desired = self.desired();
        let mut marked = 0;
        for path in paths {
            if let Some(d) = desired.get_mut(path) {
                if d.state != WriteState::Pending {
                    d.set(WriteState::Pending, self.options.ttl);
                    marked += 1;
                }
            }
        }
        marked
    }

    /// One round: renew liveness (on a beat), then write every pending node.
    async fn reconcile(&self, beat: bool) -> Result<(), BackendError> {
        if beat {
            let keys: Vec<String> = self.desired().keys().cloned().collect();
            if !keys.is_empty() {
                let liveness = self
                    .timed_request(
                        || "keep-alive".to_owned(),
                        self.backend.keep_alive(&keys, self.options.ttl),
                    )
                    .await
                    .inspect_err(|_| crate::metrics::heartbeat(self.backend.name(), "error"))?;
                *self.alive_at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                let backend = self.backend.name();
                match liveness {
                    Liveness::Lost => {
                        let n = self.mark_pending(keys.iter().map(String::as_str));
                        crate::metrics::heartbeat(backend, "lost");
                        crate::metrics::reregistrations(backend, "liveness_lost", n);
                        warn!(nodes = n, "liveness lost, registering every node again");
                    }
                    Liveness::Alive { missing } if !missing.is_empty() => {
                        let n = self.mark_pending(missing.iter().map(String::as_str));
                        crate::metrics::heartbeat(backend, "ok");
                        crate::metrics::reregistrations(backend, "missing", n);
                        info!(nodes = n, "store lost some nodes, registering them again");
                    }
                    Liveness::Alive { .. } => crate::metrics::heartbeat(backend, "ok"),
                }
            }
        }
        let pending: Vec<(String, Arc<[u8]>)> = self
            .desired()
            .iter()
            .filter(|(_, d)| d.state == WriteState::Pending)
            .map(|(path, d)| (path.clone(), d.value.clone()))
            .collect();
        let leftovers: Vec<String> = self.leftovers().iter().cloned().collect();
        if pending.is_empty() && leftovers.is_empty() {
            return Ok(());
        }
        debug!(
            nodes = pending.len(),
            leftovers = leftovers.len(),
            "writing pending nodes, deleting leftovers"
        );
        // A value to write, or none: a leftover to delete.
        let work = pending
            .into_iter()
            .map(|(path, value)| (path, Some(value)))
            .chain(leftovers.into_iter().map(|path| (path, None)));
        let mut results = futures::stream::iter(work)
            .map(|(path, value)| async move {
                match value {
                    Some(value) => self.write(&path, &value).await,
                    // (Unless it was registered again since.)
                    None if self.desired().contains_key(&path) => Ok(()),
                    None => self.delete(&path).await,
                }
            })
            .buffer_unordered(REPAIR_CONCURRENCY);
        let mut first_error = None;
        while let Some(result) = results.next().await {
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The heartbeat task: beats every interval, repairs when woken, retries failures with
    /// jittered backoff and never gives up while the registry runs. Once `cancel` fires it
    /// ends after the round in progress; `stopped` resolves then.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let _running = self.running.clone();
        let interval = self.options.heartbeat_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Backoff::new(
            self.options.retry_initial,
            self.options.retry_max.min(interval),
        );
        let mut failures = Failures::default();
        loop {
            let beat = tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => true,
                () = self.wake.notified() => false,
            };
            let mut beat = beat;
            loop {
                // A round already started runs to its end (each request is bounded by the
                // timeout): a write cut off after it was sent could land after the graceful
                // shutdown removed the nodes, and stay until the liveness handle expires.
                let result = self.reconcile(beat).await;
                if cancel.is_cancelled() {
                    return;
                }
                match result {
                    Ok(()) => {
                        if beat {
                            for d in self.desired().values() {
                                d.publish(self.options.ttl, std::time::Duration::ZERO);
                            }
                        }
                        let failures = failures.reset();
                        if failures > 0 {
                            info!(failures, "registrations restored");
                        }
                        backoff.reset();
                        break;
                    }
                    Err(error) => {
                        // Heartbeats or a repair failing for longer than the TTL: the store has
                        // dropped the nodes.
                        let unconfirmed = self
                            .alive_at
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .elapsed();
                        for d in self.desired().values() {
                            d.publish(self.options.ttl, unconfirmed);
                        }
                        let failures = failures.record();
                        let delay = backoff.next_delay();
                        let log = error_chain(&error);
                        if failures == 1 {
                            warn!(error = %log, retry_in = ?delay, "heartbeat or registration failed, retrying");
                        } else {
                            debug!(error = %log, failures, retry_in = ?delay, "still failing");
                        }
                        // Woken early when something changed (a watch saw a wanted key go).
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                            () = self.wake.notified() => {}
                        }
                        // A failed round may have lost liveness meanwhile: beat again.
                        beat = true;
                    }
                }
            }
        }
    }
}

impl TruthObserver for Registrar {
    fn seen(&self, key: &str) {
        if let Some(d) = self.desired().get_mut(key) {
            if d.state == WriteState::Written {
                d.set(WriteState::Confirmed, self.options.ttl);
            }
        }
    }

    fn gone(&self, key: &str) {
        // A written node seen gone is put back, confirmed or not: the watch may have shown
        // our put before the put returned (so it was never confirmed), and an old delete
        // replayed after our put costs one idempotent put at worst.
        let state = self.desired().get_mut(key).map(|d| {
            let before = d.state;
            d.set(WriteState::Pending, self.options.ttl);
            before
        });
        match state {
            Some(WriteState::Confirmed | WriteState::Written) => {
                crate::metrics::reregistrations(self.backend.name(), "deleted", 1);
                info!(%key, "own node deleted from the store, registering it again");
                self.wake.notify_one();
            }
            // Still to be written (for instance held by another registration, which just
            // went): write it now rather than at the next retry.
            Some(WriteState::Pending) => self.wake.notify_one(),
            _ => {}
        }
    }

    fn listed(&self, prefix: &str, present: &dyn Fn(&str) -> bool) {
        let mut repair = false;
        for (path, d) in self.desired().iter_mut() {
            if !path.starts_with(prefix) {
                continue;
            }
            match (present(path), d.state) {
                (true, WriteState::Written) => d.set(WriteState::Confirmed, self.options.ttl),
                (false, WriteState::Confirmed) => {
                    d.set(WriteState::Pending, self.options.ttl);
                    repair = true;
                }
                _ => {}
            }
        }
        if repair {
            crate::metrics::reregistrations(self.backend.name(), "missing", 1);
            info!(%prefix, "own nodes missing from a listing, registering them again");
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::time::Duration;

    use crate::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};

    async fn ports(registry: &Registry) -> Vec<u16> {
        let mut ports: Vec<u16> = registry
            .inspect(Some("web:1.0"))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.node.service_port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// A node unregistered while the store refuses the delete is deleted once the store is
    /// back, long before its TTL (the heartbeats of the other node would keep it alive on a
    /// store whose liveness is shared), and a graceful shutdown removes a leftover too.
    #[tokio::test(start_paused = true)]
    async fn a_delete_the_store_refused_is_done_once_it_is_back() {
        let store = MemoryStore::new();
        let options = RegistryOptions::default();
        let ttl = options.ttl;
        let provider = Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap();
        let node = |port| ServiceMetaInfo::new("web", "127.0.0.1", port);
        provider.register(node(1)).await.unwrap();
        provider.register(node(2)).await.unwrap();
        store.set_down(true);
        assert!(provider.unregister(&node(2)).await.is_err());
        tokio::time::sleep(Duration::from_secs(2)).await;
        store.set_down(false);
        let back = tokio::time::Instant::now();
        while ports(&provider).await != [1] {
            assert!(
                back.elapsed() < ttl / 3,
                "still there after {:?}",
                back.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A leftover at shutdown is removed with the rest.
        store.set_down(true);
        assert!(provider.unregister(&node(1)).await.is_err());
        provider.register(node(3)).await.ok();
        store.set_down(false);
        provider.shutdown().await.unwrap();
        let inspector = Registry::new(
            Arc::new(MemoryBackend::new(store.clone())),
            RegistryOptions::default(),
        )
        .unwrap();
        assert!(ports(&inspector).await.is_empty());
    }
}
