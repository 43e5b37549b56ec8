//! Expiry without keyspace notifications: the watching clients reap the nodes of expired
//! leases, and the same script call tells them whether the history they read is still there.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use registry_core::{BackendError, Revision};
use tokio::time::Instant;
use tracing::debug;

use crate::link::Link;
use crate::scripts::{meta_keys, report_rebase, revision, Scripts, MAX_CHANGES, REAP_BATCH};

/// The reaping clock and what the last reap saw, shared by one client's watches (one reaper
/// per client, not one per watched service).
pub(crate) struct Reaper {
    /// How often a watching client reaps expired nodes.
    pub(crate) every: Duration,
    /// The grace leases get on a new history (this client's TTL).
    grace: Duration,
    /// When this client last reaped.
    last: Mutex<Instant>,
    /// The newest reap's start and the store's revision it saw.
    observed: Mutex<Option<(Instant, Revision)>>,
}

impl Reaper {
    pub(crate) fn new(every: Duration, grace: Duration) -> Self {
        Reaper {
            every,
            grace,
            last: Mutex::new(Instant::now()),
            observed: Mutex::new(None),
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

    /// The store's revision as seen by a reap that started after `since`, if one did. Every
    /// change a watch read before `since` is at or below it, unless the store went back.
    pub(crate) fn revision_since(&self, since: Instant) -> Option<Revision> {
        let observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        observed.and_then(|(started, revision)| (started > since).then_some(revision))
    }

    /// Reaps the nodes of expired leases and checks that the history after `after` is still
    /// available.
    ///
    /// # Errors
    /// [`BackendError::HistoryLost`] when the store's revision is below `after` or the stream
    /// no longer starts right after it; the request's error otherwise.
    pub(crate) async fn reap(
        &self,
        scripts: &Scripts,
        link: &Link,
        after: Revision,
    ) -> Result<(), BackendError> {
        let mut invocation = scripts.reap.prepare_invoke();
        meta_keys(&mut invocation);
        invocation
            .arg(MAX_CHANGES)
            .arg(REAP_BATCH)
            .arg(self.grace.as_millis() as u64);
        let started = Instant::now();
        let (rebased, current, first, reaped): (Vec<Vec<u8>>, Vec<u8>, Vec<u8>, u64) = link
            .run(
                || "reap expired leases".into(),
                |mut conn, replid| async move { invocation.arg(&*replid).invoke_async(&mut conn).await },
            )
            .await?;
        report_rebase(&rebased);
        if reaped > 0 {
            debug!(reaped, "removed nodes whose lease expired");
        }
        let (current, first) = (revision(&current), revision(&first));
        {
            let mut observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
            if observed.is_none_or(|(newest, _)| newest < started) {
                *observed = Some((started, current));
            }
        }
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

/// The store's revision is below one already seen: the server lost its data (or the change
/// stream was restarted).
pub(crate) fn went_back(seen: Revision, current: Revision) -> BackendError {
    BackendError::HistoryLost {
        reason: format!(
            "the Redis revision went back from {seen} to {current}: the server lost its data \
             or the change stream was restarted"
        ),
    }
}
