//! The TCP server: accepts connections, reads frames, runs the requests concurrently and
//! answers on the same connection (responses may come back in any order; the request id
//! matches them). Requests read together (whole in one read, up to
//! [`max_group`](ServerOptions::max_group)) share one task, where they run concurrently;
//! the others get a task each. A bad frame closes that one connection; every other client
//! keeps being served.
//!
//! Graceful stop ([`RunningServer::shutdown`]): stop accepting; for a short drain window
//! answer requests that still arrive `Unavailable` (the consumer resends them to another
//! node); let the calls already running finish (bounded by a grace period), answer them,
//! close.
//!
//! # Limits
//!
//! Clients that are hostile, broken or too many can neither lock the server out nor grow it
//! without bound:
//!
//! | limit | default | beyond it |
//! |---|---|---|
//! | connections: [`max_connections`](ServerOptions::max_connections) | ¾ of the open-files soft limit (`RLIMIT_NOFILE`), at most [`DEFAULT_MAX_CONNECTIONS_CAP`] | a new connection is accepted, sent a [go-away](crate::protocol::Frame::go_away) and closed at once: the consumer learns at once that its request was not run and moves to another node, instead of waiting for its timeout on a node that cannot accept. The quarter of the descriptors left over keeps `accept`, the registry client and logs working. |
//! | idle: [`idle_timeout`](ServerOptions::idle_timeout) | [`DEFAULT_IDLE_TIMEOUT`] | a connection with no call running, no answer unwritten and no byte received for that long is sent a go-away and closed (a consumer dials again on its next call; one whose request crossed the go-away resends it on a new connection) |
//! | frame: [`frame_timeout`](ServerOptions::frame_timeout) | [`DEFAULT_FRAME_TIMEOUT`] | once the first byte of a frame has arrived, the whole frame must have arrived within it, waiting for memory included; each batch of answers must be written within it. Else the connection is closed: a slowloris, or a client that stopped reading its answers. |
//! | memory, overall: [`max_buffered_bytes`](ServerOptions::max_buffered_bytes) | [`DEFAULT_MAX_BUFFERED_BYTES`] | see below |
//! | memory, per connection: [`max_connection_bytes`](ServerOptions::max_connection_bytes) | [`DEFAULT_MAX_CONNECTION_BYTES`] | see below |
//! | calls per connection: [`max_in_flight`](ServerOptions::max_in_flight) | [`DEFAULT_MAX_IN_FLIGHT`] | the connection is not read until a call is answered on the wire |
//!
//! With [TLS](crate::tls) ([`Server::with_tls`]) every limit above applies the same way to the
//! connections after their handshake; the handshake itself holds a connection slot and must
//! end within the frame timeout, so a client that connects and never finishes it cannot keep
//! the slot. A TLS listener at its connection limit closes a new connection at once, without a
//! go-away (it would have to complete a handshake first): the consumer sees a TLS failure,
//! which also means the request was not run, and moves to another node.
//!
//! A failing `accept` (out of file descriptors) is retried with backoff (10 ms doubling up to
//! 1 s) and logged once per episode: a warning the first time, debug lines while it lasts,
//! an info line when connections are accepted again. Reaching the connection limit is logged
//! the same way.
//!
//! # Memory
//!
//! The server counts the bytes of frames it holds. A request body is charged after its
//! 18-byte header is read and before anything is allocated for it, against the overall budget
//! (`max_buffered_bytes`) and its connection's (`max_connection_bytes`): a peer announcing a
//! large frame waits for room without memory (within the frame timeout). The charge is held
//! while the call runs; its answer is then charged instead until it is written. An answer is
//! charged even beyond the budget (its memory is allocated already), and the overdraft keeps
//! the server from reading more until answers are written: a connection whose answers are not
//! read stops being read (backpressure, then the frame timeout closes it). A frame larger than
//! either budget is refused like one above `max_frame`.
//!
//! So the frames held stay within `max_buffered_bytes`, plus, for calls running at that
//! moment, what their answers exceed their requests by (nothing for an echo; up to
//! `max_in_flight` × `max_frame` per connection for a handler whose small requests return
//! large answers: lower `max_in_flight` for such services). Handlers' own allocations (decoded
//! arguments, answers being encoded) and a read buffer of 8 KiB per connection come on top.
//!
//! **Bound** for the default options, asserted by `tests/server_memory.rs` on a server in a
//! child process: resident memory stays below `max_buffered_bytes` + 64 MiB (192 MiB) under
//! 200 connections each sending a header announcing 4 MiB and nearly all of the body, then
//! stalling (measured: 136 MiB; 806 MiB without these limits), and under one connection
//! pipelining 2 MiB echo calls without reading the answers (22 MiB; 612 MiB before, growing
//! with every call sent).
//!
//! Resident memory also depends on the allocator. With glibc's default (dynamic) mmap
//! threshold, the memory of freed bodies stays in per-thread arenas: with attackers coming back
//! past the frame timeout for a long time, it grew to about twice the budget (250 MiB after 15
//! s of 200 attackers) while the server never held more than the budget. With a fixed threshold
//! (`MALLOC_MMAP_THRESHOLD_=131072`) freed bodies go back to the system at once and it stays
//! within the bound (148 MiB over the same 15 s), which the same tests assert over 4 s. Other
//! allocators were not measured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use registry_core::error_chain;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::budget::{ByteBudget, Charge};
use crate::config::ServerConfig;
use crate::protocol::{
    Frame, FrameError, Header, Kind, Status, DEFAULT_MAX_FRAME, GO_AWAY_FULL, GO_AWAY_IDLE,
    HEADER_LEN,
};
use crate::service::{DispatchError, Service};
use crate::tls::{ServerTls, Split};

/// Default time in-flight calls get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default limit of calls running at once per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default most requests run on one task when they arrive together.
pub const DEFAULT_MAX_GROUP: usize = 8;
/// Default window during which a stopping server answers late requests `Unavailable`.
pub const DEFAULT_DRAIN: Duration = Duration::from_millis(300);
/// The most connections the default limit allows, whatever the open-files limit (see
/// [`default_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS_CAP: usize = 10_000;
pub use rpc_config::config::{
    DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BUFFERED_BYTES,
};
/// Default budget of frame bytes held for one connection: 16 MiB (four largest frames).
pub const DEFAULT_MAX_CONNECTION_BYTES: usize = 16 * 1024 * 1024;

/// Read buffer per connection; larger bodies are read into their own allocation.
const READ_CHUNK: usize = 8 * 1024;
/// Answers are batched into one write up to this size; larger bodies are written as they are.
const WRITE_BATCH: usize = 64 * 1024;
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// An episode of accept failures or refusals ends when a connection is accepted this long
/// after the last one, so a server flapping at its limit logs one warning, not one per second.
const EPISODE_QUIET: Duration = Duration::from_secs(5);

/// The default connection limit: three quarters of this process's open-files soft limit
/// (`RLIMIT_NOFILE`), at most [`DEFAULT_MAX_CONNECTIONS_CAP`], at least 1; the cap when the
/// limit is unknown or unlimited. The quarter left over keeps descriptors for `accept` to
/// refuse connections cleanly, for the registry client, log files and the runtime. Read when
/// the options are built: raise the soft limit (`ulimit -n`) before.
pub fn default_max_connections() -> usize {
    match open_files_soft_limit() {
        Some(soft) => (soft / 4 * 3 + soft % 4 * 3 / 4).clamp(1, DEFAULT_MAX_CONNECTIONS_CAP),
        None => DEFAULT_MAX_CONNECTIONS_CAP,
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn open_files_soft_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` only writes the struct it is given, which lives across the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(limit.rlim_cur).ok()
}

#[cfg(not(unix))]
fn open_files_soft_limit() -> Option<usize> {
    None
}

/// Server settings. See the [module docs](self) for what each limit protects against.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest accepted frame body.
    pub max_frame: usize,
    /// How long in-flight calls may run after shutdown starts.
    pub shutdown_grace: Duration,
    /// After shutdown starts, how long open connections keep reading to answer late requests
    /// `Unavailable` (so consumers resend them elsewhere) before closing.
    pub drain: Duration,
    /// Calls running or answered but not yet written, per connection; beyond, the server
    /// stops reading that connection until one is answered on the wire.
    pub max_in_flight: usize,
    /// Requests of a connection that arrived together (whole in the read buffer) run on one
    /// task, at most this many (at least 1; 1: one task per request). Fewer tasks to spawn
    /// and schedule per request; the price: a handler that computes for long without awaiting
    /// holds up the others of its group (run such work with `spawn_blocking`, as anywhere on
    /// a Tokio runtime).
    pub max_group: usize,
    /// Connections open at once; beyond, new ones are refused with a go-away.
    pub max_connections: usize,
    /// A connection with no call running, no answer unwritten and no byte received for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// Once its first byte has arrived, a frame must arrive whole within this (waiting for
    /// memory budget included), and a batch of answers must be written within it.
    pub frame_timeout: Duration,
    /// Frame bytes (request bodies read or being run, answers not yet written) held by the
    /// whole server.
    pub max_buffered_bytes: usize,
    /// Frame bytes held for one connection.
    pub max_connection_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_frame: DEFAULT_MAX_FRAME,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            drain: DEFAULT_DRAIN,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_group: DEFAULT_MAX_GROUP,
            max_connections: default_max_connections(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            max_connection_bytes: DEFAULT_MAX_CONNECTION_BYTES,
        }
    }
}

impl ServerOptions {
    /// The defaults with the `rpc.server.*` settings of `config`.
    pub fn from_config(config: &ServerConfig) -> Self {
        let options = ServerOptions::default()
            .with_idle_timeout(config.idle_timeout)
            .with_frame_timeout(config.frame_timeout)
            .with_max_buffered_bytes(config.max_buffered_bytes);
        match config.max_connections {
            Some(max) => options.with_max_connections(max),
            None => options,
        }
    }

    /// Sets the largest accepted frame body.
    #[must_use]
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame;
        self
    }

    /// Sets the limit of calls running at once per connection.
    #[must_use]
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets the most requests run on one task when they arrive together (1: one task each).
    #[must_use]
    pub fn with_max_group(mut self, max_group: usize) -> Self {
        self.max_group = max_group;
        self
    }

    /// Sets the shutdown grace period.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets the limit of connections open at once (at least 1).
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets the frame timeout.
    #[must_use]
    pub fn with_frame_timeout(mut self, frame_timeout: Duration) -> Self {
        self.frame_timeout = frame_timeout;
        self
    }

    /// Sets the budget of frame bytes held by the whole server.
    #[must_use]
    pub fn with_max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sets the budget of frame bytes held for one connection.
    #[must_use]
    pub fn with_max_connection_bytes(mut self, bytes: usize) -> Self {
        self.max_connection_bytes = bytes;
        self
    }
}

/// Services by service key (`Name:version`).
/// (Looked up once per request; the keys are this server's own, so a fast hasher will do.)
type Services = HashMap<String, Arc<dyn Service>, foldhash::fast::RandomState>;

/// A server being assembled.
pub struct Server {
    services: Services,
    options: ServerOptions,
    tls: Option<ServerTls>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Server {
    /// An empty server.
    pub fn new(options: ServerOptions) -> Self {
        Server {
            services: Services::default(),
            options,
            tls: None,
        }
    }

    /// Serves in TLS (see [`crate::tls`]): every connection starts with a handshake, bounded by
    /// the frame timeout.
    #[must_use]
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves `service` as `Name:version`.
    pub fn add(&mut self, version: &str, service: Arc<dyn Service>) {
        let key = registry_core::service_key(service.name(), version, registry_core::DEFAULT_GROUP);
        self.services.insert(key, service);
    }

    /// The service keys served.
    pub fn service_keys(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// Binds `addr` and starts accepting.
    ///
    /// # Errors
    /// The bind error (address in use, permission).
    pub async fn bind(self, addr: &str) -> std::io::Result<RunningServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let o = &self.options;
        let budget = ByteBudget::new(o.max_buffered_bytes);
        let max_connection_bytes = o.max_connection_bytes.max(1);
        // A frame that could never be charged is refused from its header, like an oversized one.
        let max_read_frame = o
            .max_frame
            .min(budget.limit())
            .min(max_connection_bytes)
            .min(u32::MAX as usize);
        let max_connections = o.max_connections.max(1);
        let shared = Arc::new(Shared {
            services: self.services,
            max_frame: o.max_frame,
            max_read_frame,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            drain: o.drain.min(o.shutdown_grace),
            max_in_flight: o.max_in_flight.max(1),
            max_group: o.max_group.max(1),
            max_connections,
            connections: Arc::new(Semaphore::new(max_connections)),
            idle_timeout: o.idle_timeout,
            frame_timeout: o.frame_timeout,
            budget,
            max_connection_bytes,
            tls: self.tls.map(|t| t.acceptor),
        });
        let tls = shared.tls.is_some();
        let accept = tokio::spawn(accept_loop(listener, shared));
        info!(%local_addr, max_connections, tls, "rpc server listening");
        Ok(RunningServer {
            local_addr,
            cancel,
            tracker,
            accept,
            grace: self.options.shutdown_grace,
        })
    }
}

struct Shared {
    services: Services,
    /// Largest answer body.
    max_frame: usize,
    /// Largest request body: `max_frame`, or less when a budget is smaller.
    max_read_frame: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    drain: Duration,
    max_in_flight: usize,
    max_group: usize,
    max_connections: usize,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    idle_timeout: Duration,
    frame_timeout: Duration,
    /// Frame bytes held by the whole server.
    budget: Arc<ByteBudget>,
    max_connection_bytes: usize,
    /// The TLS handshake every connection starts with, when serving TLS.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A server accepting connections.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    accept: tokio::task::JoinHandle<()>,
    grace: Duration,
}

/// What a graceful shutdown achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True when every in-flight call finished within the grace period.
    pub drained: bool,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and reading, waits (up to the grace period) for in-flight calls to be
    /// answered, then closes every connection.
    pub async fn shutdown(self) -> ShutdownReport {
        self.cancel.cancel();
        let _ = self.accept.await;
        self.tracker.close();
        let drained = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            warn!(grace = ?self.grace, "calls still running after the shutdown grace period");
        }
        info!(local_addr = %self.local_addr, drained, "rpc server stopped");
        ShutdownReport { drained }
    }
}

/// A condition logged once while it lasts (a warning when it starts, an info line when it
/// ends) instead of once per occurrence.
#[derive(Debug, Default)]
struct Episode {
    /// Occurrences in the current episode and when the last one was.
    current: Option<(u64, Instant)>,
}

impl Episode {
    /// Records an occurrence at `now`; true when it starts an episode.
    fn hit(&mut self, now: Instant) -> bool {
        match &mut self.current {
            Some((count, last)) => {
                *count += 1;
                *last = now;
                false
            }
            None => {
                self.current = Some((1, now));
                true
            }
        }
    }

    /// Records that things work again at `now`; the episode's count when this ends it
    /// (nothing happened for [`EPISODE_QUIET`]).
    fn recovered(&mut self, now: Instant) -> Option<u64> {
        match self.current {
            Some((count, last)) if now.saturating_duration_since(last) >= EPISODE_QUIET => {
                self.current = None;
                Some(count)
            }
            _ => None,
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut failing = Episode::default();
    let mut refusing = Episode::default();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_per_connection(&error) => {
                debug!(%error, "accept failed for one connection");
                continue;
            }
            Err(error) => {
                // Out of file descriptors and the like: the pending connection stays queued,
                // so back off instead of spinning, and say it once.
                if failing.hit(Instant::now()) {
                    warn!(%error, "accept failed, retrying with backoff (out of file descriptors? lower max_connections or raise `ulimit -n`); further failures are logged at debug level until it works again");
                } else {
                    debug!(%error, ?backoff, "accept failed again");
                }
                tokio::select! {
                    () = shared.cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF_MIN;
        if let Some(failures) = failing.recovered(Instant::now()) {
            info!(failures, "accepting connections again");
        }
        let Ok(slot) = Arc::clone(&shared.connections).try_acquire_owned() else {
            if refusing.hit(Instant::now()) {
                warn!(limit = shared.max_connections, %peer, "connection limit reached: refusing new connections (consumers move to other nodes) until some close; further refusals are logged at debug level");
            } else {
                debug!(%peer, "connection refused: at the connection limit");
            }
            // A TLS client would read a plain go-away as a TLS error anyway: just close.
            if shared.tls.is_none() {
                refuse(stream);
            }
            continue;
        };
        if let Some(refused) = refusing.recovered(Instant::now()) {
            info!(
                refused,
                limit = shared.max_connections,
                "below the connection limit again"
            );
        }
        let _ = stream.set_nodelay(true);
        let conn_shared = Arc::clone(&shared);
        match &shared.tls {
            None => {
                shared
                    .tracker
                    .spawn(serve_connection(stream, peer, conn_shared, slot));
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                shared.tracker.spawn(async move {
                    // The slot is held during the handshake; the frame timeout bounds it.
                    let within = conn_shared.frame_timeout;
                    let done = tokio::select! {
                        () = conn_shared.cancel.cancelled() => return,
                        done = tokio::time::timeout(within, handshake) => done,
                    };
                    match done {
                        Ok(Ok(stream)) => serve_connection(stream, peer, conn_shared, slot).await,
                        Ok(Err(error)) => {
                            debug!(%peer, %error, "TLS handshake failed, closing the connection");
                        }
                        Err(_) => {
                            debug!(%peer, frame_timeout = ?within, "TLS handshake not finished within the frame timeout, closing the connection");
                        }
                    }
                });
            }
        }
    }
}

/// Accept errors that concern one connection (gone before it was accepted), not the server.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

/// Refuses a connection over the limit: a go-away (nothing was read, the peer may send its
/// requests elsewhere), then the socket is closed at once, without a task.
fn refuse(stream: TcpStream) {
    use std::io::Write as _;
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let mut bytes = BytesMut::with_capacity(64);
    let go_away = Frame::go_away(GO_AWAY_FULL);
    Header::put(&go_away, &mut bytes);
    bytes.extend_from_slice(&go_away.body);
    // A fresh socket has room in its send buffer: this does not block (it is non-blocking
    // anyway). Whatever fails, the socket is closed.
    let _ = (&stream).write(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Per-connection bookkeeping shared by its reader, its calls and its writer.
#[derive(Debug)]
struct Conn {
    /// Frame bytes held for this connection.
    budget: Arc<ByteBudget>,
    /// Requests read and not yet answered on the wire (their answers queued included): the
    /// reader waits while there are more than `max_in_flight`.
    outstanding: AtomicUsize,
    max_in_flight: usize,
    /// Wakes the reader: a request answered while it waits for room, or the last one answered
    /// while the connection ends.
    answered: Notify,
    /// The connection stopped reading and waits for its last calls.
    ending: AtomicBool,
    opened: Instant,
    /// Milliseconds after `opened` of the last byte read or answer written.
    last_activity: AtomicU64,
}

impl Conn {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.fetch_max(ms, Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_activity.load(Ordering::Relaxed))
    }

    fn busy(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) > 0
    }

    /// Whether one more request may be read now.
    fn has_room(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) < self.max_in_flight
    }

    /// Waits until at most `max_in_flight` requests are outstanding.
    async fn room(&self) {
        self.until(|outstanding| outstanding <= self.max_in_flight)
            .await;
    }

    /// Waits until every request read is answered or dropped (its handler finished).
    async fn settled(&self) {
        self.ending.store(true, Ordering::SeqCst);
        self.until(|outstanding| outstanding == 0).await;
    }

    /// Waits until the count of outstanding requests satisfies `done`, woken by the
    /// [`Outstanding`] drops that may make it so.
    async fn until(&self, done: impl Fn(usize) -> bool) {
        while !done(self.outstanding.load(Ordering::SeqCst)) {
            // Registered before looking again, so a drop in between is not missed.
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if done(self.outstanding.load(Ordering::SeqCst)) {
                return;
            }
            answered.await;
        }
    }
}

/// A request until its answer is written (or dropped with the connection).
#[derive(Debug)]
struct Outstanding(Arc<Conn>);

impl Outstanding {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.outstanding.fetch_add(1, Ordering::AcqRel);
        Outstanding(Arc::clone(conn))
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let conn = &self.0;
        let before = conn.outstanding.fetch_sub(1, Ordering::SeqCst);
        if before > conn.max_in_flight || (before == 1 && conn.ending.load(Ordering::SeqCst)) {
            conn.answered.notify_one();
        }
    }
}

/// Bytes charged for one frame, overall and on its connection.
#[derive(Debug)]
struct Charges {
    _overall: Charge,
    _connection: Charge,
}

/// An answer on its way to the socket, with what it holds until written.
struct Answer {
    frame: Frame,
    _charges: Option<Charges>,
    _request: Option<Outstanding>,
}

/// Why a connection stopped being read.
#[derive(Debug)]
enum ReadEnd {
    /// The peer closed it between frames.
    Closed,
    /// Nothing running and nothing received for the idle timeout.
    Idle,
    /// A frame did not arrive whole within the frame timeout.
    FrameTimeout,
    /// The peer closed it in the middle of a frame.
    Truncated,
    /// The peer sent a response frame: it is not a client of ours.
    ResponseSent,
    /// Not a valid frame.
    Bad(FrameError),
    /// The socket failed.
    Io(std::io::Error),
    /// The answers cannot be written any more (the writer gave up).
    WriterGone,
    /// The shutdown drain window is over.
    Drained,
}

/// Reads frames from a connection, charging each body to the budgets before reading it.
struct FrameReader<R> {
    read: R,
    /// What was read past the last frame (at most about [`READ_CHUNK`]).
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The next frame with its charges.
    async fn next(&mut self, shared: &Shared, conn: &Conn) -> Result<(Frame, Charges), ReadEnd> {
        // Room on this connection for the largest frame, before reading: a connection whose
        // answers are not being written is not read either.
        let mut connection = conn
            .budget
            .acquire(shared.max_read_frame)
            .await
            .ok_or(ReadEnd::Closed)?;
        if self.buf.is_empty() {
            self.wait_for_bytes(shared.idle_timeout, conn).await?;
        }
        // The frame's first bytes are here: the rest must come within the frame timeout. (The
        // clock is read only if something has to be waited for: most frames are whole in the
        // buffer, with room in the budgets.)
        let mut deadline = None;
        let mut deadline =
            || *deadline.get_or_insert_with(|| Instant::now() + shared.frame_timeout);
        let header = loop {
            if let Some(header) =
                Header::parse(&self.buf, shared.max_read_frame).map_err(ReadEnd::Bad)?
            {
                break header;
            }
            self.fill(deadline()).await?;
        };
        self.buf.advance(HEADER_LEN);
        connection.shrink_to(header.len);
        let overall = match shared.budget.try_acquire(header.len) {
            Some(charge) => charge,
            None => {
                match tokio::time::timeout_at(deadline(), shared.budget.acquire(header.len)).await {
                    Ok(Some(charge)) => charge,
                    Ok(None) => return Err(ReadEnd::Closed),
                    Err(_) => return Err(ReadEnd::FrameTimeout),
                }
            }
        };
        let body = if self.buf.len() >= header.len {
            self.take_body(header.len)
        } else {
            self.read_body(header.len, deadline()).await?
        };
        Ok((
            header.into_frame(body),
            Charges {
                _overall: overall,
                _connection: connection,
            },
        ))
    }

    /// The next frame if it is whole in the buffer and both budgets have room for it now:
    /// nothing is waited for. `None` otherwise (including a bad header: [`next`](Self::next)
    /// reports it).
    fn next_buffered(&mut self, shared: &Shared, conn: &Conn) -> Option<(Frame, Charges)> {
        let header = match Header::parse(&self.buf, shared.max_read_frame) {
            Ok(Some(header)) if self.buf.len() >= HEADER_LEN + header.len => header,
            _ => return None,
        };
        let connection = conn.budget.try_acquire(header.len)?;
        let overall = shared.budget.try_acquire(header.len)?;
        self.buf.advance(HEADER_LEN);
        let body = self.take_body(header.len);
        Some((
            header.into_frame(body),
            Charges {
                _overall: overall,
                _connection: connection,
            },
        ))
    }

    /// A body of `len` bytes, all in the buffer, into an allocation of its own (see
    /// [`read_body`](Self::read_body)).
    fn take_body(&mut self, len: usize) -> Bytes {
        let body = Bytes::copy_from_slice(&self.buf[..len]);
        self.buf.advance(len);
        body
    }

    /// Waits for the first bytes of a frame; [`ReadEnd::Idle`] when nothing runs on the
    /// connection and nothing arrives for `idle`.
    async fn wait_for_bytes(&mut self, idle: Duration, conn: &Conn) -> Result<(), ReadEnd> {
        loop {
            let deadline = if conn.busy() {
                Instant::now() + idle
            } else {
                conn.last_activity() + idle
            };
            self.buf.reserve(READ_CHUNK);
            match tokio::time::timeout_at(deadline, self.read.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(ReadEnd::Closed),
                Ok(Ok(_)) => {
                    conn.touch();
                    return Ok(());
                }
                Ok(Err(e)) => return Err(ReadEnd::Io(e)),
                Err(_) if !conn.busy() && conn.last_activity() + idle <= Instant::now() => {
                    return Err(ReadEnd::Idle)
                }
                Err(_) => {}
            }
        }
    }

    /// Reads more into the buffer, in the middle of a frame.
    async fn fill(&mut self, deadline: Instant) -> Result<(), ReadEnd> {
        self.buf.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline, self.read.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Err(ReadEnd::Truncated),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ReadEnd::Io(e)),
            Err(_) => Err(ReadEnd::FrameTimeout),
        }
    }

    /// Reads a body of `len` bytes into an allocation of its own (never sharing the read
    /// buffer, so nothing outlives the charge).
    async fn read_body(&mut self, len: usize, deadline: Instant) -> Result<Bytes, ReadEnd> {
        let mut body = Vec::with_capacity(len);
        let buffered = len.min(self.buf.len());
        body.extend_from_slice(&self.buf[..buffered]);
        self.buf.advance(buffered);
        while body.len() < len {
            let missing = (len - body.len()) as u64;
            let mut rest = (&mut self.read).take(missing);
            match tokio::time::timeout_at(deadline, rest.read_buf(&mut body)).await {
                Ok(Ok(0)) => return Err(ReadEnd::Truncated),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ReadEnd::Io(e)),
                Err(_) => return Err(ReadEnd::FrameTimeout),
            }
        }
        Ok(Bytes::from(body))
    }
}

async fn serve_connection<S: Split>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    debug!(%peer, "connection opened");
    let (read, write) = stream.split();
    let conn = Arc::new(Conn {
        budget: ByteBudget::new(shared.max_connection_bytes),
        outstanding: AtomicUsize::new(0),
        max_in_flight: shared.max_in_flight,
        answered: Notify::new(),
        ending: AtomicBool::new(false),
        opened: Instant::now(),
        last_activity: AtomicU64::new(0),
    });
    // Unbounded in count: every answer queued is an outstanding request, at most
    // `max_in_flight` of them (and bounded in bytes by the budgets).
    let (tx, rx) = mpsc::unbounded_channel::<Answer>();
    let writer = tokio::spawn(write_loop(
        write,
        rx,
        Arc::clone(&conn),
        shared.frame_timeout,
        peer,
    ));
    let mut reader = FrameReader {
        read,
        buf: BytesMut::new(),
    };
    // Once shutdown starts, requests still arriving (sent before the consumer saw the
    // deregistration) are answered `Unavailable` for a short window instead of being lost with
    // the connection: the consumer then sends them to another node, safely, since they never ran.
    let mut draining: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    // Requests read and not run yet: they run together once no more is at hand.
    let mut group = Vec::with_capacity(shared.max_group);
    let end = loop {
        // Whole in the buffer, room for it, room in the group: no waiting, it joins the group.
        let at_hand = (group.len() < shared.max_group && conn.has_room())
            .then(|| reader.next_buffered(&shared, &conn))
            .flatten();
        let (frame, charges) = match at_hand {
            Some(next) => next,
            None => {
                // Nothing is waited for while requests read wait to run.
                run_group(&mut group, &shared, &conn, &tx);
                // The same read goes on across the start of shutdown (it keeps its partial
                // frame).
                let read = reader.next(&shared, &conn);
                tokio::pin!(read);
                let next = loop {
                    tokio::select! {
                        () = shared.cancel.cancelled(), if draining.is_none() => {
                            draining = Some(Box::pin(tokio::time::sleep(shared.drain)));
                        }
                        () = async { if let Some(d) = draining.as_mut() { d.await } }, if draining.is_some() => {
                            break Err(ReadEnd::Drained);
                        }
                        () = tx.closed() => break Err(ReadEnd::WriterGone),
                        next = &mut read => break next,
                    }
                };
                match next {
                    Ok(next) => next,
                    Err(end) => break end,
                }
            }
        };
        if frame.kind != Kind::Request {
            break ReadEnd::ResponseSent;
        }
        let request = Outstanding::new(&conn);
        // At most `max_in_flight` requests per connection unanswered: beyond, stop reading
        // (TCP backpressure) instead of spawning without bound. (A request taken from the
        // buffer found room: the group is empty whenever this waits.)
        conn.room().await;
        if draining.is_some() {
            let response = Frame::response(
                frame.request_id,
                frame.serializer,
                Status::Unavailable,
                Bytes::from_static(b"the server is shutting down"),
            );
            let answer = Answer {
                frame: response,
                _charges: None,
                _request: Some(request),
            };
            if tx.send(answer).is_err() {
                break ReadEnd::WriterGone;
            }
            continue;
        }
        group.push(Call {
            frame,
            charges,
            request,
        });
    };
    run_group(&mut group, &shared, &conn, &tx);
    match &end {
        ReadEnd::Closed | ReadEnd::Drained | ReadEnd::WriterGone => {}
        ReadEnd::Idle => {
            debug!(%peer, idle_timeout = ?shared.idle_timeout, "closing an idle connection");
            let go_away = Answer {
                frame: Frame::go_away(GO_AWAY_IDLE),
                _charges: None,
                _request: None,
            };
            let _ = tx.send(go_away);
        }
        ReadEnd::FrameTimeout => {
            debug!(%peer, frame_timeout = ?shared.frame_timeout, "closing the connection: a frame did not arrive in time");
        }
        ReadEnd::Truncated => debug!(%peer, "connection closed in the middle of a frame"),
        ReadEnd::ResponseSent => {
            warn!(%peer, "closing the connection: a response frame sent to the server");
        }
        ReadEnd::Bad(FrameError::BadMagic { found }) if found >> 8 == 0x16 => {
            warn!(%peer, "closing the connection: a TLS client on a plain listener (set rpc.tls.certFile and rpc.tls.keyFile to serve TLS)");
        }
        ReadEnd::Bad(error) => warn!(%peer, %error, "closing the connection: bad frame"),
        ReadEnd::Io(error) => debug!(%peer, %error, "connection lost"),
    }
    drop(reader);
    drop(tx);
    // The writer ends once every running call of this connection has answered; a call whose
    // answer cannot be written any more (the writer gave up) still runs to its end.
    let _ = writer.await;
    conn.settled().await;
    debug!(%peer, "connection closed");
}

/// A request read, waiting to run.
struct Call {
    frame: Frame,
    charges: Charges,
    request: Outstanding,
}

/// Runs the requests of `group` (emptied) on one task, concurrently, each answer sent to the
/// writer as it is ready. The task is not tracked: the connection, tracked, ends only once its
/// calls did.
fn run_group(
    group: &mut Vec<Call>,
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    tx: &mpsc::UnboundedSender<Answer>,
) {
    let (shared, conn, tx) = (Arc::clone(shared), Arc::clone(conn), tx.clone());
    match group.len() {
        0 => {}
        1 => {
            if let Some(call) = group.pop() {
                tokio::spawn(async move { answer(call, &shared, &conn, &tx).await });
            }
        }
        _ => {
            let calls = std::mem::replace(group, Vec::with_capacity(shared.max_group));
            tokio::spawn(async move {
                // (A group is small: `join_all` keeps its calls in one vector, with no
                // allocation per call, and polls them in turn.)
                let running = calls
                    .into_iter()
                    .map(|call| answer(call, &shared, &conn, &tx));
                futures::future::join_all(running).await;
            });
        }
    }
}

/// Runs one request and sends its answer to the writer.
async fn answer(call: Call, shared: &Shared, conn: &Conn, tx: &mpsc::UnboundedSender<Answer>) {
    let Call {
        frame,
        charges,
        request,
    } = call;
    let response = handle(&shared.services, frame, shared.max_frame).await;
    // The answer's bytes replace the request's until written; they are charged by force
    // (already allocated), which holds reading back while they wait.
    let len = response.body.len();
    let answer_charges = Charges {
        _overall: shared.budget.force(len),
        _connection: conn.budget.force(len),
    };
    drop(charges);
    let _ = tx.send(Answer {
        frame: response,
        _charges: Some(answer_charges),
        _request: Some(request),
    });
}

/// Writes answers as they come, batching small ones into one write; each batch (or large
/// body) must be written within `frame_timeout`, else the peer is not reading and the
/// connection is dropped. An answer's charges are given back once it is written.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut rx: mpsc::UnboundedReceiver<Answer>,
    conn: Arc<Conn>,
    frame_timeout: Duration,
    peer: SocketAddr,
) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    let mut batch: Vec<Answer> = Vec::new();
    let result: Result<(), &'static str> = async {
        while let Some(answer) = rx.recv().await {
            // The answers already queued join this write. Waiting for more (a yield while
            // other calls run) saved writes when client and server shared a runtime, and cost
            // a tenth of the throughput with the server in a process of its own.
            let mut next = Some(answer);
            while let Some(answer) = next.take() {
                Header::put(&answer.frame, &mut buf);
                if answer.frame.body.len() <= WRITE_BATCH {
                    buf.extend_from_slice(&answer.frame.body);
                } else {
                    // Large bodies go out as they are, not copied.
                    write_within(&mut write, &buf, frame_timeout).await?;
                    buf.clear();
                    write_within(&mut write, &answer.frame.body, frame_timeout).await?;
                }
                batch.push(answer);
                if buf.len() < WRITE_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            write_within(&mut write, &buf, frame_timeout).await?;
            buf.clear();
            conn.touch();
            // Written: give back the charges, count the requests answered.
            batch.clear();
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let _ = write.shutdown().await;
        }
        Err(why) => debug!(%peer, why, "dropping the connection"),
    }
}

async fn write_within<W: AsyncWrite + Unpin>(
    write: &mut W,
    bytes: &[u8],
    within: Duration,
) -> Result<(), &'static str> {
    if bytes.is_empty() {
        return Ok(());
    }
    // Flushed: a TLS stream may keep written records buffered (socket full) until flushed,
    // and the next answer may be long in coming (a plain socket's flush does nothing).
    let written = async {
        write.write_all(bytes).await?;
        write.flush().await
    };
    tokio::pin!(written);
    // Most writes complete at once: the timer is armed only for one that has to wait.
    if let std::task::Poll::Ready(done) = futures::poll!(&mut written) {
        return done.map_err(|_| "write failed");
    }
    match tokio::time::timeout(within, written).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write failed"),
        Err(_) => Err("the peer does not read its answers (frame timeout)"),
    }
}

async fn handle(services: &Services, frame: Frame, max_frame: usize) -> Frame {
    let id = frame.request_id;
    let serializer = frame.serializer;
    let text = |status: Status, message: String| {
        Frame::response(id, serializer, status, Bytes::from(message.into_bytes()))
    };
    let (service_key, method, args) = match frame.request_parts() {
        Ok(parts) => parts,
        Err(e) => return text(Status::BadRequest, e.to_string()),
    };
    let Some(service) = services.get(service_key) else {
        // Not the list of what is served here: a caller that names no served service has
        // nothing to learn from this node.
        return text(
            Status::UnknownService,
            format!("no service `{}` here", service_key.escape_debug()),
        );
    };
    let call = service.call(method, serializer, args);
    let response = match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(body)) => Frame::response(id, serializer, Status::Ok, Bytes::from(body)),
        Ok(Err(DispatchError::Handler(error))) => match serializer.encode(&error) {
            Ok(body) => Frame::response(id, serializer, Status::HandlerError, Bytes::from(body)),
            Err(e) => text(Status::ServerError, error_chain(&e)),
        },
        Ok(Err(e @ DispatchError::UnknownMethod(_))) => {
            text(Status::UnknownMethod, error_chain(&e))
        }
        Ok(Err(e @ DispatchError::BadRequest(_))) => text(Status::BadRequest, error_chain(&e)),
        Ok(Err(e)) => text(Status::ServerError, error_chain(&e)),
        Err(_) => {
            warn!(service = service_key, method, "handler panicked");
            text(Status::ServerError, format!("`{method}` panicked"))
        }
    };
    if response.body.len() > max_frame {
        // Sending it would break the connection for every call on it.
        return text(
            Status::ServerError,
            format!(
                "the answer of `{method}` is {} bytes, above the frame limit of {max_frame} bytes",
                response.body.len()
            ),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers are flushed: a stream that buffers what it is given (a TLS stream whose socket
    /// was full keeps its records; here a `BufWriter`) hands them on at once, not when the next
    /// answer comes. Found by the TLS bench: under 64 callers, calls waited for later answers
    /// and timed out.
    #[tokio::test]
    async fn written_answers_are_flushed() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut buffered = tokio::io::BufWriter::new(ours);
        write_within(&mut buffered, b"answer", Duration::from_secs(1))
            .await
            .unwrap();
        let mut read = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(1), peer.read_exact(&mut read))
            .await
            .expect("the answer arrives without another write")
            .unwrap();
        assert_eq!(&read, b"answer");
    }

    #[test]
    fn an_episode_is_reported_once_and_ends_after_a_quiet_period() {
        let mut episode = Episode::default();
        let t0 = Instant::now();
        assert_eq!(episode.recovered(t0), None, "nothing to end");
        assert!(episode.hit(t0), "the first occurrence starts it");
        assert!(!episode.hit(t0 + Duration::from_millis(50)));
        assert!(!episode.hit(t0 + Duration::from_secs(1)));
        // Working again, but too soon after the last occurrence: still the same episode.
        assert_eq!(episode.recovered(t0 + Duration::from_secs(2)), None);
        assert!(!episode.hit(t0 + Duration::from_secs(3)));
        assert_eq!(
            episode.recovered(t0 + Duration::from_secs(3) + EPISODE_QUIET),
            Some(4)
        );
        assert!(episode.hit(t0 + Duration::from_secs(60)), "a new one");
    }

    #[test]
    fn the_default_connection_limit_leaves_a_quarter_of_the_descriptors() {
        let max = default_max_connections();
        assert!((1..=DEFAULT_MAX_CONNECTIONS_CAP).contains(&max));
        if let Some(soft) = open_files_soft_limit() {
            assert!(max <= soft - soft / 4, "{max} of {soft}");
            assert!(max == DEFAULT_MAX_CONNECTIONS_CAP || max + 1 >= soft * 3 / 4);
        }
    }
}
