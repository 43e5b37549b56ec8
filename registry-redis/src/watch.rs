//! A watch on a prefix: the change stream read with `XREAD BLOCK` from a revision.
//!
//! A watch opens its own connection to the primary (blocking reads must not hold up the
//! shared one), checks that the history after its revision is still in the stream, then reads
//! the stream in batches and keeps the changes under its prefix. Between reads it takes its
//! turn at reaping expired leases, and checks that the store's revision did not go back.
//!
//! A watch also checks that it reads the history its revision came from: the replication id
//! of its server must be the one of the server the prefix was listed on, and stay the one of
//! the server the client's shared connection talks to. Another id is another history (a
//! promoted replica that may lack the last writes, a restarted server): the watch asks for a
//! relist, even when the revisions happen to line up again.
//!
//! Every revision has entries, so a revision more than one above the last one seen is a gap:
//! the stream was trimmed past the watch, or the revisions jumped (a re-based counter, a
//! stray entry with a large id). Either way the watch asks for a relist; the listing's
//! revision is at or above the jump (see `current_revision` in `prelude.lua`), so the
//! next watch goes on from there. An entry that records no change (unknown `op`, missing
//! fields) is skipped, with one warning per client for the newest such entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use registry_core::backend::{watch_stream, with_timeout, WatchSource};
use registry_core::{BackendError, Revision, WatchEvent, WatchStream};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::{classify, needs_reconnect, request};
use crate::link::{replication_id, Link};
use crate::reap::{went_back, Reaper};
use crate::scripts::{Scripts, CHANGES};
use crate::stream::{parse_change, revision_of, stream_entries};
use crate::NAME;

/// Entries read per `XREAD`.
const READ_BATCH: u64 = 1000;

/// Whether two replication ids name different histories (an empty one: not known).
fn other_history(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && a != b
}

/// What one client's watches share.
pub(crate) struct Shared {
    reaper: Reaper,
    /// The revision of the newest malformed entry a warning was logged for.
    warned: AtomicU64,
    /// Per listed prefix, the replication id of the server of its last listing.
    listed: Mutex<HashMap<String, Arc<str>>>,
}

impl Shared {
    /// State for a client that reaps every `reap_every`.
    pub(crate) fn new(reap_every: Duration) -> Self {
        Shared {
            reaper: Reaper::new(reap_every),
            warned: AtomicU64::new(0),
            listed: Mutex::new(HashMap::new()),
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
    /// The client's shared connection (for reaping), and where the primary is (for the
    /// watch's own connection).
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

/// An open watch: its connection and where it is in the stream.
struct ChangeStream {
    ctx: Context,
    conn: MultiplexedConnection,
    /// The server of `conn`, and its replication id.
    at: String,
    replid: Arc<str>,
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
    let connecting = async {
        let (mut conn, at) = ctx.link.locator().connect(&config, false).await?;
        let replid = replication_id(&mut conn).await;
        Ok((conn, at, replid))
    };
    let (conn, at, replid) = request(ctx.timeout, || "watch".into(), connecting).await?;
    let listed_on = ctx.shared.listed_on(&ctx.prefix, &replid);
    if other_history(&listed_on, &replid) {
        return Err(changed_history(
            "this service was listed on another one: it may lack the last changes seen",
        ));
    }
    // Check the history first: the reap step verifies `after` is still covered.
    ctx.shared
        .reaper
        .reap(&ctx.scripts, &ctx.link, after)
        .await?;
    Ok(ChangeStream {
        ctx,
        conn,
        at,
        replid,
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
        if other_history(&ctx.link.replid(), &self.replid) {
            return Err(changed_history(
                "this client now writes to a primary with another one",
            ));
        }
        let reaper = &ctx.shared.reaper;
        let (checked_at, checked_seen) = self.checked;
        if checked_at.elapsed() < reaper.every {
            return Ok(());
        }
        let now = Instant::now();
        if reaper.due() {
            reaper.reap(&ctx.scripts, &ctx.link, self.seen).await?;
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
        let reply =
            match with_timeout(NAME, self.ctx.timeout + every, || "watch".into(), read).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    if needs_reconnect(&e) {
                        self.ctx.link.locator().failed(&self.at, Some(&e));
                    }
                    return Err(classify(e, || "watch".into()));
                }
                Err(timeout) => {
                    self.ctx.link.locator().failed(&self.at, None);
                    return Err(timeout);
                }
            };
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

/// The watch's server has another replication history than the one its revision came from.
fn changed_history(what: &str) -> BackendError {
    BackendError::HistoryLost {
        reason: format!(
            "the Redis server this watch reads has another replication history ({what}): a \
             failover or a restart; replication is asynchronous, so the newest writes may be lost"
        ),
    }
}
