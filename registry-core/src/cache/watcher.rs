//! The one task per cached service that keeps its entry current.
//!
//! States: *watching from revision R* -> (event) apply, stay; (transient error or end of stream)
//! back off, watch again from R; (history lost, or a relist asked by an eviction) wait a jittered
//! cooldown, list, swap the list in, watch from the listing's revision.
//!
//! # Logs
//! A failure (a broken watch, lost history, a failed relist) is a warning when it starts an
//! episode and `debug!` while the watch keeps failing; "watch restored" (`info!`) ends the
//! episode, when an event arrives, a relist succeeds, or a new watch has not failed for one
//! request timeout.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::state::Cause;
use super::ServiceEntry;
use crate::backend::{Backend, BackendError, Listing, WatchEvent};
use crate::backoff::{jitter, Backoff};
use crate::options::RegistryOptions;
use crate::truth::TruthObserver;
use crate::util::{error_chain, sleep_or_cancel, timed, Failures};

/// Most events applied before one publish, when a burst is already waiting in the stream.
const MAX_BATCH: usize = 1024;

/// Served lists shorter than this are published on every batch of events.
const HOLD_FROM: usize = 256;

/// The longest a change waits for the next publish of a large served list.
const MAX_HOLD: Duration = Duration::from_millis(20);

/// How long after a publish the next one waits while events keep coming, for a served list of
/// `nodes` nodes: nothing below [`HOLD_FROM`] nodes, else a microsecond per node (at most
/// [`MAX_HOLD`]).
///
/// A publish copies the list (one reference count touched per node, a cache miss each once the
/// nodes outgrow the CPU's caches): under a burst of changes to a large service (a provider
/// registering thousands of nodes, a mass restart), publishing every batch costs time linear in
/// the list per change. Held this way, a publish costs at most about a tenth of the time it
/// covers. The first change after a quiet spell is published at once; a change in a burst waits
/// at most the hold (1 ms for 1,000 nodes).
fn publish_hold(nodes: usize) -> Duration {
    if nodes < HOLD_FROM {
        return Duration::ZERO;
    }
    Duration::from_micros(u64::try_from(nodes).unwrap_or(u64::MAX)).min(MAX_HOLD)
}

/// Lists `prefix` with a timeout.
pub(crate) async fn list(
    backend: &dyn Backend,
    prefix: &str,
    timeout: Duration,
) -> Result<Listing, BackendError> {
    timed(
        backend,
        timeout,
        || format!("list {prefix}"),
        backend.list(prefix),
    )
    .await
}

enum Next {
    /// Watch again from the current revision.
    Rewatch,
    /// List again, after a cooldown when the store asked for it.
    Relist { cooldown: bool },
}

/// Logs one failure of the watch (rewatch and relist alike): a warning for the first of an
/// episode, `debug!` while it keeps failing.
macro_rules! failed {
    ($failures:expr, $($field:tt)+) => {
        let failures = $failures.record();
        if failures == 1 {
            warn!($($field)+);
        } else {
            debug!(failures, $($field)+);
        }
    };
}

/// Ends a failure episode, logging it when there was one.
fn restored(service: &str, failures: &mut Failures) {
    let failures = failures.reset();
    if failures > 0 {
        info!(%service, failures, "watch restored");
    }
}

pub(crate) async fn run(
    entry: Arc<ServiceEntry>,
    backend: Arc<dyn Backend>,
    options: Arc<RegistryOptions>,
    observer: Arc<dyn TruthObserver>,
    cancel: CancellationToken,
) {
    let (service, prefix) = {
        let state = entry.lock();
        (state.service_key().clone(), state.prefix().to_owned())
    };
    let mut backoff = Backoff::new(options.retry_initial, options.retry_max);
    let mut failures = Failures::default();
    // The first batch after a broken watch carries what happened during the outage: it is
    // applied as a resync, so the empty protection covers a mass expiry seen on reconnect.
    let mut resumed = false;
    // When the event path last published, and when a change held back is due (see
    // `publish_hold`).
    let mut published_at = Instant::now();
    let mut held: Option<Instant> = None;
    loop {
        let revision = entry.lock().revision();
        // Watch from the last revision itself, not after it: a watch that broke in the middle
        // of a multi-key revision replays that revision whole (re-applying is harmless).
        let mut stream = backend
            .watch(&prefix, revision.saturating_sub(1))
            .peekable();
        debug!(%service, revision, "watching");
        // A watch that did not fail for one request timeout after it was opened works again
        // (a quiet service has no event to prove it sooner).
        let proven_at = Instant::now() + options.timeout;
        let next = loop {
            let deadline = entry.lock().next_eviction_deadline();
            let eviction_over = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let proven = async {
                if failures.ongoing() {
                    tokio::time::sleep_until(proven_at).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = entry.relist.notified() => {
                    crate::metrics::relist(backend.name(), "eviction");
                    break Next::Relist { cooldown: false };
                }
                () = eviction_over => publish(&entry, Cause::Event),
                () = async {
                    if let Some(at) = held {
                        tokio::time::sleep_until(at).await;
                    }
                }, if held.is_some() => {
                    held = None;
                    publish(&entry, Cause::Event);
                    published_at = Instant::now();
                }
                () = proven => restored(&service, &mut failures),
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        backoff.reset();
                        restored(&service, &mut failures);
                        let mut batch = vec![event];
                        // Only events join the batch: an error waiting behind them stays in
                        // the stream for the next turn.
                        while batch.len() < MAX_BATCH {
                            match std::pin::Pin::new(&mut stream).next_if(Result::is_ok).now_or_never() {
                                Some(Some(Ok(event))) => batch.push(event),
                                _ => break,
                            }
                        }
                        let cause = if std::mem::take(&mut resumed) { Cause::Resync } else { Cause::Event };
                        crate::metrics::watch_events(backend.name(), batch.len());
                        let Some(served) = apply(&entry, &batch, &*observer) else {
                            continue;
                        };
                        let due = published_at + publish_hold(served);
                        let now = Instant::now();
                        if now < due && cause == Cause::Event {
                            held.get_or_insert(due);
                        } else {
                            held = None;
                            publish(&entry, cause);
                            published_at = now;
                        }
                    }
                    Some(Err(BackendError::HistoryLost { reason })) => {
                        crate::metrics::relist(backend.name(), "history_lost");
                        failed!(failures, %service, %reason, "watch history lost, relisting");
                        break Next::Relist { cooldown: true };
                    }
                    Some(Err(error)) => {
                        failed!(
                            failures,
                            %service,
                            error = %error_chain(&error),
                            "watch failed, serving cached nodes and watching again"
                        );
                        break Next::Rewatch;
                    }
                    None => {
                        debug!(%service, "watch stream ended, watching again");
                        break Next::Rewatch;
                    }
                },
            }
        };
        drop(stream);
        if held.take().is_some() {
            publish(&entry, Cause::Event);
        }
        let pause = match next {
            Next::Rewatch => {
                resumed = true;
                backoff.next_delay()
            }
            Next::Relist { cooldown } => {
                if cooldown && !sleep_or_cancel(jitter(options.relist_cooldown), &cancel).await {
                    return;
                }
                let relisted = relist(
                    &entry,
                    &*backend,
                    &options,
                    &*observer,
                    &service,
                    &prefix,
                    &mut failures,
                    &cancel,
                )
                .await;
                if !relisted {
                    return;
                }
                continue;
            }
        };
        if !sleep_or_cancel(pause, &cancel).await {
            return;
        }
    }
}

/// Applies a batch of events to the store's truth. When the truth changed, returns the length
/// of the served list now published (for [`publish_hold`]); the caller publishes.
fn apply(
    entry: &ServiceEntry,
    batch: &[WatchEvent],
    observer: &dyn TruthObserver,
) -> Option<usize> {
    let mut state = entry.lock();
    let mut changed = false;
    for event in batch {
        changed |= state.apply(event);
        match event {
            WatchEvent::Put { kv, .. } => observer.seen(&kv.key),
            WatchEvent::Delete { key, .. } => observer.gone(key),
        }
    }
    changed.then(|| state.served().nodes.len())
}

/// Derives the served list from the truth and publishes it when it changed (when it is read).
fn publish(entry: &ServiceEntry, cause: Cause) {
    entry.republish(&mut entry.lock(), cause);
}

/// Lists until it succeeds (or the registry stops), then swaps the listing in.
/// Returns false when cancelled.
#[allow(clippy::too_many_arguments)]
async fn relist(
    entry: &ServiceEntry,
    backend: &dyn Backend,
    options: &RegistryOptions,
    observer: &dyn TruthObserver,
    service: &str,
    prefix: &str,
    failures: &mut Failures,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(options.retry_initial, options.retry_max);
    loop {
        let result = tokio::select! {
            () = cancel.cancelled() => return false,
            result = list(backend, prefix, options.timeout) => result,
        };
        match result {
            Ok(listing) => {
                {
                    let mut state = entry.lock();
                    if state.relist(&listing, Instant::now()).is_some() {
                        entry.publish(&state);
                    }
                    observer.listed(prefix, &|key| state.holds(key));
                }
                debug!(%prefix, revision = listing.revision, "relisted");
                restored(service, failures);
                return true;
            }
            Err(error) => {
                failed!(
                    failures,
                    %service,
                    error = %error_chain(&error),
                    "relist failed, serving cached nodes and retrying"
                );
                if !sleep_or_cancel(backoff.next_delay(), cancel).await {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, SubscriberExt as _};
    use tracing_subscriber::Layer;

    use super::*;
    use crate::{KeySpace, MemoryBackend, MemoryStore, Registry, ServiceMetaInfo};

    /// The events of the watcher module: level and message.
    #[derive(Clone, Default)]
    struct Logged(Arc<Mutex<Vec<(Level, String)>>>);

    impl Logged {
        fn count(&self, level: Level, message: &str) -> usize {
            let logged = self.0.lock().unwrap();
            logged
                .iter()
                .filter(|(l, m)| *l == level && m == message)
                .count()
        }
    }

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl<S: Subscriber> Layer<S> for Logged {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() != "registry_core::cache::watcher" {
                return;
            }
            let mut message = Message(String::new());
            event.record(&mut message);
            let level = *event.metadata().level();
            self.0.lock().unwrap().push((level, message.0));
        }
    }

    fn raw_put(store: &MemoryStore, port: u16) {
        let node = ServiceMetaInfo::new("svc", "127.0.0.1", port);
        let path = KeySpace::default().node_path(&node);
        store
            .put(&path, &serde_json::to_vec(&node).unwrap(), None)
            .unwrap();
    }

    /// One warning per outage, however many rewatches and relists fail during it, and one
    /// "watch restored" when it ends.
    #[tokio::test(start_paused = true)]
    async fn an_outage_is_one_warning_then_debug_then_restored() {
        let logged = Logged::default();
        let _default =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
        let store = MemoryStore::new();
        let options = RegistryOptions::default()
            .with_timeout(Duration::from_secs(2))
            .with_retry(Duration::from_millis(20), Duration::from_millis(200))
            .with_relist_cooldown(Duration::from_millis(50));
        let consumer = Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap();
        raw_put(&store, 1);
        assert_eq!(consumer.discover("svc:1.0").await.unwrap().len(), 1);

        store.set_down(true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // History lost while down: after the outage the resumed watch must relist.
        raw_put(&store, 2);
        store.compact(store.revision());
        let warned = |m| logged.count(Level::WARN, m);
        let debugged = |m| logged.count(Level::DEBUG, m);
        let failed = "watch failed, serving cached nodes and watching again";
        assert_eq!(warned(failed), 1);
        assert!(debugged(failed) > 5, "{}", debugged(failed));
        assert_eq!(logged.count(Level::INFO, "watch restored"), 0);

        store.set_down(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(consumer.cached("svc:1.0").unwrap().len(), 2, "relisted");
        assert_eq!(warned("watch history lost, relisting"), 0);
        assert_eq!(debugged("watch history lost, relisting"), 1);
        assert_eq!(logged.count(Level::INFO, "watch restored"), 1);

        // A later outage is a new episode: warned again.
        store.set_down(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(warned(failed), 2);
        consumer.shutdown().await.ok();
    }

    /// A watch that comes back on a quiet service (nothing to replay, no event) is restored
    /// after one request timeout.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_watch_is_restored_after_a_timeout() {
        let logged = Logged::default();
        let _default =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
        let store = MemoryStore::new();
        let options = RegistryOptions::default()
            .with_timeout(Duration::from_secs(2))
            .with_retry(Duration::from_millis(20), Duration::from_millis(200));
        let consumer = Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap();
        assert!(consumer.discover("svc:1.0").await.is_err(), "no node");
        store.set_down(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.set_down(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(logged.count(Level::INFO, "watch restored"), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(logged.count(Level::INFO, "watch restored"), 1);
        consumer.shutdown().await.unwrap();
    }

    fn publishes(registry: &Registry, service: &str) -> u64 {
        registry.publishes(service).unwrap()
    }

    /// A lone change to a large service is published at once; a burst of changes to it is
    /// published a few times, not once per change, and its last change within the hold.
    #[tokio::test(start_paused = true)]
    async fn a_burst_on_a_large_service_is_published_in_a_few_steps() {
        let store = MemoryStore::new();
        let consumer = Registry::new(
            Arc::new(MemoryBackend::new(store.clone())),
            RegistryOptions::default(),
        )
        .unwrap();
        let big = 1000;
        for port in 1..=big {
            raw_put(&store, port);
        }
        assert_eq!(consumer.discover("svc:1.0").await.unwrap().len(), 1000);
        let hold = publish_hold(1000);
        assert_eq!(hold, Duration::from_millis(1));
        tokio::time::sleep(hold * 2).await;

        // Alone: published without waiting for any hold (the clock does not move).
        let before = publishes(&consumer, "svc:1.0");
        raw_put(&store, big + 1);
        let started = Instant::now();
        while consumer.cached("svc:1.0").unwrap().len() < 1001 {
            tokio::task::yield_now().await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(publishes(&consumer, "svc:1.0"), before + 1);

        // A burst: 200 changes, each in its own batch, within one hold.
        tokio::time::sleep(hold * 2).await;
        let before = publishes(&consumer, "svc:1.0");
        for port in big + 2..big + 202 {
            raw_put(&store, port);
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        while consumer.cached("svc:1.0").unwrap().len() < 1201 {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        // (Plus the timer's millisecond steps: the hold's and this loop's.)
        assert!(
            started.elapsed() <= publish_hold(1200) + Duration::from_millis(2),
            "{:?}",
            started.elapsed()
        );
        let published = publishes(&consumer, "svc:1.0") - before;
        assert!(
            (1..=3).contains(&published),
            "{published} publishes for 200 changes"
        );
        consumer.shutdown().await.unwrap();
    }

    /// A provider's watch of its own service builds no served list until something in the
    /// process reads it; the first reader gets the current nodes, later changes are published.
    #[tokio::test(start_paused = true)]
    async fn a_served_list_nobody_reads_is_not_built() {
        let provider = Registry::new(
            Arc::new(MemoryBackend::new(MemoryStore::new())),
            RegistryOptions::default(),
        )
        .unwrap();
        let node = |port| ServiceMetaInfo::new("svc", "127.0.0.1", port);
        provider.register(node(1)).await.unwrap();
        // The own-service watch starts in the background.
        while provider.publishes("svc:1.0").is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for port in 2..=300 {
            provider.register(node(port)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(provider.publishes("svc:1.0"), Some(1), "nothing published");
        assert!(provider.cached("svc:1.0").is_none(), "not discovered here");

        let nodes = provider.discover("svc:1.0").await.unwrap();
        assert_eq!(nodes.len(), 300, "built from the current truth");
        provider.register(node(301)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            provider.cached("svc:1.0").unwrap().len(),
            301,
            "published once read"
        );
        provider.shutdown().await.unwrap();
    }

    #[test]
    fn small_services_are_never_held_and_large_ones_at_most_max_hold() {
        assert_eq!(publish_hold(0), Duration::ZERO);
        assert_eq!(publish_hold(HOLD_FROM - 1), Duration::ZERO);
        assert_eq!(publish_hold(HOLD_FROM), Duration::from_micros(256));
        assert_eq!(publish_hold(10_000_000), MAX_HOLD);
    }

    /// The memory backend whose first service watch ends its first event with a lost history
    /// (both ready at once, as a burst that overran a buffer delivers them), then stays quiet.
    struct LosesHistory {
        inner: MemoryBackend,
        lists: std::sync::atomic::AtomicUsize,
        watches: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Backend for LosesHistory {
        fn name(&self) -> &'static str {
            self.inner.name()
        }
        async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
            self.inner.put(key, value, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<(), BackendError> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
            if !prefix.contains("~overrides") {
                self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            self.inner.list(prefix).await
        }
        fn watch(
            &self,
            prefix: &str,
            after: crate::backend::Revision,
        ) -> crate::backend::WatchStream {
            let inner = self.inner.watch(prefix, after);
            if prefix.contains("~overrides")
                || self
                    .watches
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    > 0
            {
                return inner;
            }
            let lost = BackendError::HistoryLost {
                reason: "test: fell behind".into(),
            };
            inner
                .take(1)
                .chain(futures::stream::iter([Err(lost)]))
                .chain(futures::stream::pending())
                .boxed()
        }
        async fn keep_alive(
            &self,
            keys: &[String],
            ttl: Duration,
        ) -> Result<crate::backend::Liveness, BackendError> {
            self.inner.keep_alive(keys, ttl).await
        }
        async fn health(&self) -> Result<(), BackendError> {
            self.inner.health().await
        }
        async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
            self.inner.close(keys).await
        }
    }

    /// A lost history that arrives right behind an event (in the same batch) is not dropped
    /// with the batch: the event is applied and the service listed again.
    #[tokio::test(start_paused = true)]
    async fn an_error_behind_a_batch_is_not_lost() {
        let store = MemoryStore::new();
        let backend = Arc::new(LosesHistory {
            inner: MemoryBackend::new(store.clone()),
            lists: Default::default(),
            watches: Default::default(),
        });
        let options = RegistryOptions::default().with_relist_cooldown(Duration::from_millis(50));
        let consumer = Registry::new(backend.clone(), options).unwrap();
        raw_put(&store, 1);
        assert_eq!(consumer.discover("svc:1.0").await.unwrap().len(), 1);
        let lists = || backend.lists.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(lists(), 1);
        raw_put(&store, 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            consumer.cached("svc:1.0").unwrap().len(),
            2,
            "the event applied"
        );
        assert_eq!(lists(), 2, "listed again for the lost history");
        // The new watch (after the relist) follows the store.
        raw_put(&store, 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(consumer.cached("svc:1.0").unwrap().len(), 3);
        consumer.shutdown().await.unwrap();
    }
}
