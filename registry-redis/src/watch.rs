//! A watch on a prefix: the change stream from a revision.
//!
//! A watch checks that the history after its revision is still in the stream (the reap
//! script reports the store's revision and the stream's first entry), joins the client's
//! stream reader (see `hub`), then catches up with the entries written after its revision
//! (`XRANGE` on the shared connection, to the stream's end): what the reader reads from then
//! on follows on, or overlaps (skipped by revision). It keeps the changes under its prefix
//! (the reader hands it only the batches with one, and every batch after a gap).
//!
//! Every revision has entries, so a revision more than one above the last one seen is a gap:
//! the stream was trimmed past the watch, or the revisions jumped (a re-based counter, a
//! stray entry with a large id). Either way the watch asks for a relist; the listing's
//! revision is at or above the jump (see `current_revision` in `prelude.lua`), so the
//! next watch goes on from there. An entry that records no change (unknown `op`, missing
//! fields) is skipped, with one warning per client for the newest such entry.
//!
//! A watch also checks that it reads the history its revision came from: the catch-up must
//! come from a server with the replication id of the server the prefix was listed on, and
//! the reader's server must keep the replication id of the server the client writes to.
//! Another id is another history (a promoted replica that may lack the last writes, a
//! restarted server): the watch asks for a relist, even when the revisions happen to line up
//! again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Value;
use registry_core::backend::{watch_stream, WatchSource};
use registry_core::{BackendError, Revision, WatchEvent, WatchStream};
use tracing::{debug, warn};

use crate::hub::{self, Feed, Reader, READ_BATCH};
use crate::link::Link;
use crate::reap::Reaper;
use crate::scripts::{Scripts, CHANGES};
use crate::stream::{batches, range_entries, Batch, Entry};

/// Whether two replication ids name different histories (an empty one: not known).
pub(crate) fn other_history(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && a != b
}

/// The watch's server has another replication history than the one its revision came from.
pub(crate) fn changed_history(what: &str) -> BackendError {
    BackendError::HistoryLost {
        reason: format!(
            "another Redis replication history ({what}: a failover or a restart); \
             replication is asynchronous, so writes seen before may be lost"
        ),
    }
}

/// What one client's watches share.
pub(crate) struct Shared {
    pub(crate) reaper: Reaper,
    /// The revision of the newest malformed entry a warning was logged for.
    warned: AtomicU64,
    /// Per listed prefix, the replication id of the server of its last listing.
    listed: Mutex<HashMap<String, Arc<str>>>,
    /// The client's stream reader, while one runs.
    pub(crate) hub: Mutex<Option<Arc<hub::Hub>>>,
}

impl Shared {
    /// State for a client that reaps every `reap_every`, its lease's TTL `ttl`.
    pub(crate) fn new(reap_every: Duration, ttl: Duration) -> Self {
        Shared {
            reaper: Reaper::new(reap_every, ttl),
            warned: AtomicU64::new(0),
            listed: Mutex::new(HashMap::new()),
            hub: Mutex::new(None),
        }
    }

    /// `prefix` was listed on the server with replication id `replid`.
    pub(crate) fn listed(&self, prefix: &str, replid: Arc<str>) {
        let mut listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
        listed.insert(prefix.to_owned(), replid);
    }

    /// The replication id `prefix` was last listed on, or (not listed) `replid`, now its own.
    fn listed_on(&self, prefix: &str, replid: &Arc<str>) -> Arc<str> {
        let mut listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            listed
                .entry(prefix.to_owned())
                .or_insert_with(|| Arc::clone(replid)),
        )
    }

    /// Warns about a malformed entry once per client (by its revision), not once per watch.
    pub(crate) fn malformed(&self, id: &str, revision: Revision) {
        if self.warned.fetch_max(revision, Ordering::AcqRel) < revision {
            warn!(%id, "skipping a malformed entry of the change stream (not written by the registry)");
        } else {
            debug!(%id, "skipping a malformed entry of the change stream");
        }
    }
}

/// What a watch needs from its client.
pub(crate) struct Context {
    /// The client's shared connection (for the history check and the catch-up), and where
    /// the primary is (for the reader's connection).
    pub(crate) link: Arc<Link>,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
}

/// The stream of changes under `ctx.prefix` after `after`.
pub(crate) fn watch(ctx: Context, after: Revision) -> WatchStream {
    watch_stream(open(ctx, after))
}

/// An open watch: what the reader hands it, and where it is in the stream.
struct ChangeStream {
    prefix: String,
    feed: Feed,
    /// The highest revision seen (or the starting point).
    seen: Revision,
    /// The changes of the catch-up, delivered first.
    caught_up: Option<Vec<WatchEvent>>,
}

async fn open(ctx: Context, after: Revision) -> Result<ChangeStream, BackendError> {
    // The history after `after` must still be there, and the revision not gone back.
    ctx.shared
        .reaper
        .reap(&ctx.scripts, &ctx.link, after)
        .await?;
    // Join first: the catch-up then reaches at least as far as where the reader goes on.
    let feed = hub::join(
        Reader {
            link: Arc::clone(&ctx.link),
            scripts: Arc::clone(&ctx.scripts),
            shared: Arc::clone(&ctx.shared),
            timeout: ctx.timeout,
        },
        &ctx.prefix,
        after,
    );
    let (entries, replid) = catch_up(&ctx, after).await?;
    let listed_on = ctx.shared.listed_on(&ctx.prefix, &replid);
    if other_history(&listed_on, &replid) {
        return Err(changed_history(
            "the server this watch reads is not the one this service was listed from",
        ));
    }
    let mut stream = ChangeStream {
        prefix: ctx.prefix,
        feed,
        seen: after,
        caught_up: None,
    };
    let mut events = Vec::new();
    for batch in batches(entries, &ctx.shared) {
        events.extend(stream.accept(&batch)?);
    }
    stream.caught_up = Some(events);
    Ok(stream)
}

/// The stream's entries after revision `after`, to its end, with the replication id of the
/// server they came from.
async fn catch_up(ctx: &Context, after: Revision) -> Result<(Vec<Entry>, Arc<str>), BackendError> {
    let mut entries = Vec::new();
    let mut start = format!("{}-0", after.saturating_add(1));
    let mut server: Option<Arc<str>> = None;
    loop {
        let mut command = redis::cmd("XRANGE");
        command
            .arg(CHANGES)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH);
        let (reply, replid) = ctx
            .link
            .run_traced(
                || "watch (catching up)".into(),
                |mut conn, _| async move { command.query_async::<Value>(&mut conn).await },
            )
            .await?;
        if server.as_ref().is_some_and(|s| other_history(s, &replid)) {
            return Err(changed_history("the server changed while catching up"));
        }
        server = Some(replid);
        let read = range_entries(reply);
        let full = read.len() as u64 >= READ_BATCH;
        if let Some((id, _)) = read.last() {
            // Exclusive start after the last id read.
            start = format!("({id}");
        }
        entries.extend(read);
        if !full {
            return Ok((entries, server.unwrap_or_else(|| Arc::from(""))));
        }
    }
}

impl ChangeStream {
    /// The changes under the prefix of a batch of consecutive revisions, those not seen yet.
    ///
    /// # Errors
    /// [`BackendError::HistoryLost`] when the batch may not follow on what was seen (see
    /// [`Batch::gap`]) and does not.
    fn accept(&mut self, batch: &Batch) -> Result<Vec<WatchEvent>, BackendError> {
        if batch.last <= self.seen {
            return Ok(Vec::new());
        }
        if batch.gap && batch.first > self.seen.saturating_add(1) {
            let (seen, first) = (self.seen, batch.first);
            return Err(BackendError::HistoryLost {
                reason: format!(
                    "the change stream goes from revision {seen} to {first}: trimmed past \
                     this watch, or the revisions jumped"
                ),
            });
        }
        let events = batch
            .events
            .iter()
            .filter(|e| e.revision() > self.seen && e.key().starts_with(self.prefix.as_str()))
            .cloned()
            .collect();
        self.seen = batch.last;
        Ok(events)
    }
}

impl WatchSource for ChangeStream {
    async fn next_batch(&mut self) -> Result<Option<Vec<WatchEvent>>, BackendError> {
        if let Some(events) = self.caught_up.take() {
            return Ok(Some(events));
        }
        match self.feed.recv().await {
            Some(Ok(batch)) => self.accept(&batch).map(Some),
            Some(Err(error)) => Err(error),
            // The reader stopped: watch again.
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(key: &str, revision: Revision) -> WatchEvent {
        WatchEvent::Delete {
            key: key.to_owned(),
            revision,
        }
    }

    fn batch(first: Revision, last: Revision, events: Vec<WatchEvent>, gap: bool) -> Batch {
        Batch {
            first,
            last,
            events,
            gap,
        }
    }

    fn stream(prefix: &str, seen: Revision) -> ChangeStream {
        ChangeStream {
            prefix: prefix.to_owned(),
            feed: tokio::sync::mpsc::unbounded_channel().1,
            seen,
            caught_up: None,
        }
    }

    /// A batch the reader read right after the one before follows on, even when the watch
    /// was not handed the revisions between (they did not concern it).
    #[test]
    fn a_routed_batch_skips_revisions_of_other_services() {
        let mut watch = stream("/rpc/a:1.0/", 10);
        let events = watch
            .accept(&batch(
                20,
                21,
                vec![delete("/rpc/b:1.0/h:1", 20), delete("/rpc/a:1.0/h:1", 21)],
                false,
            ))
            .unwrap();
        assert_eq!(events, vec![delete("/rpc/a:1.0/h:1", 21)]);
        assert_eq!(watch.seen, 21);
    }

    /// A batch after a gap in the stream: a relist, unless the watch saw past it.
    #[test]
    fn a_batch_after_a_gap_asks_for_a_relist_unless_seen_past_it() {
        let mut behind = stream("/rpc/a:1.0/", 10);
        let after_gap = batch(20, 20, vec![delete("/rpc/b:1.0/h:1", 20)], true);
        assert!(matches!(
            behind.accept(&after_gap),
            Err(BackendError::HistoryLost { .. })
        ));
        let mut caught_up = stream("/rpc/a:1.0/", 19);
        assert_eq!(caught_up.accept(&after_gap).unwrap(), Vec::new());
        assert_eq!(caught_up.seen, 20);
    }
}
