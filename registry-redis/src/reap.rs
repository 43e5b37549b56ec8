//! Expiry without keyspace notifications: the watching clients reap expired nodes, and the
//! same script call tells them whether the history they read is still there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use registry_core::{BackendError, Revision};
use tokio::time::Instant;
use tracing::debug;

use crate::error::request;
use crate::scripts::{meta_keys, report_rebase, revision, Scripts, MAX_CHANGES, REAP_BATCH};

/// The reaping clock and the store's revision, shared by one client's watches (one reaper
/// per client, not one per watched service).
pub(crate) struct Reaper {
    /// How often a watching client reaps expired nodes.
    pub(crate) every: Duration,
    /// When this client last reaped.
    last: Mutex<Instant>,
    /// The store's revision as the last reap saw it (`u64::MAX` before the first).
    store_revision: AtomicU64,
}

impl Reaper {
    pub(crate) fn new(every: Duration) -> Self {
        Reaper {
            every,
            last: Mutex::new(Instant::now()),
            store_revision: AtomicU64::new(u64::MAX),
        }
    }

    /// True (and the shared clock reset) when this client's reaping is due.
    pub(crate) fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.elapsed() >= self.every {
            *last = Instant::now();
            true
        } else {
            false
        }
    }

    /// The store's revision as the last reap saw it (`u64::MAX` before the first).
    pub(crate) fn store_revision(&self) -> Revision {
        self.store_revision.load(Ordering::Acquire)
    }

    /// Reaps expired nodes and checks that the history after `after` is still available.
    ///
    /// # Errors
    /// [`BackendError::HistoryLost`] when the store's revision is below `after` or the stream
    /// no longer starts right after it; the request's error otherwise.
    pub(crate) async fn reap(
        &self,
        scripts: &Scripts,
        conn: &mut ConnectionManager,
        timeout: Duration,
        after: Revision,
    ) -> Result<(), BackendError> {
        let mut invocation = scripts.reap.prepare_invoke();
        meta_keys(&mut invocation);
        invocation.arg(MAX_CHANGES).arg(REAP_BATCH);
        let (rebased, current, first, reaped): (Vec<Vec<u8>>, Vec<u8>, Vec<u8>, u64) = request(
            timeout,
            || "reap expired nodes".into(),
            invocation.invoke_async(conn),
        )
        .await?;
        report_rebase(&rebased);
        let (current, first) = (revision(&current), revision(&first));
        if reaped > 0 {
            debug!(reaped, "removed nodes whose deadline passed");
        }
        self.store_revision.store(current, Ordering::Release);
        if current < after {
            return Err(went_back(after, current));
        }
        if first > after.saturating_add(1) {
            return Err(BackendError::HistoryLost {
                reason: format!("changes after revision {after} were trimmed from the stream"),
            });
        }
        Ok(())
    }
}

/// The store's revision is below one already seen: the server lost its data.
pub(crate) fn went_back(seen: Revision, current: Revision) -> BackendError {
    BackendError::HistoryLost {
        reason: format!(
            "the Redis revision went back from {seen} to {current}: the server lost its data"
        ),
    }
}
