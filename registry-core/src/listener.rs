//! Listeners (the observer pattern): be told when a service's node list changes.
//!
//! A listener is subscribed per service key and receives the full current list together with
//! the diff from the list it saw last. Each listener runs in its own task fed by the cache entry
//! through a "latest value" channel: the cache never waits for a listener, and a listener that
//! falls behind is not dropped events from: it receives one change that goes from the list it
//! saw last to the current one, marked [`resync`](ServiceChange::resync).
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
use std::sync::Arc;

use tokio_util::sync::DropGuard;
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

/// Spawns the task of `listener` among `tasks`; `None` when the registry is shutting down.
pub(crate) fn spawn(
    service_key: Arc<str>,
    entry: &ServiceEntry,
    listener: Arc<dyn ServiceListener>,
    tasks: &Tasks,
) -> Option<Subscription> {
    let mut rx = entry.subscribe();
    let cancel = tasks.child_token();
    let guard = cancel.clone().drop_guard();
    let spawned = tasks.spawn(async move {
        let mut last: Option<Arc<Snapshot>> = None;
        loop {
            let current = rx.borrow_and_update().clone();
            deliver(&service_key, last.as_deref(), &current, &*listener);
            last = Some(current);
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    });
    spawned.then(|| Subscription { _guard: guard })
}

fn deliver(
    service_key: &Arc<str>,
    last: Option<&Snapshot>,
    current: &Snapshot,
    listener: &dyn ServiceListener,
) {
    let (diff, resync) = match last {
        None => (NodeDiff::between(&[], &current.nodes), true),
        Some(last) if last.generation == current.generation => return,
        Some(last) => (
            NodeDiff::between(&last.nodes, &current.nodes),
            current.generation > last.generation + 1,
        ),
    };
    let stale_changed = last.is_some_and(|l| l.stale != current.stale);
    if diff.is_empty() && last.is_some() && !stale_changed {
        return;
    }
    let change = ServiceChange {
        service_key: service_key.clone(),
        nodes: current.nodes.clone(),
        diff,
        resync,
        stale: current.stale,
    };
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| listener.on_change(&change))) {
        error!(
            service = %service_key,
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
