//! A watch on a prefix: the change stream read with `XREAD BLOCK` from a revision.
//!
//! A watch opens its own connection (blocking reads must not hold up the shared one), checks
//! that the history after its revision is still in the stream, then reads the stream in
//! batches and keeps the changes under its prefix. Between reads it takes its turn at reaping
//! expired nodes, and checks that the store's revision did not go back.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Value};
use registry_core::backend::{watch_stream, with_timeout, WatchSource};
use registry_core::{BackendError, Revision, WatchEvent, WatchStream};
use tokio::time::Instant;
use tracing::warn;

pub(crate) use crate::reap::Reaper;

use crate::error::{classify, request};
use crate::reap::went_back;
use crate::scripts::{Scripts, CHANGES};
use crate::stream::{parse_change, revision_of, stream_entries};
use crate::NAME;

/// Entries read per `XREAD`.
const READ_BATCH: u64 = 1000;

/// What a watch needs from its client.
pub(crate) struct Context {
    /// Opens the watch's own connection.
    pub(crate) client: Client,
    /// The client's shared connection, for reaping.
    pub(crate) conn: ConnectionManager,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) reaper: Arc<Reaper>,
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
    /// The highest revision delivered (or the starting point).
    seen: Revision,
    /// When this watch last checked the store's revision.
    last_check: Instant,
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
    ctx.reaper
        .reap(&ctx.scripts, &mut reaper, ctx.timeout, after)
        .await?;
    Ok(ChangeStream {
        ctx,
        conn,
        cursor: format!("{after}-{}", u64::MAX),
        seen: after,
        last_check: Instant::now(),
    })
}

impl ChangeStream {
    /// One stream per client reaps in a given period; every stream checks the store's
    /// revision the reaper last saw against its own.
    async fn check(&mut self) -> Result<(), BackendError> {
        let ctx = &self.ctx;
        if self.last_check.elapsed() < ctx.reaper.every {
            return Ok(());
        }
        if ctx.reaper.due() {
            let mut conn = ctx.conn.clone();
            ctx.reaper
                .reap(&ctx.scripts, &mut conn, ctx.timeout, self.seen)
                .await?;
        }
        let store = ctx.reaper.store_revision();
        if store < self.seen {
            return Err(went_back(self.seen, store));
        }
        self.last_check = Instant::now();
        Ok(())
    }
}

impl WatchSource for ChangeStream {
    async fn next_batch(&mut self) -> Result<Option<Vec<WatchEvent>>, BackendError> {
        self.check().await?;
        let every = self.ctx.reaper.every;
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
                // Every revision has entries: a gap means the stream was trimmed past us, or
                // the revisions jumped (a re-based counter, a stray entry with a large id).
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
                None => warn!(revision, "skipping a malformed entry of the change stream"),
            }
        }
        Ok(Some(batch))
    }
}
