//! A watch on a prefix: the change stream read with `XREAD BLOCK` from a revision.
//!
//! A watch opens its own connection (blocking reads must not hold up the shared one), checks
//! that the history after its revision is still in the stream, then reads the stream in
//! batches and keeps the changes under its prefix. Between reads it takes its turn at reaping
//! expired nodes, and checks that the store's revision did not go back.
//!
//! Every revision has entries, so a revision more than one above the last one seen is a gap:
//! the stream was trimmed past the watch, or the revisions jumped (a re-based counter, a
//! stray entry with a large id). Either way the watch asks for a relist; the listing's
//! revision is at or above the jump (see `current_revision` in `prelude.lua`), so the
//! next watch goes on from there. An entry that records no change (unknown `op`, missing
//! fields) is skipped, with one warning per client for the newest such entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Value};
use registry_core::backend::{watch_stream, with_timeout, WatchSource};
use registry_core::{BackendError, Revision, WatchEvent, WatchStream};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::{classify, request};
use crate::reap::{went_back, Reaper};
use crate::scripts::{Scripts, CHANGES};
use crate::stream::{parse_change, revision_of, stream_entries};
use crate::NAME;

/// Entries read per `XREAD`.
const READ_BATCH: u64 = 1000;

/// What one client's watches share.
pub(crate) struct Shared {
    reaper: Reaper,
    /// The revision of the newest malformed entry a warning was logged for.
    warned: AtomicU64,
}

impl Shared {
    /// State for a client that reaps every `reap_every`.
    pub(crate) fn new(reap_every: Duration) -> Self {
        Shared {
            reaper: Reaper::new(reap_every),
            warned: AtomicU64::new(0),
        }
    }

    /// Warns about a malformed entry once per client (by its revision), not once per watch.
    fn malformed(&self, id: &str, revision: Revision) {
        if self.warned.fetch_max(revision, Ordering::AcqRel) < revision {
            warn!(%id, "skipping a malformed entry of the change stream (not written by the registry)");
        } else {
            debug!(%id, "skipping a malformed entry of the change stream");
        }
    }
}

/// What a watch needs from its client.
pub(crate) struct Context {
    /// Opens the watch's own connection.
    pub(crate) client: Client,
    /// The client's shared connection, for reaping.
    pub(crate) conn: ConnectionManager,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
}

/// The stream of changes under `ctx.prefix` after `after`.
pub(crate) fn watch(ctx: Context, after: Revision) -> WatchStream {
    watch_stream(open(ctx, after))
}

/// An open watch: its connection and where it is in the stream.
struct ChangeStream {
    ctx: Context,
    conn: MultiplexedConnection,
    /// Stream id to read after.
    cursor: String,
    /// The highest revision read (or the starting point).
    seen: Revision,
    /// When this watch last checked the store's revision, and `seen` then.
    checked: (Instant, Revision),
}

async fn open(ctx: Context, after: Revision) -> Result<ChangeStream, BackendError> {
    // Blocking reads get their own connection, with no response timeout of the client's
    // (the block itself bounds each read).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ctx.timeout))
        .set_response_timeout(None);
    let connecting = ctx
        .client
        .get_multiplexed_async_connection_with_config(&config);
    let conn = request(ctx.timeout, || "watch".into(), connecting).await?;
    // Check the history first: the reap step verifies `after` is still covered.
    let mut reaper = ctx.conn.clone();
    ctx.shared
        .reaper
        .reap(&ctx.scripts, &mut reaper, ctx.timeout, after)
        .await?;
    Ok(ChangeStream {
        ctx,
        conn,
        cursor: format!("{after}-{}", u64::MAX),
        seen: after,
        checked: (Instant::now(), after),
    })
}

impl ChangeStream {
    /// Once per reaping period: reaps when it is this watch's turn (one reap per client per
    /// period), and checks that the store's revision did not go back below what this watch
    /// read. A reap by another watch counts only if it started after this watch's previous
    /// check: entries read since may be newer than what that reap saw.
    async fn check(&mut self) -> Result<(), BackendError> {
        let ctx = &self.ctx;
        let reaper = &ctx.shared.reaper;
        let (checked_at, checked_seen) = self.checked;
        if checked_at.elapsed() < reaper.every {
            return Ok(());
        }
        let now = Instant::now();
        if reaper.due() {
            let mut conn = ctx.conn.clone();
            reaper
                .reap(&ctx.scripts, &mut conn, ctx.timeout, self.seen)
                .await?;
        } else if let Some(store) = reaper.revision_since(checked_at) {
            if store < checked_seen {
                return Err(went_back(checked_seen, store));
            }
        }
        self.checked = (now, self.seen);
        Ok(())
    }
}

impl WatchSource for ChangeStream {
    async fn next_batch(&mut self) -> Result<Option<Vec<WatchEvent>>, BackendError> {
        self.check().await?;
        let every = self.ctx.shared.reaper.every;
        let block = every.as_millis().max(1) as u64;
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(CHANGES)
            .arg(&self.cursor);
        let read = command.query_async::<Value>(&mut self.conn);
        let reply = with_timeout(NAME, self.ctx.timeout + every, || "watch".into(), read)
            .await?
            .map_err(|e| classify(e, || "watch".into()))?;
        let mut batch = Vec::new();
        for (id, fields) in stream_entries(reply) {
            let revision = revision_of(&id);
            if revision > self.seen.saturating_add(1) {
                let seen = self.seen;
                return Err(BackendError::HistoryLost {
                    reason: format!(
                        "the change stream goes from revision {seen} to {revision} (entry {id}): \
                         trimmed past this watch, or the revisions jumped"
                    ),
                });
            }
            self.cursor = id;
            self.seen = self.seen.max(revision);
            match parse_change(&fields, revision) {
                Some(event) if event.key().starts_with(self.ctx.prefix.as_str()) => {
                    batch.push(event);
                }
                Some(_) => {}
                None => self.ctx.shared.malformed(&self.cursor, revision),
            }
        }
        Ok(Some(batch))
    }
}
