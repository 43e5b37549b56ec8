//! The one task per cached service that keeps its entry current.
//!
//! States: *watching from revision R* -> (event) apply, stay; (transient error or end of stream)
//! back off, watch again from R; (history lost, or a relist asked by an eviction) wait a jittered
//! cooldown, list, swap the list in, watch from the listing's revision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::state::Cause;
use super::ServiceEntry;
use crate::backend::{Backend, BackendError, Listing, WatchEvent};
use crate::backoff::{jitter, Backoff};
use crate::options::RegistryOptions;
use crate::truth::TruthObserver;
use crate::util::{error_chain, sleep_or_cancel, timed};

/// Most events applied before one publish, when a burst is already waiting in the stream.
const MAX_BATCH: usize = 1024;

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
    // The first batch after a broken watch carries what happened during the outage: it is
    // applied as a resync, so the empty protection covers a mass expiry seen on reconnect.
    let mut resumed = false;
    loop {
        let revision = entry.lock().revision();
        // Watch from the last revision itself, not after it: a watch that broke in the middle
        // of a multi-key revision replays that revision whole (re-applying is harmless).
        let mut stream = backend.watch(&prefix, revision.saturating_sub(1));
        debug!(%service, revision, "watching");
        let next = loop {
            let deadline = entry.lock().next_eviction_deadline();
            let eviction_over = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = entry.relist.notified() => break Next::Relist { cooldown: false },
                () = eviction_over => {
                    let mut state = entry.lock();
                    if state.republish(Cause::Event, Instant::now()).is_some() {
                        entry.publish(&state);
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        backoff.reset();
                        let mut batch = vec![event];
                        while batch.len() < MAX_BATCH {
                            match stream.next().now_or_never() {
                                Some(Some(Ok(event))) => batch.push(event),
                                _ => break,
                            }
                        }
                        let cause = if std::mem::take(&mut resumed) { Cause::Resync } else { Cause::Event };
                        apply(&entry, &batch, &*observer, cause);
                    }
                    Some(Err(BackendError::HistoryLost { reason })) => {
                        warn!(%service, %reason, "watch history lost, relisting");
                        break Next::Relist { cooldown: true };
                    }
                    Some(Err(error)) => {
                        warn!(%service, error = %error_chain(&error), "watch failed, serving cached nodes and watching again");
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
        let pause = match next {
            Next::Rewatch => {
                resumed = true;
                backoff.next_delay()
            }
            Next::Relist { cooldown } => {
                if cooldown && !sleep_or_cancel(jitter(options.relist_cooldown), &cancel).await {
                    return;
                }
                if !relist(&entry, &*backend, &options, &*observer, &prefix, &cancel).await {
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

fn apply(entry: &ServiceEntry, batch: &[WatchEvent], observer: &dyn TruthObserver, cause: Cause) {
    let mut state = entry.lock();
    let mut changed = false;
    for event in batch {
        changed |= state.apply(event);
        match event {
            WatchEvent::Put { kv, .. } => observer.seen(&kv.key),
            WatchEvent::Delete { key, .. } => observer.gone(key),
        }
    }
    if changed && state.republish(cause, Instant::now()).is_some() {
        entry.publish(&state);
    }
}

/// Lists until it succeeds (or the registry stops), then swaps the listing in.
/// Returns false when cancelled.
async fn relist(
    entry: &ServiceEntry,
    backend: &dyn Backend,
    options: &RegistryOptions,
    observer: &dyn TruthObserver,
    prefix: &str,
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
                let mut state = entry.lock();
                if state.relist(&listing, Instant::now()).is_some() {
                    entry.publish(&state);
                }
                observer.listed(prefix, &|key| state.holds(key));
                debug!(%prefix, revision = listing.revision, "relisted");
                return true;
            }
            Err(error) => {
                warn!(%prefix, error = %error_chain(&error), "relist failed, serving cached nodes and retrying");
                if !sleep_or_cancel(backoff.next_delay(), cancel).await {
                    return false;
                }
            }
        }
    }
}
