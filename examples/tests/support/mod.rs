//! The shared story of the gRPC bridge tests (`tonic_registry`, `volo_registry`): greeter
//! servers registered with `Registry::register_guard`, a client calling them through the
//! registry (a `registry_tonic` channel, or a volo client with a `registry_volo` discover),
//! one server killed mid-run and another stopped gracefully. On etcd the servers are the
//! example binaries as real processes (SIGKILL, SIGTERM); on the memory backend (a store
//! inside this process) each server runs on its own Tokio runtime, and a kill is that runtime
//! shut down at once: every task and socket dropped, nothing deregistered, the node left to
//! expire with its lease.
//!
//! Each event prints the calls made while it lasted and how many failed (an attempt that
//! failed, and a call that still failed after the client's retries); the figures are quoted in
//! `BENCHMARKS.md`. Run with `--no-capture` to see them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::greeter::{self, pb, GreeterImpl, SERVICE_KEY};
use examples::volo_greeter::{self, VoloGreeter};
use futures::future::BoxFuture;
use futures::StreamExt as _;
use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceWatch};
use registry_test_support::EtcdServer;
use registry_tonic::RegistryChannel;

/// Which stack serves and calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// tonic servers, a tonic client through a `registry_tonic` channel.
    Tonic,
    /// volo-grpc servers, a volo-grpc client through a `registry_volo::VoloDiscover`.
    Volo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tonic => "tonic",
            Kind::Volo => "volo",
        }
    }

    fn server_binary(self) -> &'static str {
        match self {
            Kind::Tonic => env!("CARGO_BIN_EXE_greeter_server"),
            Kind::Volo => env!("CARGO_BIN_EXE_volo_greeter_server"),
        }
    }
}

/// One call: the port of the server that answered.
type Call = Arc<dyn Fn(String) -> BoxFuture<'static, Result<u16, String>> + Send + Sync>;

async fn client(kind: Kind, consumer: &Registry) -> Call {
    match kind {
        Kind::Tonic => {
            let channel = RegistryChannel::new(consumer.clone(), SERVICE_KEY)
                .with_timeout(Duration::from_secs(2))
                .with_connect_timeout(Duration::from_secs(1))
                .connect()
                .await
                .unwrap();
            let client = pb::greeter_client::GreeterClient::new(channel);
            Arc::new(move |name| {
                let mut client = client.clone();
                Box::pin(async move {
                    let reply = client
                        .say_hello(pb::HelloRequest { name })
                        .await
                        .map_err(|s| s.to_string())?;
                    Ok(u16::try_from(reply.into_inner().port).unwrap())
                })
            })
        }
        Kind::Volo => {
            let client = volo_greeter::client(consumer, Duration::from_secs(2));
            Arc::new(move |name| {
                let client = client.clone();
                Box::pin(async move {
                    volo_greeter::say_hello(&client, &name)
                        .await
                        .map_err(|s| s.to_string())
                })
            })
        }
    }
}

/// Concurrent callers, each pausing this long between calls.
const CALLERS: usize = 4;
const PAUSE: Duration = Duration::from_millis(2);
/// Attempts after the first one before a call counts as failed.
const RETRIES: u32 = 3;

// ---- servers ----

/// A `greeter_server` process.
pub struct ProcessServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ProcessServer {
    fn spawn(kind: Kind, etcd: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(kind.server_binary())
            .current_dir(dir.path())
            .env("RPC_REGISTRY_CONFIG_REGISTRY", "etcd")
            .env("RPC_REGISTRY_CONFIG_ADDRESS", etcd)
            .env("RPC_REGISTRY_CONFIG_TTL", "2")
            .env("RPC_REGISTRY_CONFIG_HEARTBEAT_INTERVAL", "500ms")
            .env("RPC_SERVER_HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("greeter_server printed READY").unwrap();
            if let Some(port) = line.strip_prefix("READY ") {
                break port.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for ProcessServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A greeter with its own registry client on its own runtime, in this process.
pub struct InProcessServer {
    runtime: Option<tokio::runtime::Runtime>,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl InProcessServer {
    fn start(kind: Kind, store: &Arc<MemoryStore>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let store = Arc::clone(store);
        runtime.spawn(async move {
            let registry = memory_registry(&store);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let registration = greeter::register(&registry, "127.0.0.1", port)
                .await
                .unwrap();
            ready_tx.send(port).unwrap();
            let stop = registration.shutdown_on(async {
                let _ = stop_rx.await;
            });
            match kind {
                Kind::Tonic => greeter::serve(listener, GreeterImpl::new(port), stop)
                    .await
                    .unwrap(),
                Kind::Volo => volo_greeter::serve(listener, VoloGreeter::new(port), stop)
                    .await
                    .unwrap(),
            }
            registry.shutdown().await.unwrap();
            let _ = stopped_tx.send(());
        });
        let port = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            runtime: Some(runtime),
            port,
            stop: Some(stop_tx),
            stopped: Some(stopped_rx),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub enum Server {
    Process(ProcessServer),
    InProcess(InProcessServer),
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Process(s) => s.port,
            Server::InProcess(s) => s.port,
        }
    }

    /// Gone at once: no deregistration, sockets closed by the kernel (or the runtime).
    fn kill(&mut self) {
        match self {
            Server::Process(s) => {
                s.signal("-KILL");
                let _ = s.child.wait();
            }
            Server::InProcess(s) => {
                if let Some(runtime) = s.runtime.take() {
                    runtime.shutdown_background();
                }
            }
        }
    }

    /// Asks for a graceful stop (SIGTERM): deregister, grace, drain.
    fn terminate(&mut self) {
        match self {
            Server::Process(s) => s.signal("-TERM"),
            Server::InProcess(s) => {
                let _ = s.stop.take().unwrap().send(());
            }
        }
    }

    async fn wait_stopped(&mut self) {
        match self {
            Server::Process(s) => {
                let child = &mut s.child;
                let status = loop {
                    if let Some(status) = child.try_wait().unwrap() {
                        break status;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                assert!(status.success(), "graceful exit: {status:?}");
            }
            Server::InProcess(s) => {
                tokio::time::timeout(Duration::from_secs(10), s.stopped.take().unwrap())
                    .await
                    .expect("stopped within 10 s")
                    .unwrap();
            }
        }
    }
}

fn memory_registry(store: &Arc<MemoryStore>) -> Registry {
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(1))
        .with_heartbeat_interval(Duration::from_millis(300));
    Registry::new(Arc::new(MemoryBackend::new(Arc::clone(store))), options).unwrap()
}

/// Where the servers register.
pub enum Store {
    Etcd(EtcdServer),
    Memory(Arc<MemoryStore>),
}

impl Store {
    fn name(&self) -> &'static str {
        match self {
            Store::Etcd(_) => "etcd",
            Store::Memory(_) => "memory",
        }
    }

    /// The least time a killed server's node can stay listed: its TTL less one heartbeat
    /// interval, with slack (etcd: 2 s and 500 ms; memory: 1 s and 300 ms).
    fn min_expiry(&self) -> Duration {
        match self {
            Store::Etcd(_) => Duration::from_millis(1000),
            Store::Memory(_) => Duration::from_millis(500),
        }
    }

    fn start_server(&self, kind: Kind) -> Server {
        match self {
            Store::Etcd(etcd) => Server::Process(ProcessServer::spawn(kind, &etcd.endpoint())),
            Store::Memory(store) => Server::InProcess(InProcessServer::start(kind, store)),
        }
    }

    async fn consumer(&self) -> Registry {
        match self {
            Store::Etcd(etcd) => {
                let config = rpc_runtime::config::RpcConfig::default()
                    .with_registry("etcd")
                    .with_address(etcd.endpoint());
                rpc_config::connect::connect_registry(&config.registry_config)
                    .await
                    .unwrap()
            }
            Store::Memory(store) => memory_registry(store),
        }
    }
}

// ---- the client side ----

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    failed_attempts: AtomicU64,
    failed_calls: AtomicU64,
    /// Port -> (calls served, start of the last call it served).
    served: Mutex<HashMap<u16, (u64, Instant)>>,
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    calls: u64,
    failed_attempts: u64,
    failed_calls: u64,
}

impl Stats {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            calls: self.calls.load(Ordering::SeqCst),
            failed_attempts: self.failed_attempts.load(Ordering::SeqCst),
            failed_calls: self.failed_calls.load(Ordering::SeqCst),
        }
    }

    fn served_by(&self, port: u16) -> u64 {
        self.served.lock().unwrap().get(&port).map_or(0, |s| s.0)
    }

    fn last_started_on(&self, port: u16) -> Option<Instant> {
        self.served.lock().unwrap().get(&port).map(|s| s.1)
    }
}

/// Callers that keep calling through `call`, retrying a failed call up to [`RETRIES`]
/// times (the balancer picks again each time).
fn start_callers(
    call: &Call,
    stats: &Arc<Stats>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CALLERS)
        .map(|i| {
            let call = Arc::clone(call);
            let (stats, stop) = (Arc::clone(stats), Arc::clone(stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let mut attempt = 0;
                    loop {
                        let reply = tokio::time::timeout(
                            Duration::from_secs(5),
                            call(format!("caller {i}")),
                        )
                        .await;
                        match reply {
                            Ok(Ok(port)) => {
                                let mut served = stats.served.lock().unwrap();
                                let entry = served.entry(port).or_insert((0, started));
                                entry.0 += 1;
                                entry.1 = entry.1.max(started);
                                break;
                            }
                            Ok(Err(_)) | Err(_) => {
                                stats.failed_attempts.fetch_add(1, Ordering::SeqCst);
                                if attempt == RETRIES {
                                    stats.failed_calls.fetch_add(1, Ordering::SeqCst);
                                    break;
                                }
                                attempt += 1;
                            }
                        }
                    }
                    stats.calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(PAUSE).await;
                }
            })
        })
        .collect()
}

async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// When the consumer's watch shows the node on `port` gone.
async fn gone(changes: &mut ServiceWatch, port: u16) -> Instant {
    loop {
        let change = tokio::time::timeout(Duration::from_secs(30), changes.next())
            .await
            .expect("the node leaves within 30 s")
            .expect("the watch goes on");
        if !change.nodes.iter().any(|n| n.service_port == port) {
            return Instant::now();
        }
    }
}

fn cached_ports(registry: &Registry) -> Vec<u16> {
    let mut ports: Vec<u16> = registry
        .cached(SERVICE_KEY)
        .map(|nodes| nodes.iter().map(|n| n.service_port).collect())
        .unwrap_or_default();
    ports.sort_unstable();
    ports
}

fn sorted(mut ports: Vec<u16>) -> Vec<u16> {
    ports.sort_unstable();
    ports
}

/// The whole story on one store with one stack; prints the failed calls of each event.
pub async fn story(store: Store, kind: Kind) {
    let name = format!("{}, {}", kind.name(), store.name());
    let mut a = store.start_server(kind);
    let mut b = store.start_server(kind);
    let consumer = store.consumer().await;
    let call = client(kind, &consumer).await;
    // The consumer's cache entry (a volo client lists the service at its first call only).
    let _ = consumer.discover(SERVICE_KEY).await;
    eventually(Duration::from_secs(10), "both servers listed", || {
        cached_ports(&consumer) == sorted(vec![a.port(), b.port()])
    })
    .await;

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers = start_callers(&call, &stats, &stop);
    eventually(Duration::from_secs(10), "both servers called", || {
        stats.served_by(a.port()) > 50 && stats.served_by(b.port()) > 50
    })
    .await;
    let warm = stats.snapshot();
    assert_eq!(warm.failed_attempts, 0, "no failure while both serve");

    // ---- A killed: calls to it fail until the registry drops it (its TTL) ----
    let before = stats.snapshot();
    let mut changes = consumer.watch(SERVICE_KEY).await.unwrap();
    changes.next().await.unwrap();
    let killed = Instant::now();
    a.kill();
    let ttl_removal = gone(&mut changes, a.port()).await - killed;
    let during = stats.snapshot();
    // The channel has dropped it: no attempt fails any more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let settled = stats.snapshot();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = stats.snapshot();
    let kill = Event::between(before, during);
    println!(
        "registry[{name}] SIGKILL: {} calls in the {:.2} s until the registry dropped the node: {} attempts failed, {} calls failed after {RETRIES} retries; then {} calls, {} failed attempts",
        kill.calls,
        ttl_removal.as_secs_f64(),
        kill.failed_attempts,
        kill.failed_calls,
        after.calls - settled.calls,
        after.failed_attempts - settled.failed_attempts,
    );
    assert!(
        ttl_removal >= store.min_expiry(),
        "the killed server was not deregistered: its node expired ({ttl_removal:?})"
    );
    assert_eq!(
        after.failed_attempts, settled.failed_attempts,
        "once the registry dropped the killed node, no call goes to it"
    );
    assert!(
        kill.failed_calls * 4 <= kill.calls.max(4),
        "most calls succeed with retries while the killed node is listed: {kill:?}"
    );

    // ---- C starts: the channel inserts it ----
    let mut c = store.start_server(kind);
    eventually(Duration::from_secs(10), "the new server called", || {
        stats.served_by(c.port()) > 50
    })
    .await;

    // ---- B stopped gracefully: deregistered, grace, then stopped ----
    let before = stats.snapshot();
    let mut changes = consumer.watch(SERVICE_KEY).await.unwrap();
    changes.next().await.unwrap();
    let asked = Instant::now();
    b.terminate();
    let seen_at = gone(&mut changes, b.port()).await;
    let seen = seen_at - asked;
    b.wait_stopped().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let graceful = Event::between(before, stats.snapshot());
    let last_to_b = stats.last_started_on(b.port()).unwrap();
    let last_after_seen_ms = if last_to_b >= seen_at {
        (last_to_b - seen_at).as_secs_f64() * 1e3
    } else {
        -((seen_at - last_to_b).as_secs_f64() * 1e3)
    };
    println!(
        "registry[{name}] graceful stop: {} calls from the signal until 200 ms after the exit: {} attempts failed, {} calls failed after {RETRIES} retries; deregistration seen {:.1} ms after the signal, last call to the stopped node started {last_after_seen_ms:+.1} ms from then",
        graceful.calls,
        graceful.failed_attempts,
        graceful.failed_calls,
        seen.as_secs_f64() * 1e3,
    );
    assert_eq!(
        graceful.failed_calls, 0,
        "a graceful stop loses no call: {graceful:?}"
    );
    assert!(
        last_after_seen_ms < 100.0,
        "no call starts on the stopped node 100 ms after its deregistration was seen ({last_after_seen_ms:.1} ms)"
    );

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    c.terminate();
    c.wait_stopped().await;
    consumer.shutdown().await.unwrap();
}

#[derive(Debug)]
struct Event {
    calls: u64,
    failed_attempts: u64,
    failed_calls: u64,
}

impl Event {
    fn between(before: Snapshot, after: Snapshot) -> Self {
        Self {
            calls: after.calls - before.calls,
            failed_attempts: after.failed_attempts - before.failed_attempts,
            failed_calls: after.failed_calls - before.failed_calls,
        }
    }
}
