//! The TCP server: accepts connections, decodes frames, runs each request on its own task and
//! answers on the same connection (responses may come back in any order; the request id
//! matches them). A bad frame closes that one connection; every other client keeps being
//! served.
//!
//! Graceful stop ([`RunningServer::shutdown`]): stop accepting; for a short drain window
//! answer requests that still arrive `Unavailable` (the consumer resends them to another
//! node); let the calls already running finish (bounded by a grace period), answer them,
//! close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::protocol::{write_frames, Frame, FrameCodec, Kind, Status, DEFAULT_MAX_FRAME};
use crate::service::{DispatchError, Service};

/// Default time in-flight calls get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default limit of calls running at once per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default window during which a stopping server answers late requests `Unavailable`.
pub const DEFAULT_DRAIN: Duration = Duration::from_millis(300);

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest accepted frame body.
    pub max_frame: usize,
    /// How long in-flight calls may run after shutdown starts.
    pub shutdown_grace: Duration,
    /// After shutdown starts, how long open connections keep reading to answer late requests
    /// `Unavailable` (so consumers resend them elsewhere) before closing.
    pub drain: Duration,
    /// Calls running at once per connection; beyond, the server stops reading that
    /// connection until one finishes.
    pub max_in_flight: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_frame: DEFAULT_MAX_FRAME,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            drain: DEFAULT_DRAIN,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl ServerOptions {
    /// Sets the largest accepted frame body.
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame;
        self
    }

    /// Sets the limit of calls running at once per connection.
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets the shutdown grace period.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

/// Services by service key (`Name:version`).
type Services = HashMap<String, Arc<dyn Service>>;

/// A server being assembled.
pub struct Server {
    services: Services,
    options: ServerOptions,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish()
    }
}

impl Server {
    /// An empty server.
    pub fn new(options: ServerOptions) -> Self {
        Server {
            services: HashMap::new(),
            options,
        }
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
        let shared = Arc::new(Shared {
            services: self.services,
            codec: FrameCodec::new(self.options.max_frame),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            drain: self.options.drain.min(self.options.shutdown_grace),
            max_in_flight: self.options.max_in_flight.max(1),
        });
        let accept = tokio::spawn(accept_loop(listener, shared));
        info!(%local_addr, "rpc server listening");
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
    codec: FrameCodec,
    cancel: CancellationToken,
    tracker: TaskTracker,
    drain: Duration,
    max_in_flight: usize,
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn_shared = Arc::clone(&shared);
                shared
                    .tracker
                    .spawn(serve_connection(stream, peer, conn_shared));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    debug!(%peer, "connection opened");
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, shared.codec.clone());
    let (tx, rx) = mpsc::channel::<Frame>(1024);
    let writer = tokio::spawn(write_loop(
        FramedWrite::new(write, shared.codec.clone()),
        rx,
        peer,
    ));
    // Once shutdown starts, requests still arriving (sent before the consumer saw the
    // deregistration) are answered `Unavailable` for a short window instead of being lost with
    // the connection: the consumer then sends them to another node, safely, since they never ran.
    let mut draining: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(shared.max_in_flight));
    loop {
        let next = tokio::select! {
            () = shared.cancel.cancelled(), if draining.is_none() => {
                draining = Some(Box::pin(tokio::time::sleep(shared.drain)));
                continue;
            }
            () = async { if let Some(d) = draining.as_mut() { d.await } }, if draining.is_some() => break,
            next = frames.next() => next,
        };
        match next {
            None => break,
            Some(Err(error)) => {
                warn!(%peer, %error, "closing the connection: bad frame");
                break;
            }
            Some(Ok(frame)) if frame.kind != Kind::Request => {
                warn!(%peer, "closing the connection: a response frame sent to the server");
                break;
            }
            Some(Ok(frame)) if draining.is_some() => {
                let response = Frame::response(
                    frame.request_id,
                    frame.serializer,
                    Status::Unavailable,
                    Bytes::from_static(b"the server is shutting down"),
                );
                if tx.send(response).await.is_err() {
                    break;
                }
            }
            Some(Ok(frame)) => {
                // At most `max_in_flight` calls per connection: beyond, stop reading (TCP
                // backpressure) instead of spawning without bound.
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                let tx = tx.clone();
                let shared_call = Arc::clone(&shared);
                shared.tracker.spawn(async move {
                    let response = handle(&shared_call.services, frame).await;
                    let _ = tx.send(response).await;
                    drop(permit);
                });
            }
        }
    }
    drop(frames);
    drop(tx);
    // The writer ends once every running call of this connection has answered.
    let _ = writer.await;
    debug!(%peer, "connection closed");
}

async fn write_loop(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, FrameCodec>,
    mut rx: mpsc::Receiver<Frame>,
    peer: SocketAddr,
) {
    if let Err(error) = write_frames(&mut sink, &mut rx).await {
        debug!(%peer, %error, "write failed, dropping the connection");
    }
}

async fn handle(services: &Services, frame: Frame) -> Frame {
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
        let mut known: Vec<&str> = services.keys().map(String::as_str).collect();
        known.sort_unstable();
        return text(
            Status::UnknownService,
            format!(
                "no service `{service_key}` here (serving: {})",
                known.join(", ")
            ),
        );
    };
    let call = service.call(method, serializer, args);
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(body)) => Frame::response(id, serializer, Status::Ok, Bytes::from(body)),
        Ok(Err(DispatchError::Handler(error))) => match serializer.encode(&error) {
            Ok(body) => Frame::response(id, serializer, Status::HandlerError, Bytes::from(body)),
            Err(e) => text(Status::ServerError, e.to_string()),
        },
        Ok(Err(e @ DispatchError::UnknownMethod(_))) => text(Status::UnknownMethod, e.to_string()),
        Ok(Err(e @ DispatchError::BadRequest(_))) => text(Status::BadRequest, e.to_string()),
        Ok(Err(e)) => text(Status::ServerError, e.to_string()),
        Err(_) => {
            warn!(service = service_key, method, "handler panicked");
            text(Status::ServerError, format!("`{method}` panicked"))
        }
    }
}
