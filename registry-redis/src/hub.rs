//! The client's one reader of the change stream, shared by all its watches.
//!
//! A watch per service reading the whole stream on its own blocking connection costs Redis
//! and the client once per watch for every change: 200 watched services are 200 `XREAD`s woken
//! by each write. Instead each client runs one reader: a task with one blocking connection
//! that reads the stream in batches and hands each batch to the watches it concerns (those with
//! a change under their prefix): a change wakes one watch, not every watch of the client. The
//! reader checks that what it reads follows on (every revision has entries, so a revision more
//! than one above the last one read is a gap); a batch after a gap goes to every watch, which
//! asks for a relist unless it caught up past the gap itself. It starts with the first watch
//! and ends when the last one is dropped.
//!
//! Once per reaping period the reader takes the client's turn at reaping expired leases and
//! checks the history it reads: the store's revision must not have gone back below what it
//! read, and its server must still have the replication history of the server the client
//! writes to. A failed check, or a failed read, ends the reader: every watch gets the error
//! (a lost history asks for a relist, anything else for a new watch, which starts a new
//! reader).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use registry_core::backend::with_timeout;
use registry_core::{error_chain, BackendError, Revision};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::error::{classify, needs_reconnect, request};
use crate::link::{replication_id, Link};
use crate::reap::went_back;
use crate::scripts::{Scripts, CHANGES};
use crate::stream::{batches, stream_entries, Batch};
use crate::watch::{changed_history, Shared};
use crate::NAME;

/// Entries read per `XREAD`.
pub(crate) const READ_BATCH: u64 = 1000;

/// What the reader hands a watch: a batch, or the error that ended the reader.
pub(crate) type Feed = mpsc::UnboundedReceiver<Result<Arc<Batch>, BackendError>>;

/// One watch of the reader.
struct Subscriber {
    prefix: String,
    feed: mpsc::UnboundedSender<Result<Arc<Batch>, BackendError>>,
}

impl Subscriber {
    /// Whether the watch gets `batch`: after a gap, or when a change is under its prefix.
    fn concerned(&self, batch: &Batch) -> bool {
        batch.gap
            || batch
                .events
                .iter()
                .any(|e| e.key().starts_with(self.prefix.as_str()))
    }
}

/// A running reader.
pub(crate) struct Hub {
    subscribers: Mutex<Vec<Subscriber>>,
    /// The reader ended: no watch joins it any more.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the reader needs from its client.
pub(crate) struct Reader {
    pub(crate) link: Arc<Link>,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) timeout: Duration,
}

/// Joins the client's reader (started now, from `after`, when none runs): the watch of
/// `prefix` receives every batch the reader reads from now on that concerns it.
pub(crate) fn join(reader: Reader, prefix: &str, after: Revision) -> Feed {
    let (feed, receiver) = mpsc::unbounded_channel();
    let mut slot = lock(&reader.shared.hub);
    let hub = match &*slot {
        Some(hub) if !hub.closed.load(Ordering::Acquire) => Arc::clone(hub),
        _ => {
            let hub = Arc::new(Hub {
                subscribers: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            });
            *slot = Some(Arc::clone(&hub));
            tokio::spawn(run(Arc::clone(&hub), reader_clone(&reader), after));
            hub
        }
    };
    lock(&hub.subscribers).push(Subscriber {
        prefix: prefix.to_owned(),
        feed,
    });
    receiver
}

fn reader_clone(reader: &Reader) -> Reader {
    Reader {
        link: Arc::clone(&reader.link),
        scripts: Arc::clone(&reader.scripts),
        shared: Arc::clone(&reader.shared),
        timeout: reader.timeout,
    }
}

/// The error that ended the reader, shared by every watch it fed.
#[derive(Debug, Clone)]
struct ReaderFailed(Arc<BackendError>);

impl fmt::Display for ReaderFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the client's change-stream reader failed")
    }
}

impl std::error::Error for ReaderFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The error for each watch: a lost history as it is (a relist), anything else as a failed
/// watch (a new watch).
fn for_each_watch(error: &Arc<BackendError>) -> BackendError {
    match &**error {
        BackendError::HistoryLost { reason } => BackendError::HistoryLost {
            reason: reason.clone(),
        },
        _ => BackendError::request(NAME, "watch", ReaderFailed(Arc::clone(error))),
    }
}

async fn run(hub: Arc<Hub>, reader: Reader, after: Revision) {
    let outcome = read(&hub, &reader, after).await;
    let subscribers = {
        let mut slot = lock(&reader.shared.hub);
        hub.closed.store(true, Ordering::Release);
        if slot.as_ref().is_some_and(|h| Arc::ptr_eq(h, &hub)) {
            *slot = None;
        }
        std::mem::take(&mut *lock(&hub.subscribers))
    };
    match outcome {
        // No watch left.
        Ok(()) => debug!("change-stream reader stopped: no watch left"),
        Err(error) => {
            debug!(error = %error_chain(&error), "change-stream reader failed");
            let error = Arc::new(error);
            for subscriber in subscribers {
                let _ = subscriber.feed.send(Err(for_each_watch(&error)));
            }
        }
    }
}

/// Whether any watch is left; the reader is closed (under the client's lock, so no watch
/// joins it meanwhile) when none is.
fn watched(hub: &Hub, shared: &Shared) -> bool {
    let _slot = lock(&shared.hub);
    let mut subscribers = lock(&hub.subscribers);
    subscribers.retain(|s| !s.feed.is_closed());
    if subscribers.is_empty() {
        hub.closed.store(true, Ordering::Release);
        return false;
    }
    true
}

/// Reads until no watch is left (`Ok`) or something fails.
async fn read(hub: &Hub, reader: &Reader, after: Revision) -> Result<(), BackendError> {
    // Blocking reads get their own connection, with no response timeout of the client's
    // (the block itself bounds each read).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(reader.timeout))
        .set_response_timeout(None);
    let epoch = reader.link.locator().epoch();
    let connecting = async {
        let (mut conn, at) = reader.link.locator().connect(&config, false).await?;
        let replid = replication_id(&mut conn).await;
        Ok((conn, at, replid))
    };
    let (conn, at, replid) = request(reader.timeout, || "watch".into(), connecting).await?;
    debug!(server = %at, from = after, "change-stream reader started");
    let mut state = State {
        conn,
        at,
        replid,
        cursor: format!("{after}-{}", u64::MAX),
        seen: after,
        checked: (Instant::now(), after),
    };
    loop {
        if !watched(hub, &reader.shared) {
            return Ok(());
        }
        if reader.link.locator().epoch() != epoch {
            return Err(changed_history(
                "the Sentinels name another primary than the one this reader reads",
            ));
        }
        state.check(reader).await?;
        let mut follows = state.seen;
        let batches = state.next(reader).await?;
        if batches.is_empty() {
            continue;
        }
        {
            let mut subscribers = lock(&hub.subscribers);
            for mut batch in batches {
                batch.gap = batch.first > follows.saturating_add(1);
                follows = follows.max(batch.last);
                let batch = Arc::new(batch);
                subscribers.retain(|s| {
                    if s.concerned(&batch) {
                        s.feed.send(Ok(Arc::clone(&batch))).is_ok()
                    } else {
                        !s.feed.is_closed()
                    }
                });
            }
        }
        // The watches just fed run before the next read is asked for. Woken from this task,
        // they wait on this worker; asking for the next read would wake the connection's
        // driver task ahead of them (with its socket write) and leave them to the other worker
        // once it wakes up. Entries written meanwhile wait in the stream for the next read.
        tokio::task::yield_now().await;
    }
}

struct State {
    conn: MultiplexedConnection,
    /// The server of `conn`, and its replication id.
    at: String,
    replid: Arc<str>,
    /// Stream id to read after.
    cursor: String,
    /// The highest revision read (or the starting point).
    seen: Revision,
    /// When the reader last checked the store's revision, and `seen` then.
    checked: (Instant, Revision),
}

impl State {
    /// Once per reaping period: the server still has the history of the one the client writes
    /// to; the client's turn at reaping (which checks that the history after what was read is
    /// still there); or, when a watch opening reaped meanwhile, its view of the revision.
    async fn check(&mut self, reader: &Reader) -> Result<(), BackendError> {
        let reaper = &reader.shared.reaper;
        let (checked_at, checked_seen) = self.checked;
        if checked_at.elapsed() < reaper.every {
            return Ok(());
        }
        if crate::watch::other_history(&reader.link.replid(), &self.replid) {
            return Err(changed_history(
                "this client now writes to another server than the one its watches read",
            ));
        }
        let now = Instant::now();
        if reaper.due() {
            match reaper.reap(&reader.scripts, &reader.link, self.seen).await {
                Ok(()) => {}
                Err(lost @ BackendError::HistoryLost { .. }) => return Err(lost),
                // The shared connection failing is the heartbeat's business; reading goes on.
                Err(error) => debug!(error = %error_chain(&error), "reaping failed"),
            }
        } else if let Some(store) = reaper.revision_since(checked_at) {
            if store < checked_seen {
                return Err(went_back(checked_seen, store));
            }
        }
        self.checked = (now, self.seen);
        Ok(())
    }

    /// The next entries, as batches (none when the block timed out).
    async fn next(&mut self, reader: &Reader) -> Result<Vec<Batch>, BackendError> {
        let every = reader.shared.reaper.every;
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
        let reply = match with_timeout(NAME, reader.timeout + every, || "watch".into(), read).await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                if needs_reconnect(&e) {
                    reader.link.locator().failed(&self.at, Some(&e));
                }
                return Err(classify(e, || "watch".into()));
            }
            Err(timeout) => {
                reader.link.locator().failed(&self.at, None);
                return Err(timeout);
            }
        };
        let entries = stream_entries(reply);
        if let Some((id, _)) = entries.last() {
            self.cursor.clone_from(id);
        }
        let batches = batches(entries, &reader.shared);
        if let Some(last) = batches.iter().map(|b| b.last).max() {
            self.seen = self.seen.max(last);
        }
        Ok(batches)
    }
}
