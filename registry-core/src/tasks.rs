//! The background tasks of one registry (heartbeat, watchers, listeners, the own-service watch),
//! spawned, cancelled and awaited together.
//!
//! Every task is spawned through [`Tasks`], which tracks it with a `TaskTracker` and hands it
//! a child of one cancellation token. [`Tasks::stop`] cancels them all and waits (bounded) until
//! they have ended, so a graceful shutdown leaves no task of the registry behind. A spawn that
//! races with the stop is refused: it either happens before the stop (and is awaited) or not at
//! all.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tracked tasks of one registry and the token that stops them.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// Held while spawning and while cancelling, so no task starts after the cancellation.
    gate: Mutex<()>,
}

impl Tasks {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A token cancelled when the tasks stop (or earlier, by its owner).
    pub(crate) fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Whether the tasks were told to stop.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Spawns `task` on the current runtime, tracked. Returns false (and drops `task`) when the
    /// tasks were already told to stop.
    pub(crate) fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_with(task, |tracker, task| {
            tracker.spawn(task);
        })
    }

    /// Spawns `task` on `runtime`, tracked; as [`Self::spawn`].
    pub(crate) fn spawn_on<F>(&self, task: F, runtime: &tokio::runtime::Handle) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_with(task, |tracker, task| {
            tracker.spawn_on(task, runtime);
        })
    }

    fn spawn_with<F>(&self, task: F, spawn: impl FnOnce(&TaskTracker, F)) -> bool {
        let _gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        if self.cancel.is_cancelled() {
            return false;
        }
        spawn(&self.tracker, task);
        true
    }

    /// Tells every task to stop and refuses new ones; does not wait.
    pub(crate) fn cancel(&self) {
        let _gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.cancel.cancel();
        self.tracker.close();
    }

    /// Tells every task to stop and waits until they all ended, at most `within`. Returns how
    /// many are still running then (a listener that blocks in its callback keeps its task).
    pub(crate) async fn stop(&self, within: Duration) -> usize {
        self.cancel();
        match tokio::time::timeout(within, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.running(),
        }
    }

    /// Tasks not ended yet.
    pub(crate) fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_waits_for_tasks_and_refuses_new_ones() {
        let tasks = Tasks::new();
        let token = tasks.child_token();
        assert!(tasks.spawn(async move { token.cancelled().await }));
        // A task that does not look at its token finishes on its own time.
        assert!(tasks.spawn(tokio::time::sleep(Duration::from_secs(1))));
        assert_eq!(tasks.running(), 2);
        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0);
        assert_eq!(tasks.running(), 0);
        assert!(!tasks.spawn(async {}), "no task starts after the stop");
        assert!(tasks.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_is_bounded() {
        let tasks = Tasks::new();
        assert!(tasks.spawn(tokio::time::sleep(Duration::from_secs(60))));
        assert_eq!(tasks.stop(Duration::from_secs(1)).await, 1);
    }
}
