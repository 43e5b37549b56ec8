//! Client side of the wire: one multiplexed connection per node, reused by every call and
//! re-dialed when broken.
//!
//! A connection has a writer task (batching frames into as few writes as possible) and a
//! reader task that hands each response to the call waiting for its request id. When the
//! socket breaks, every waiting call fails at once with [`TransportError::Broken`] and the
//! next call dials again. A [go-away](crate::protocol::Frame::go_away) from the server fails
//! the waiting calls as not run: [`TransportError::Rejected`] on a connection the server
//! refused (it never answered on it: at its connection limit), [`TransportError::GoAway`] on
//! one it served and then closed (idle).
//!
//! A node registered with the metadata `tls=true` is dialed in TLS (see [`crate::tls`]); the
//! framing, batching and failure handling are the same code on both kinds of stream.
//!
//! Only [`TransportError`] is public (it is what a failed call reports); the connections and
//! their pool belong to the [`Consumer`](crate::consumer::Consumer).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{debug, warn};

use crate::protocol::{write_frames, Frame, FrameCodec, FrameError, Kind, GO_AWAY_IDLE};
use crate::tls::{failure_hint, ClientTls, Split};

/// A transport failure talking to one node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The node refused the connection: nothing listens there (the provider is gone).
    #[error("connection to {address} refused")]
    Refused {
        /// The node.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Dialing failed otherwise (unreachable host, bad address).
    #[error("cannot connect to {address}")]
    Connect {
        /// The node.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Dialing took longer than the call timeout.
    #[error("connecting to {address} timed out after {after:?}")]
    ConnectTimeout {
        /// The node.
        address: String,
        /// The limit.
        after: Duration,
    },
    /// The connection broke (closed by the peer, reset, or a bad frame) before the answer.
    #[error("connection to {address} broke before the answer")]
    Broken {
        /// The node.
        address: String,
    },
    /// No answer within the call timeout.
    #[error("no answer from {address} within {after:?}")]
    Timeout {
        /// The node.
        address: String,
        /// The limit.
        after: Duration,
    },
    /// The node accepted the connection but refused to serve it (at its connection limit):
    /// it read nothing, the request was not run.
    #[error("{address} refused the connection ({reason}); the request was not run")]
    Rejected {
        /// The node.
        address: String,
        /// The server's reason.
        reason: String,
    },
    /// The node closed a connection it had served (idle) as the request was on its way: it
    /// read nothing more, the request was not run. A new connection may well succeed.
    #[error(
        "{address} closed the connection ({reason}) before reading the request; it was not run"
    )]
    GoAway {
        /// The node.
        address: String,
        /// The server's reason.
        reason: String,
    },
    /// TLS with the node failed: its certificate is not trusted (wrong CA, expired, another
    /// name), it refused this client's certificate or its absence, or one side does not speak
    /// TLS on that port. The request was not run.
    #[error("TLS with {address} failed ({hint})")]
    Tls {
        /// The node.
        address: String,
        /// What to check.
        hint: &'static str,
        /// The TLS or socket error.
        #[source]
        source: io::Error,
    },
    /// The node is registered with `tls=true` but this consumer has no `rpc.tls.caFile` to
    /// verify it: it was not dialed, the request was not run.
    #[error("{address} serves TLS (its metadata says tls=true) but this consumer has no rpc.tls.caFile to verify it; the request was not run")]
    TlsNotConfigured {
        /// The node.
        address: String,
    },
}

impl TransportError {
    /// True when the request certainly did not run (it never reached a server, or the server
    /// said it did not read it): safe to send elsewhere whatever the method does.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            TransportError::Refused { .. }
                | TransportError::Connect { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::Rejected { .. }
                | TransportError::GoAway { .. }
                | TransportError::Tls { .. }
                | TransportError::TlsNotConfigured { .. }
        )
    }

    /// True when the node looks gone or cannot take this consumer (refused, unreachable,
    /// connection broken or rejected): the consumer takes it out of its cache at once. A TLS
    /// failure is not: it follows from this consumer's or the node's settings, the node is
    /// skipped for the call but stays in the cache (no relisting on every call).
    pub fn node_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Refused { .. }
                | TransportError::Connect { .. }
                | TransportError::Broken { .. }
                | TransportError::Rejected { .. }
        )
    }

    /// True when trying the same node again may succeed (timeouts, a broken connection, an
    /// idle connection closed by the server).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::Broken { .. }
                | TransportError::GoAway { .. }
        )
    }
}

/// The calls of a connection waiting for their answers, and the sweeper that times them out.
///
/// A call's timeout is not a timer of its own (arming and clearing one per call costs more than
/// the rest of a small call's bookkeeping): its deadline joins the connection's queue and one
/// sweeper task per connection sleeps until the earliest, fails the calls past theirs and
/// sleeps again, about once per timeout while calls keep coming.
#[derive(Debug, Default)]
struct Pending {
    calls: Mutex<Calls>,
    /// Wakes the sweeper: a first deadline to sleep until, or the connection closed.
    sweeper: Notify,
}

/// What [`Pending`] guards.
#[derive(Debug, Default)]
struct Calls {
    /// Each waiting call's answer: `None` when its deadline passed. (Request ids are this
    /// process's own counter: no need for a hasher that resists chosen keys.)
    waiting: HashMap<u64, oneshot::Sender<Option<Frame>>, foldhash::fast::RandomState>,
    /// (deadline, request id) in the order the calls were sent. Every call of a connection
    /// has the connection's timeout, so this is also the order of their deadlines. An answered
    /// call leaves its entry here until it reaches the front (or a compaction).
    deadlines: VecDeque<(Instant, u64)>,
    /// Whether the sweeper sleeps until a deadline; else it waits to be told of one.
    armed: bool,
}

impl Calls {
    /// Adds a waiting call; true when the sweeper must be woken to sleep until its deadline.
    fn add(&mut self, id: u64, answer: oneshot::Sender<Option<Frame>>, deadline: Instant) -> bool {
        self.waiting.insert(id, answer);
        self.drop_answered();
        // A call stuck at the front keeps the answered ones behind it: compact now and then,
        // so the queue stays within about twice the calls waiting.
        if self.deadlines.len() > 2 * self.waiting.len() + 64 {
            let waiting = &self.waiting;
            self.deadlines.retain(|(_, id)| waiting.contains_key(id));
        }
        self.deadlines.push_back((deadline, id));
        !std::mem::replace(&mut self.armed, true)
    }

    /// Fails the calls whose deadline is past `now`; returns the next deadline to sleep until
    /// (`None`: no call waits).
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(answer) = self.waiting.remove(&id) {
                let _ = answer.send(None);
            }
        }
        self.drop_answered();
        let next = self.deadlines.front().map(|&(deadline, _)| deadline);
        self.armed = next.is_some();
        next
    }

    /// Drops the entries of answered calls from the front of the queue.
    fn drop_answered(&mut self) {
        while let Some((_, id)) = self.deadlines.front() {
            if self.waiting.contains_key(id) {
                break;
            }
            self.deadlines.pop_front();
        }
    }
}

impl Pending {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        lock(&self.calls)
    }
}

/// Times out the calls of a connection (see [`Pending`]) until it closes.
async fn sweep(pending: Arc<Pending>, closed: Arc<AtomicBool>) {
    loop {
        let next = pending.calls().expire(Instant::now());
        if closed.load(Ordering::Acquire) {
            return;
        }
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = pending.sweeper.notified() => {}
                }
            }
            None => pending.sweeper.notified().await,
        }
    }
}

/// A go-away received on a connection.
#[derive(Debug)]
struct GoneAway {
    reason: String,
    /// Whether the server refused the connection (it never answered on it, and did not close
    /// it for being idle: at its connection limit) rather than closing one it serves.
    refused: bool,
}

/// A TLS failure seen by the reader after the handshake (TLS 1.3: the server refuses a
/// client certificate after the client finished), or a TLS answer on a plain connection.
#[derive(Debug)]
struct TlsFailure {
    hint: &'static str,
    cause: String,
}

/// One multiplexed connection to a node.
#[derive(Debug)]
pub(crate) struct Connection {
    address: String,
    tls: bool,
    tx: mpsc::Sender<Frame>,
    pending: Arc<Pending>,
    closed: Arc<AtomicBool>,
    gone_away: Arc<OnceLock<GoneAway>>,
    tls_failure: Arc<OnceLock<TlsFailure>>,
    next_id: AtomicU64,
    /// Every call's timeout (dialing included).
    timeout: Duration,
}

impl Connection {
    /// Dials `address` within `timeout`, in TLS when `tls` is given (with the name to verify).
    ///
    /// # Errors
    /// [`TransportError::Refused`], [`TransportError::Connect`],
    /// [`TransportError::ConnectTimeout`] or [`TransportError::Tls`].
    pub(crate) async fn connect(
        address: &str,
        timeout: Duration,
        max_frame: usize,
        tls: Option<(&ClientTls, rustls_pki_types::ServerName<'static>)>,
    ) -> Result<Connection, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || TransportError::ConnectTimeout {
            address: address.to_owned(),
            after: timeout,
        };
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(source)) if source.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(TransportError::Refused {
                    address: address.to_owned(),
                    source,
                })
            }
            Ok(Err(source)) => {
                return Err(TransportError::Connect {
                    address: address.to_owned(),
                    source,
                })
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let Some((tls, name)) = tls else {
            return Ok(Connection::start(
                stream, address, timeout, max_frame, false,
            ));
        };
        match tokio::time::timeout_at(deadline, tls.connector.connect(name, stream)).await {
            Err(_) => Err(timed_out()),
            Ok(Err(source)) => Err(TransportError::Tls {
                address: address.to_owned(),
                hint: failure_hint(&source, true).unwrap_or("the TLS handshake failed"),
                source,
            }),
            Ok(Ok(stream)) => Ok(Connection::start(stream, address, timeout, max_frame, true)),
        }
    }

    /// Runs the reader, writer and sweeper tasks over `stream`.
    fn start<S: Split>(
        stream: S,
        address: &str,
        timeout: Duration,
        max_frame: usize,
        tls: bool,
    ) -> Connection {
        let (read, write) = stream.split();
        let codec = FrameCodec::new(max_frame);
        let (tx, rx) = mpsc::channel(1024);
        let pending: Arc<Pending> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let gone_away = Arc::new(OnceLock::new());
        let tls_failure = Arc::new(OnceLock::new());
        tokio::spawn(sweep(Arc::clone(&pending), Arc::clone(&closed)));
        tokio::spawn(write_loop(
            FramedWrite::new(write, codec.clone()),
            rx,
            Arc::clone(&closed),
            Arc::clone(&pending),
        ));
        tokio::spawn(read_loop(
            FramedRead::new(read, codec),
            ReaderState {
                pending: Arc::clone(&pending),
                closed: Arc::clone(&closed),
                gone_away: Arc::clone(&gone_away),
                tls_failure: Arc::clone(&tls_failure),
                address: address.to_owned(),
            },
        ));
        debug!(%address, tls, "connected");
        Connection {
            address: address.to_owned(),
            tls,
            tx,
            pending,
            closed,
            gone_away,
            tls_failure,
            next_id: AtomicU64::new(1),
            timeout,
        }
    }

    /// True once the socket broke; the pool then dials a new connection.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends a request built by `build(request_id)` and waits for its response, within the
    /// connection's timeout.
    ///
    /// # Errors
    /// [`TransportError::Broken`], [`TransportError::Rejected`],
    /// [`TransportError::GoAway`] or [`TransportError::Timeout`].
    pub(crate) async fn call(
        &self,
        build: impl FnOnce(u64) -> Frame,
    ) -> Result<Frame, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.timeout;
        let (answer_tx, answer_rx) = oneshot::channel();
        if self.pending.calls().add(id, answer_tx, deadline) {
            self.pending.sweeper.notify_one();
        }
        // The reader marks the connection closed *before* failing the pending calls, so a
        // call registered after that sees the flag here instead of waiting for its timeout.
        if self.is_closed() {
            self.pending.calls().waiting.remove(&id);
            return Err(self.broken());
        }
        match self.tx.try_send(build(id)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.pending.calls().waiting.remove(&id);
                return Err(self.broken());
            }
            // The writer is behind: wait for room, within the deadline.
            Err(mpsc::error::TrySendError::Full(frame)) => {
                match tokio::time::timeout_at(deadline, self.tx.send(frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        self.pending.calls().waiting.remove(&id);
                        return Err(self.broken());
                    }
                    Err(_) => {
                        self.pending.calls().waiting.remove(&id);
                        return Err(self.timed_out());
                    }
                }
            }
        }
        match answer_rx.await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(self.timed_out()),
            Err(_) => Err(self.broken()),
        }
    }

    fn timed_out(&self) -> TransportError {
        TransportError::Timeout {
            address: self.address.clone(),
            after: self.timeout,
        }
    }

    /// Why the connection failed the call: a go-away received, a TLS failure, or broken.
    fn broken(&self) -> TransportError {
        let address = self.address.clone();
        if let Some(f) = self.tls_failure.get() {
            return TransportError::Tls {
                address,
                hint: f.hint,
                source: io::Error::other(f.cause.clone()),
            };
        }
        match self.gone_away.get() {
            Some(g) if !g.refused => TransportError::GoAway {
                address,
                reason: g.reason.clone(),
            },
            Some(g) => TransportError::Rejected {
                address,
                reason: g.reason.clone(),
            },
            None => TransportError::Broken { address },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fail_all(pending: &Pending, closed: &AtomicBool) {
    closed.store(true, Ordering::Release);
    // Dropping the senders wakes every waiting call with `Broken`.
    pending.calls().waiting.clear();
    // The sweeper sees the connection closed and ends.
    pending.sweeper.notify_one();
}

async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, FrameCodec>,
    mut rx: mpsc::Receiver<Frame>,
    closed: Arc<AtomicBool>,
    pending: Arc<Pending>,
) {
    // Other calls waiting: their requests may be on their way too.
    let others_running = || pending.calls().waiting.len() > 1;
    if let Err(error) = write_frames(&mut sink, &mut rx, others_running).await {
        // No new calls here; the reader fails the waiting ones when the socket ends, after
        // whatever the server sent last (a go-away says they were not run).
        debug!(%error, "write failed, the connection is broken");
        closed.store(true, Ordering::Release);
    }
}

/// What the reader shares with its connection.
struct ReaderState {
    pending: Arc<Pending>,
    closed: Arc<AtomicBool>,
    gone_away: Arc<OnceLock<GoneAway>>,
    tls_failure: Arc<OnceLock<TlsFailure>>,
    address: String,
}

/// The first two bytes of a TLS record (alert or handshake, TLS 1.x) where a frame was
/// expected: the peer speaks TLS.
fn is_tls_record(magic: u16) -> bool {
    matches!(magic >> 8, 0x15 | 0x16) && magic & 0xff == 0x03
}

async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    mut frames: FramedRead<R, FrameCodec>,
    state: ReaderState,
) {
    let ReaderState {
        pending,
        closed,
        gone_away,
        tls_failure,
        address,
    } = state;
    let mut answered = false;
    loop {
        match frames.next().await {
            Some(Ok(frame)) if frame.is_go_away() => {
                let reason = String::from_utf8_lossy(&frame.body).into_owned();
                debug!(%address, %reason, "the server closed the connection (go-away)");
                // An idle close is never a refusal, even on a connection that answered nothing
                // yet (a request slower to come than the idle timeout on a loaded machine).
                let refused = !answered && reason != GO_AWAY_IDLE;
                let _ = gone_away.set(GoneAway { reason, refused });
                break;
            }
            Some(Ok(frame)) if frame.kind == Kind::Response => {
                answered = true;
                let waiting = pending.calls().waiting.remove(&frame.request_id);
                if let Some(waiting) = waiting {
                    let _ = waiting.send(Some(frame));
                }
                // else: the call timed out and left; drop the late answer.
            }
            Some(Ok(_)) => {
                debug!(%address, "server sent a request frame, closing");
                break;
            }
            Some(Err(FrameError::Io(error))) => {
                if let Some(hint) = failure_hint(&error, false) {
                    warn!(%address, %error, hint, "TLS failure on the connection");
                    let _ = tls_failure.set(TlsFailure {
                        hint,
                        cause: error.to_string(),
                    });
                } else {
                    debug!(%address, %error, "connection lost");
                }
                break;
            }
            Some(Err(error @ FrameError::BadMagic { found })) if is_tls_record(found) => {
                let hint = "the node answered in TLS: it serves TLS on this port but is not \
                            registered with tls=true";
                warn!(%address, hint, "TLS answer on a plain connection");
                let _ = tls_failure.set(TlsFailure {
                    hint,
                    cause: error.to_string(),
                });
                break;
            }
            Some(Err(error)) => {
                tracing::warn!(%address, %error, "bad frame from the server, closing the connection");
                break;
            }
            None => {
                debug!(%address, "connection closed by the server");
                break;
            }
        }
    }
    fail_all(&pending, &closed);
}

/// One connection per node address, dialed on first use and again after it broke, in TLS
/// for nodes that ask for it.
#[derive(Debug)]
pub(crate) struct Pool {
    /// By node host and port; read by every call without a lock (nor an address formatted),
    /// copied when a node is added or forgotten.
    slots: ArcSwap<Slots>,
    max_frame: usize,
    tls: Option<ClientTls>,
    /// TLS nodes met without `rpc.tls.caFile`, warned about once each.
    warned: Mutex<std::collections::HashSet<String>>,
}

/// The node to dial: its host (also the name its certificate is verified for by default), its
/// port and whether it asks for TLS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl Target<'_> {
    /// `host:port`.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

type Slots = hashbrown::HashMap<SlotKey, Arc<Slot>, foldhash::fast::RandomState>;

/// A node's host and port, as the pool keys its connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    host: String,
    port: u16,
}

/// A [`SlotKey`] borrowed from a [`Target`], to look one up without building it. (Hashes as the
/// key does: the host's `str` hash, then the port's.)
#[derive(Hash)]
struct SlotQuery<'a> {
    host: &'a str,
    port: u16,
}

impl hashbrown::Equivalent<SlotKey> for SlotQuery<'_> {
    fn equivalent(&self, key: &SlotKey) -> bool {
        self.port == key.port && self.host == key.host
    }
}

impl<'a> From<Target<'a>> for SlotQuery<'a> {
    fn from(target: Target<'a>) -> Self {
        SlotQuery {
            host: target.host,
            port: target.port,
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    current: ArcSwapOption<Connection>,
    dialing: tokio::sync::Mutex<()>,
}

impl Pool {
    /// An empty pool whose connections accept frames up to `max_frame`, dialing TLS nodes with
    /// `tls`.
    pub(crate) fn new(max_frame: usize, tls: Option<ClientTls>) -> Self {
        Pool {
            slots: ArcSwap::default(),
            max_frame,
            tls,
            warned: Mutex::default(),
        }
    }

    /// The open connection to `target`, dialing (within `timeout`) when there is none.
    /// Concurrent callers share one dial.
    ///
    /// # Errors
    /// The dial error; [`TransportError::TlsNotConfigured`] for a TLS node without
    /// `rpc.tls.caFile`.
    pub(crate) async fn get(
        &self,
        target: Target<'_>,
        timeout: Duration,
    ) -> Result<Arc<Connection>, TransportError> {
        let tls = match (&self.tls, target.tls) {
            (_, false) => None,
            (Some(tls), true) => {
                let name = tls
                    .server_name(target.host)
                    .ok_or_else(|| TransportError::Tls {
                        address: target.address(),
                        hint: "the node's host is no valid TLS server name: set rpc.tls.serverName",
                        source: io::Error::other(format!("invalid server name `{}`", target.host)),
                    })?;
                Some((tls, name))
            }
            (None, true) => {
                let address = target.address();
                if lock(&self.warned).insert(address.clone()) {
                    warn!(%address, "a node registered with tls=true is skipped: this consumer has no rpc.tls.caFile");
                }
                return Err(TransportError::TlsNotConfigured { address });
            }
        };
        let query = SlotQuery::from(target);
        let known = {
            let slots = self.slots.load();
            let slot = slots.get(&query);
            // The common case: known, open, of the wanted kind.
            if let Some(conn) = slot.and_then(|slot| open(slot, tls.is_some())) {
                return Ok(conn);
            }
            slot.map(Arc::clone)
        };
        let slot = match known {
            Some(slot) => slot,
            None => {
                let key = SlotKey {
                    host: target.host.to_owned(),
                    port: target.port,
                };
                self.slots.rcu(|slots| {
                    let mut slots = Slots::clone(slots);
                    slots.entry(key.clone()).or_default();
                    slots
                });
                let slot = self.slots.load().get(&query).map(Arc::clone);
                // (Forgotten by another call in between: this one dials on its own.)
                slot.unwrap_or_default()
            }
        };
        let wanted = tls.is_some();
        if let Some(conn) = open(&slot, wanted) {
            return Ok(conn);
        }
        let _dialing = slot.dialing.lock().await;
        if let Some(conn) = open(&slot, wanted) {
            return Ok(conn);
        }
        let address = target.address();
        let conn = Arc::new(Connection::connect(&address, timeout, self.max_frame, tls).await?);
        slot.current.store(Some(Arc::clone(&conn)));
        Ok(conn)
    }

    /// Drops the connection to `target` (the node left).
    pub(crate) fn forget(&self, target: Target<'_>) {
        let query = SlotQuery::from(target);
        if self.slots.load().contains_key(&query) {
            self.slots.rcu(|slots| {
                let mut slots = Slots::clone(slots);
                slots.remove(&query);
                slots
            });
        }
    }
}

/// The slot's connection when it is open and of the wanted kind (a node that switched to TLS
/// or back is dialed again).
fn open(slot: &Slot, tls: bool) -> Option<Arc<Connection>> {
    slot.current
        .load_full()
        .filter(|c| !c.is_closed() && c.tls == tls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Instant;

    use super::*;
    use crate::serializer::Serializer;
    use crate::server::{Server, ServerOptions};

    /// A connection closed as idle before it carried a call (its request slower to come than
    /// the idle timeout) is not a refusal: the node stays, the call is sent again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_close_before_any_answer_is_not_a_refusal() {
        let server =
            Server::new(ServerOptions::default().with_idle_timeout(Duration::from_millis(100)))
                .bind("127.0.0.1:0")
                .await
                .unwrap();
        let address = server.local_addr().to_string();
        let timeout = Duration::from_secs(3);
        let connection = Connection::connect(&address, timeout, 1024, None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let request = |id| Frame::request(id, Serializer::Json, "Echo:1.0", "whoami", b"null");
        match connection.call(request).await {
            Err(e @ TransportError::GoAway { .. }) => {
                assert!(e.never_sent() && e.is_retryable() && !e.node_unreachable());
            }
            other => panic!("{other:?}"),
        }
        server.shutdown().await;
    }

    /// A server that reads every request and answers none.
    async fn silent_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
                });
            }
        });
        address
    }

    /// Calls time out through the connection's sweeper: together, one by one, and again after
    /// the sweeper had nothing to wait for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_calls_time_out_at_their_deadline() {
        let address = silent_server().await;
        let timeout = Duration::from_millis(150);
        let connection = Connection::connect(&address, timeout, 1024, None)
            .await
            .unwrap();
        let request = |id| Frame::request(id, Serializer::Json, "Echo:1.0", "whoami", b"null");
        for round in 0..3 {
            let started = Instant::now();
            let calls = (0..(1 + round * 8)).map(|_| connection.call(request));
            for result in futures::future::join_all(calls).await {
                match result {
                    Err(e @ TransportError::Timeout { .. }) => assert!(e.is_retryable()),
                    other => panic!("{other:?}"),
                }
            }
            let took = started.elapsed();
            assert!(took >= timeout, "round {round}: {took:?}");
            assert!(took < timeout * 10, "round {round}: {took:?}");
            assert!(connection.pending.calls().waiting.is_empty());
            // Nothing waits: the sweeper sleeps until told of a call.
            tokio::time::sleep(timeout).await;
        }
    }

    /// Answered calls behind one that waits do not pile up in the deadline queue; the calls
    /// past their deadline are failed, the next deadline is the earliest one left.
    #[test]
    fn the_deadline_queue_stays_small_and_expires_in_order() {
        let start = tokio::time::Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut calls = Calls::default();
        let (stuck, mut stuck_rx) = oneshot::channel();
        assert!(
            calls.add(0, stuck, at(1_000)),
            "the first call wakes the sweeper"
        );
        for id in 1..10_000 {
            let (answer, _rx) = oneshot::channel();
            assert!(!calls.add(id, answer, at(1_000 + id)), "armed already");
            // Answered at once, as the reader does.
            calls.waiting.remove(&id);
            assert!(calls.deadlines.len() <= 2 * (calls.waiting.len() + 1) + 65);
        }
        let (late, mut late_rx) = oneshot::channel();
        calls.add(10_000, late, at(20_000));
        assert_eq!(calls.expire(at(999)), Some(at(1_000)));
        assert!(stuck_rx.try_recv().is_err(), "not due yet");
        assert_eq!(calls.expire(at(1_000)), Some(at(20_000)));
        assert_eq!(stuck_rx.try_recv().unwrap(), None, "timed out");
        assert_eq!(calls.deadlines.len(), 1);
        assert_eq!(calls.expire(at(20_000)), None);
        assert_eq!(late_rx.try_recv().unwrap(), None);
        assert!(!calls.armed && calls.waiting.is_empty() && calls.deadlines.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_connection_fails_its_calls_at_once_as_not_run() {
        let full = Server::new(ServerOptions::default().with_max_connections(1))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let address = full.local_addr().to_string();
        // The holder is accepted first, so the next connection is refused.
        let _hold = std::net::TcpStream::connect(&address).unwrap();
        let timeout = Duration::from_secs(3);
        let started = Instant::now();
        let connection = Connection::connect(&address, timeout, 1024, None)
            .await
            .unwrap();
        let request = |id| Frame::request(id, Serializer::Json, "Echo:1.0", "whoami", b"null");
        match connection.call(request).await {
            Err(e @ TransportError::Rejected { .. }) => {
                assert!(e.never_sent() && e.node_unreachable() && !e.is_retryable());
                assert!(e.to_string().contains("too many connections"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(connection.is_closed());
        assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
        full.shutdown().await;
    }
}
