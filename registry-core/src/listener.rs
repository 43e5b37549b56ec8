//! Listeners (the observer pattern) and streams: be told when a service's node list changes.
//!
//! A listener is subscribed per service key and receives the full current list together with
//! the diff from the list it saw last. Each listener runs in its own task fed by the cache entry
//! through a "latest value" channel: the cache never waits for a listener, and a listener that
//! falls behind is not dropped events from: it receives one change that goes from the list it
//! saw last to the current one, marked [`resync`](ServiceChange::resync).
//!
//! The same changes come as a [`Stream`] from [`Registry::watch`](crate::Registry::watch): a
//! [`ServiceWatch`], read from the same cache entry with the same folding (a listener's task is
//! such a stream calling the listener). Pick the stream to pull with `select!` or stream
//! combinators, a listener to be called.
//!
//! ```no_run
//! # async fn demo(registry: registry_core::Registry) -> Result<(), registry_core::RegistryError> {
//! use registry_core::ServiceChange;
//!
//! let subscription = registry
//!     .subscribe("user-service:1.0", |change: &ServiceChange| {
//!         for node in &change.diff.removed {
//!             println!("{} left {}", node.address(), change.service_key);
//!         }
//!     })
//!     .await?;
//! // ... later: dropping the subscription stops the listener.
//! drop(subscription);
//! # Ok(()) }
//! ```

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::FusedStream;
use futures::{Stream, StreamExt as _};
use tokio_util::sync::{CancellationToken, DropGuard, ReusableBoxFuture};
use tracing::error;

use crate::cache::{Node, NodeDiff, ServiceEntry, Snapshot};
use crate::tasks::Tasks;

/// One change of a service's node list, as delivered to a [`ServiceListener`].
#[derive(Clone, Debug)]
pub struct ServiceChange {
    /// The service key.
    pub service_key: Arc<str>,
    /// The full current list.
    pub nodes: Arc<[Node]>,
    /// What changed since the list this listener saw last.
    pub diff: NodeDiff,
    /// True for the first delivery (every node as added) and when the listener fell behind and
    /// several changes were folded into this one.
    pub resync: bool,
    /// True when the store shows no node and `nodes` are the last known ones kept by the
    /// empty protection.
    pub stale: bool,
}

/// Receives the changes of one service.
///
/// Called from the listener's own task: a slow listener delays only itself. It should not block
/// for long (it occupies a runtime worker meanwhile); forward to a channel for heavy work.
/// A panic in a listener is caught and logged; the listener keeps receiving changes.
pub trait ServiceListener: Send + Sync + 'static {
    /// Called with each change.
    fn on_change(&self, change: &ServiceChange);
}

impl<F> ServiceListener for F
where
    F: Fn(&ServiceChange) + Send + Sync + 'static,
{
    fn on_change(&self, change: &ServiceChange) {
        self(change)
    }
}

/// Keeps a listener subscribed; dropping it (or calling [`cancel`](Self::cancel)) unsubscribes.
#[derive(Debug)]
#[must_use = "dropping the subscription unsubscribes the listener"]
pub struct Subscription {
    _guard: DropGuard,
}

impl Subscription {
    /// Unsubscribes now.
    pub fn cancel(self) {}
}

/// The changes of one service as a [`Stream`], from [`Registry::watch`](crate::Registry::watch)
/// and [`Registry::watch_all`](crate::Registry::watch_all): what a [`ServiceListener`] is
/// called with, for code that prefers to pull.
///
/// The first item is the current list, every node as added and marked
/// [`resync`](ServiceChange::resync). Each later item is one change of the served list. The
/// stream reads the cache entry's latest value, so it never holds a backlog: a consumer that
/// falls behind (or does not poll for a while) gets one change that goes from the list it saw
/// last to the current one, marked `resync`. It never fails, and ends when the registry shuts
/// down or its last clone is dropped. Dropping the stream costs nothing to the registry.
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt as _;
/// use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), registry_core::RegistryError> {
/// let registry = Registry::new(
///     Arc::new(MemoryBackend::new(MemoryStore::new())),
///     RegistryOptions::default(),
/// )?;
/// let mut changes = registry.watch("users:1.0").await?;
/// assert_eq!(changes.service_key(), "users:1.0");
/// let first = changes.next().await.expect("the current list");
/// assert!(first.nodes.is_empty() && first.resync);
///
/// registry.register(ServiceMetaInfo::new("users", "127.0.0.1", 8080)).await?;
/// let change = changes.next().await.expect("the registration");
/// assert_eq!(change.diff.added[0].address(), "127.0.0.1:8080");
///
/// registry.shutdown().await?;
/// assert!(changes.next().await.is_none(), "ends with the registry");
/// # Ok(()) }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct ServiceWatch {
    service_key: Arc<str>,
    /// The pending read of the next change; one allocation, reused for every item.
    next: ReusableBoxFuture<'static, (Option<ServiceChange>, Follower)>,
    ended: bool,
}

impl ServiceWatch {
    /// The changes of `entry`, until `cancel` fires or the entry goes.
    pub(crate) fn new(
        service_key: Arc<str>,
        entry: &ServiceEntry,
        cancel: CancellationToken,
    ) -> Self {
        let follower = Follower {
            service_key: service_key.clone(),
            backend: entry.backend,
            rx: entry.subscribe(),
            last: None,
            cancel,
        };
        Self {
            service_key,
            next: ReusableBoxFuture::new(follower.into_next()),
            ended: false,
        }
    }

    /// The service key watched (empty for [`Registry::watch_all`](crate::Registry::watch_all)).
    pub fn service_key(&self) -> &str {
        &self.service_key
    }
}

impl std::fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatch")
            .field("service_key", &self.service_key)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Stream for ServiceWatch {
    type Item = ServiceChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServiceChange>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let (change, follower) = std::task::ready!(self.next.poll(cx));
        match change {
            Some(change) => {
                self.next.set(follower.into_next());
                Poll::Ready(Some(change))
            }
            None => {
                self.ended = true;
                Poll::Ready(None)
            }
        }
    }
}

impl FusedStream for ServiceWatch {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

/// Follows one cache entry's latest value and folds what it missed into one change: the one
/// implementation behind both [`ServiceWatch`] and the listener tasks.
struct Follower {
    service_key: Arc<str>,
    backend: &'static str,
    rx: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    last: Option<Arc<Snapshot>>,
    cancel: CancellationToken,
}

impl Follower {
    /// The next change, or `None` when the registry stopped (or the entry went).
    async fn next(&mut self) -> Option<ServiceChange> {
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            if self.last.is_some() {
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return None,
                    changed = self.rx.changed() => changed.ok()?,
                }
            }
            let current = self.rx.borrow_and_update().clone();
            let change = change_between(&self.service_key, self.last.as_deref(), &current);
            let published_at = current.published_at;
            self.last = Some(current);
            if change.is_some() {
                crate::metrics::event_to_listener(self.backend, published_at.elapsed());
                return change;
            }
        }
    }

    async fn into_next(mut self) -> (Option<ServiceChange>, Self) {
        let change = self.next().await;
        (change, self)
    }
}

/// The change from `last` (the list seen last, `None` at first) to `current`, or `None` when
/// nothing a listener sees changed.
fn change_between(
    service_key: &Arc<str>,
    last: Option<&Snapshot>,
    current: &Snapshot,
) -> Option<ServiceChange> {
    let (diff, resync) = match last {
        None => (NodeDiff::between(&[], &current.nodes), true),
        Some(last) if last.generation == current.generation => return None,
        Some(last) => (
            NodeDiff::between(&last.nodes, &current.nodes),
            current.generation > last.generation + 1,
        ),
    };
    let stale_changed = last.is_some_and(|l| l.stale != current.stale);
    if diff.is_empty() && last.is_some() && !stale_changed {
        return None;
    }
    Some(ServiceChange {
        service_key: service_key.clone(),
        nodes: current.nodes.clone(),
        diff,
        resync,
        stale: current.stale,
    })
}

/// Spawns the task of `listener` among `tasks`, fed by a [`ServiceWatch`] of `entry`; `None`
/// when the registry is shutting down.
pub(crate) fn spawn(
    service_key: Arc<str>,
    entry: &ServiceEntry,
    listener: Arc<dyn ServiceListener>,
    tasks: &Tasks,
) -> Option<Subscription> {
    let cancel = tasks.child_token();
    let guard = cancel.clone().drop_guard();
    let mut changes = ServiceWatch::new(service_key, entry, cancel);
    let spawned = tasks.spawn(async move {
        while let Some(change) = changes.next().await {
            deliver(&change, &*listener);
        }
    });
    spawned.then(|| Subscription { _guard: guard })
}

fn deliver(change: &ServiceChange, listener: &dyn ServiceListener) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| listener.on_change(change))) {
        error!(
            service = %change.service_key,
            panic = panic_message(&*panic),
            "a service listener panicked; it stays subscribed"
        );
    }
}

/// The message of a panic payload (`panic!("...")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(not a string)"
    }
}
