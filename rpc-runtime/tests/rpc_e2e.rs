//! End to end: real TCP, real registries, providers as real processes where they get killed.
//!
//! Providers that must be SIGKILLed run as child processes: this test binary re-runs itself
//! with `E2E_PROVIDER_REGISTRY` set, and the ignored test `provider_process` then serves
//! until killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_conformance::eventually;
use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions};
use rpc_runtime::config::RpcConfig;
use rpc_runtime::consumer::{CallError, Consumer, ConsumerOptions};
use rpc_runtime::fault::TolerantStrategy;
use rpc_runtime::provider::Provider;
use rpc_runtime::rpc_service;
use rpc_runtime::serializer::Serializer;
use rpc_runtime::service::ServiceError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
/// A user.
pub struct User {
    /// Name.
    pub name: String,
    /// Age.
    pub age: u32,
}

rpc_service! {
    /// A test service.
    pub trait Echo {
        /// Returns its argument.
        async fn echo(&self, text: String) -> Result<String, ServiceError>;
        /// The port of the provider that served the call.
        async fn whoami(&self) -> Result<u16, ServiceError>;
        /// Two arguments, a struct back.
        async fn rename(&self, user: User, name: String) -> Result<User, ServiceError>;
        /// Always fails with a typed error.
        async fn fail(&self, code: i32) -> Result<(), ServiceError>;
        /// Sleeps, then answers.
        async fn slow(&self, ms: u64) -> Result<u64, ServiceError>;
    }
    server = EchoServer;
    client = EchoClient;
}

struct EchoImpl {
    state: Arc<EchoState>,
}

/// What a test can observe of a provider's service.
#[derive(Default)]
struct EchoState {
    /// The provider's port, set once it listens.
    port: Mutex<u16>,
    /// `whoami` calls served.
    whoami_served: AtomicUsize,
    /// Told when a `slow` call starts running.
    slow_started: tokio::sync::Notify,
}

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> Result<String, ServiceError> {
        Ok(text)
    }
    async fn whoami(&self) -> Result<u16, ServiceError> {
        self.state.whoami_served.fetch_add(1, Ordering::Relaxed);
        Ok(*self.state.port.lock().unwrap())
    }
    async fn rename(&self, mut user: User, name: String) -> Result<User, ServiceError> {
        user.name = name;
        Ok(user)
    }
    async fn fail(&self, code: i32) -> Result<(), ServiceError> {
        Err(ServiceError::new(code, "asked to fail"))
    }
    async fn slow(&self, ms: u64) -> Result<u64, ServiceError> {
        self.state.slow_started.notify_one();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

fn echo_impl() -> (EchoImpl, Arc<EchoState>) {
    let state = Arc::new(EchoState::default());
    (
        EchoImpl {
            state: Arc::clone(&state),
        },
        state,
    )
}

fn memory_registry(store: &Arc<MemoryStore>) -> Registry {
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(3))
        .with_heartbeat_interval(Duration::from_secs(1));
    Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap()
}

async fn memory_provider(store: &Arc<MemoryStore>) -> rpc_runtime::provider::RunningProvider {
    observed_memory_provider(store).await.0
}

/// [`memory_provider`] and what its service shows.
async fn observed_memory_provider(
    store: &Arc<MemoryStore>,
) -> (rpc_runtime::provider::RunningProvider, Arc<EchoState>) {
    let (service, state) = echo_impl();
    let config = RpcConfig::default().with_server_port(0);
    let running = Provider::new(config)
        .with_registry(memory_registry(store))
        .with_service(EchoServer::new(service))
        .start()
        .await
        .unwrap();
    *state.port.lock().unwrap() = running.local_addr().port();
    (running, state)
}

/// The ports of the nodes `consumer` has cached for `Echo:1.0`.
fn cached_ports(consumer: &Consumer) -> Vec<u16> {
    consumer
        .registry()
        .cached("Echo:1.0")
        .map(|nodes| nodes.nodes().iter().map(|n| n.service_port).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn typed_calls_errors_and_both_serializers_on_the_memory_registry() {
    let store = MemoryStore::new();
    let provider = memory_provider(&store).await;
    for serializer in Serializer::ALL {
        let consumer = Consumer::new(
            memory_registry(&store),
            ConsumerOptions::default().with_serializer(serializer),
        );
        let client = EchoClient::new(consumer.clone());
        assert_eq!(client.service_key(), "Echo:1.0");
        assert_eq!(client.echo("hi".into()).await.unwrap(), "hi");
        assert_eq!(client.whoami().await.unwrap(), provider.local_addr().port());
        let user = User {
            name: "a".into(),
            age: 3,
        };
        let renamed = client.rename(user, "b".into()).await.unwrap();
        assert_eq!(
            renamed,
            User {
                name: "b".into(),
                age: 3
            }
        );
        // A handler error arrives typed.
        match client.fail(42).await {
            Err(CallError::Service(e)) => assert_eq!(e, ServiceError::new(42, "asked to fail")),
            other => panic!("{serializer}: {other:?}"),
        }
        // Unknown method and unknown service are typed too.
        match consumer.call::<_, ()>("Echo:1.0", "nope", &()).await {
            Err(CallError::UnknownMethod { service, method }) => {
                assert_eq!((service.as_str(), method.as_str()), ("Echo:1.0", "nope"));
            }
            other => panic!("{other:?}"),
        }
        // Wrong argument types: the server says so, typed.
        match consumer
            .call::<_, String>("Echo:1.0", "echo", &(1u8, 2u8))
            .await
        {
            Err(CallError::BadRequest { method, message }) => {
                assert_eq!(method, "echo");
                // The whole cause chain: the dispatcher's error, the serializer's, serde's.
                let prefix = format!("bad arguments: {serializer} decode failed: ");
                assert!(
                    message.starts_with(&prefix) && message.len() > prefix.len(),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A service nobody registered.
        match consumer.call::<_, ()>("Nobody:1.0", "x", &()).await {
            Err(e @ CallError::NoProvider { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "no provider for service Nobody:1.0 (registry: memory)"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    provider.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_calls_are_multiplexed_and_answers_matched() {
    let store = MemoryStore::new();
    let provider = memory_provider(&store).await;
    let consumer = Consumer::new(memory_registry(&store), ConsumerOptions::default());
    let client = EchoClient::new(consumer);
    // Slow and fast calls interleaved on one connection: each gets its own answer.
    let calls = (0..200u64).map(|i| {
        let client = client.clone();
        async move {
            if i % 10 == 0 {
                assert_eq!(client.slow(50).await.unwrap(), 50);
            } else {
                let text = format!("call {i}");
                assert_eq!(client.echo(text.clone()).await.unwrap(), text);
            }
        }
    });
    futures::future::join_all(calls).await;
    provider.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_deregisters_first_and_finishes_in_flight_calls() {
    let store = MemoryStore::new();
    let (provider, state) = observed_memory_provider(&store).await;
    let consumer = Consumer::new(memory_registry(&store), ConsumerOptions::default());
    let client = EchoClient::new(consumer.clone());
    client.echo("warm".into()).await.unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.slow(400).await }
    });
    // The call runs on the provider when shutdown starts.
    state.slow_started.notified().await;
    let report = provider.shutdown().await.unwrap();
    assert!(report.drained);
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        400,
        "the running call finished"
    );
    let started = Instant::now();
    match client.echo("after".into()).await {
        Err(CallError::NoProvider { service, registry }) => {
            assert_eq!((service.as_str(), registry), ("Echo:1.0", "memory"));
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < consumer.options().timeout);
}

#[tokio::test]
async fn fail_safe_returns_the_default_value() {
    let store = MemoryStore::new();
    let consumer = Consumer::new(
        memory_registry(&store),
        ConsumerOptions::default().with_tolerant(TolerantStrategy::FailSafe),
    );
    let client = EchoClient::new(consumer);
    assert_eq!(client.whoami().await.unwrap(), 0, "no provider: default");
}

/// Writes `bytes` on a raw connection and tells whether the server closed it.
fn attack(port: u16, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_one_connection_only() {
    let store = MemoryStore::new();
    let provider = memory_provider(&store).await;
    let port = provider.local_addr().port();
    let consumer = Consumer::new(memory_registry(&store), ConsumerOptions::default());
    let client = EchoClient::new(consumer);
    client.echo("warm".into()).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn({
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("good {n}");
                assert_eq!(client.echo(text.clone()).await.unwrap(), text);
                n += 1;
            }
            n
        }
    });
    let attacks = tokio::task::spawn_blocking(move || {
        let mut header = vec![0x52, 0x50, 1, 1, 1, 0];
        header.extend_from_slice(&7u64.to_be_bytes());
        let mut oversized = header.clone();
        oversized.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut bad_kind = vec![0x52, 0x50, 1, 1, 9, 0];
        bad_kind.extend_from_slice(&[0; 12]);
        let mut truncated_body = header.clone();
        truncated_body.extend_from_slice(&3u32.to_be_bytes());
        truncated_body.extend_from_slice(&[0, 200, b'x']); // name length past the end
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("oversized", oversized),
            ("bad kind", bad_kind),
            (
                "bad version",
                vec![0x52, 0x50, 99, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for _ in 0..20 {
            for (name, bytes) in &cases {
                assert!(
                    attack(port, bytes),
                    "{name}: the server closed the connection"
                );
            }
            // A truncated frame, then the attacker hangs up.
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&header[..10]).unwrap();
            drop(s);
            // A valid frame with a malformed request body gets a BadRequest answer.
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&truncated_body).unwrap();
            let mut answer = [0u8; 18];
            s.read_exact(&mut answer).unwrap();
            assert_eq!(answer[4], 2, "a response");
            assert_eq!(answer[5], 3, "status BadRequest");
        }
    });
    attacks.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let served = good.await.unwrap();
    assert!(served > 0);
    assert_eq!(
        client.echo("still fine".into()).await.unwrap(),
        "still fine"
    );
    provider.shutdown().await.unwrap();
}

// ---- real processes on a real etcd ----

/// Not a test: the body of a provider child process (see the module docs).
#[test]
#[ignore = "run as a child process by the e2e tests"]
fn provider_process() {
    let address = std::env::var("E2E_PROVIDER_REGISTRY").expect(
        "provider_process is the body of a child process of the e2e tests, which set \
         E2E_PROVIDER_REGISTRY; it is not a test to run on its own",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let mut config = RpcConfig::default()
            .with_registry("etcd")
            .with_address(address)
            .with_server_port(0);
        config.registry_config.ttl = Duration::from_secs(3);
        config.registry_config.heartbeat_interval = Duration::from_secs(1);
        let (service, state) = echo_impl();
        let running = Provider::new(config)
            .with_service(EchoServer::new(service))
            .start()
            .await
            .unwrap();
        *state.port.lock().unwrap() = running.local_addr().port();
        let signal = rpc_runtime::provider::shutdown_signal();
        println!("READY {}", running.local_addr().port());
        std::io::stdout().flush().unwrap();
        signal.await;
        running.shutdown().await.unwrap();
        println!("STOPPED");
    });
}

struct ProviderProcess {
    child: Child,
    port: u16,
}

impl ProviderProcess {
    fn spawn(etcd: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "provider_process", "--ignored", "--nocapture"])
            .env("E2E_PROVIDER_REGISTRY", etcd)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("provider printed READY").unwrap();
            if let Some(port) = line.strip_prefix("READY ") {
                break port.trim().parse().unwrap();
            }
        };
        // Keep draining its output.
        std::thread::spawn(move || for _ in lines {});
        ProviderProcess { child, port }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_on_etcd_sigkill_one_then_stop_the_last() {
    use std::collections::HashMap;

    let etcd = registry_test_support::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut a = ProviderProcess::spawn(&etcd.endpoint());
    let mut b = ProviderProcess::spawn(&etcd.endpoint());

    let mut config = RpcConfig::default()
        .with_registry("etcd")
        .with_address(etcd.endpoint());
    config.tolerant_strategy = rpc_runtime::config::TolerantStrategyKind::FailOver;
    config.retry_strategy = rpc_runtime::config::RetryStrategyKind::No;
    let consumer = Consumer::connect(&config).await.unwrap();
    let timeout = Duration::from_secs(1);
    let consumer = Consumer::new(
        consumer.registry().clone(),
        consumer.options().clone().with_timeout(timeout),
    );
    let client = EchoClient::new(consumer.clone());

    // Spread across both.
    let mut seen: HashMap<u16, u32> = HashMap::new();
    for _ in 0..20 {
        *seen.entry(client.whoami().await.unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "round robin uses both providers: {seen:?}");
    assert_eq!(seen[&a.port], 10);

    // 8 callers keep calling; SIGKILL provider A in the middle: every call still succeeds.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (client, stop, calls) = (client.clone(), Arc::clone(&stop), Arc::clone(&calls));
            tokio::spawn(async move {
                let mut ports = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.whoami().await {
                        Ok(port) => ports.push(port),
                        Err(e) => panic!("a call failed: {}", registry_core::error_chain(&e)),
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                ports
            })
        })
        .collect();
    let made = || calls.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(10),
        "100 calls before the kill",
        || async { made() > 100 },
    )
    .await;
    a.signal("-KILL");
    let _ = a.child.wait();
    // The calls that find A gone evict it; the callers go on with B.
    eventually(Duration::from_secs(10), "A evicted", || async {
        cached_ports(&consumer) == [b.port]
    })
    .await;
    let after_eviction = made();
    eventually(
        Duration::from_secs(10),
        "100 calls after the eviction",
        || async { made() > after_eviction + 100 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut after_kill = 0;
    let mut total = 0;
    for caller in callers {
        let ports = caller.await.unwrap();
        total += ports.len();
        after_kill += ports.iter().rev().take_while(|p| **p == b.port).count();
    }
    assert!(total > 100, "calls made: {total}");
    assert!(after_kill > 0);
    // A is out of the cache at once (evicted), long before its TTL.
    assert_eq!(cached_ports(&consumer), [b.port]);

    // Stop the last provider gracefully: the next call fails with the no-provider error.
    b.signal("-TERM");
    let status = b.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    let started = Instant::now();
    let err = client.whoami().await.unwrap_err();
    assert!(started.elapsed() < timeout, "within one call timeout");
    assert!(
        matches!(err, CallError::NoProvider { .. }),
        "{}",
        registry_core::error_chain(&err)
    );
    assert_eq!(
        err.to_string(),
        "no provider for service Echo:1.0 (registry: etcd)"
    );
}

// ---- tolerant and retry strategies against misbehaving nodes ----

/// A node that accepts connections, reads, and never answers (`hang`) or closes each
/// connection as soon as a request arrives (`!hang`).
fn bad_node(hang: bool) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf);
            if hang {
                held.push(stream);
            }
        }
    });
    port
}

/// A port where nothing listens.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn register_fake(store: &Arc<MemoryStore>, port: u16) -> Registry {
    let registry = memory_registry(store);
    registry
        .register(registry_core::ServiceMetaInfo::new(
            "Echo",
            "127.0.0.1",
            port,
        ))
        .await
        .unwrap();
    registry
}

fn recorded(
    options: ConsumerOptions,
) -> (
    ConsumerOptions,
    Arc<Mutex<Vec<rpc_runtime::consumer::CallRecord>>>,
) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&records);
    (
        options.with_observer(move |r| sink.lock().unwrap().push(r.clone())),
        records,
    )
}

#[tokio::test]
async fn a_refused_node_is_evicted_and_skipped_whatever_the_strategy() {
    let store = MemoryStore::new();
    let provider = memory_provider(&store).await;
    let _fake = register_fake(&store, dead_port()).await;
    let consumer = Consumer::new(memory_registry(&store), ConsumerOptions::default());
    assert_eq!(
        consumer
            .registry()
            .discover("Echo:1.0")
            .await
            .unwrap()
            .len(),
        2
    );
    let client = EchoClient::new(consumer.clone());
    // failFast (the default): the refused call never ran, so it still moves on.
    for _ in 0..4 {
        assert_eq!(client.whoami().await.unwrap(), provider.local_addr().port());
    }
    let cached = consumer.registry().cached("Echo:1.0").unwrap();
    assert_eq!(cached.len(), 1, "the dead node left the cache at once");
    provider.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broken_connection_fails_fast_or_fails_over() {
    let store = MemoryStore::new();
    let provider = memory_provider(&store).await;
    let _fake = register_fake(&store, bad_node(false)).await;

    // failFast: the request may have run on the node that broke the connection: error.
    let consumer = Consumer::new(memory_registry(&store), ConsumerOptions::default());
    let client = EchoClient::new(consumer);
    let mut broken = 0;
    for _ in 0..2 {
        match client.whoami().await {
            Ok(port) => assert_eq!(port, provider.local_addr().port()),
            Err(CallError::Transport(e)) => {
                assert!(e.to_string().contains("broke"), "{e}");
                broken += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        broken, 1,
        "round robin hit the bad node once and failed fast"
    );

    // failOver: every call succeeds.
    let _fake = register_fake(&store, bad_node(false)).await;
    let consumer = Consumer::new(
        memory_registry(&store),
        ConsumerOptions::default().with_tolerant(TolerantStrategy::FailOver),
    );
    let client = EchoClient::new(consumer);
    for _ in 0..6 {
        assert_eq!(client.whoami().await.unwrap(), provider.local_addr().port());
    }
    provider.shutdown().await.unwrap();
}

#[tokio::test]
async fn retries_repeat_on_the_same_node_after_a_timeout_then_fail_over() {
    use rpc_runtime::fault::RetryStrategy;
    let store = MemoryStore::new();
    let hanging = bad_node(true);
    let _fake = register_fake(&store, hanging).await;
    let timeout = Duration::from_millis(200);
    let retry = RetryStrategy::FixedInterval {
        attempts: 3,
        interval: Duration::from_millis(10),
    };

    // Only the hanging node: 3 attempts, then the timeout error.
    let (options, records) = recorded(
        ConsumerOptions::default()
            .with_timeout(timeout)
            .with_retry(retry),
    );
    let consumer = Consumer::new(memory_registry(&store), options);
    let started = Instant::now();
    match consumer.call::<_, u16>("Echo:1.0", "whoami", &()).await {
        Err(CallError::Transport(e)) => assert!(e.to_string().contains("no answer"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= timeout * 3);
    assert_eq!(records.lock().unwrap()[0].attempts, 3);

    // With a healthy provider too and failOver: after the retries, the call moves on.
    let provider = memory_provider(&store).await;
    let (options, records) = recorded(
        ConsumerOptions::default()
            .with_timeout(timeout)
            .with_retry(retry)
            .with_tolerant(TolerantStrategy::FailOver)
            .with_load_balancer(rpc_runtime::config::LoadBalancerKind::ConsistentHash),
    );
    let consumer = Consumer::new(memory_registry(&store), options);
    let client = EchoClient::new(consumer);
    for _ in 0..3 {
        assert_eq!(client.whoami().await.unwrap(), provider.local_addr().port());
    }
    let records = records.lock().unwrap().clone();
    assert!(records.iter().all(|r| r.ok));
    let attempts: Vec<u32> = records.iter().map(|r| r.attempts).collect();
    // consistentHash sends the same request to the same node every time: either always the
    // healthy one (1 attempt) or always the hanging one first (3 attempts + 1 on the other).
    assert!(
        attempts == [1, 1, 1] || attempts == [4, 4, 4],
        "attempts per call: {attempts:?}"
    );
    provider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_loses_no_call_even_when_consumers_still_send_to_it() {
    // The consumer discovers through another store where both providers stay registered, as
    // if the deregistration had not reached it yet: it keeps sending calls to the provider
    // that stops. Late calls are answered `Unavailable` and resent to the other provider,
    // then the refused connections evict the node; with failFast, not one call fails.
    let store = MemoryStore::new();
    let (a, a_state) = observed_memory_provider(&store).await;
    let (b, b_state) = observed_memory_provider(&store).await;
    let a_port = a.local_addr().port();
    let lagging = MemoryStore::new();
    let _ghost_a = register_fake(&lagging, a_port).await;
    let _ghost_b = register_fake(&lagging, b.local_addr().port()).await;
    let consumer = Consumer::new(memory_registry(&lagging), ConsumerOptions::default());
    let client = EchoClient::new(consumer.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (client, stop) = (client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut served_by_a = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    match client.whoami().await {
                        Ok(port) if port == a_port => served_by_a += 1,
                        Ok(_) => {}
                        Err(e) => panic!("a call failed: {}", registry_core::error_chain(&e)),
                    }
                }
                served_by_a
            })
        })
        .collect();
    let served = |state: &EchoState| state.whoami_served.load(Ordering::Relaxed);
    eventually(Duration::from_secs(10), "A serves calls", || async {
        served(&a_state) > 50
    })
    .await;
    assert!(a.shutdown().await.unwrap().drained);
    // Calls that reach A after it stopped are refused: A leaves the consumer's cache, and the
    // callers go on with B.
    eventually(Duration::from_secs(10), "A evicted", || async {
        cached_ports(&consumer) == [b.local_addr().port()]
    })
    .await;
    let by_b = served(&b_state);
    eventually(Duration::from_secs(10), "B serves what A did", || async {
        served(&b_state) > by_b + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut by_a = 0;
    for c in callers {
        by_a += c.await.unwrap();
    }
    assert!(by_a > 0, "A served calls before it stopped");
    assert_ne!(client.whoami().await.unwrap(), a_port);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_during_shutdown_are_answered_unavailable_not_dropped() {
    use rpc_runtime::protocol::{Frame, FrameCodec};
    use tokio_util::codec::{Decoder, Encoder};

    let store = MemoryStore::new();
    let provider = memory_provider(&store).await;
    let port = provider.local_addr().port();
    let request = |id: u64| {
        let mut buf = bytes::BytesMut::new();
        FrameCodec::default()
            .encode(
                Frame::request(id, Serializer::Json, "Echo:1.0", "whoami", b"null"),
                &mut buf,
            )
            .unwrap();
        buf.to_vec()
    };
    let read_frame = |s: &mut TcpStream| {
        let mut buf = bytes::BytesMut::new();
        let mut chunk = [0u8; 256];
        loop {
            if let Some(frame) = FrameCodec::default().decode(&mut buf).unwrap() {
                return Some(frame);
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(&request(1)).unwrap();
    let answer = read_frame(&mut conn).expect("an answer");
    assert_eq!(answer.status, rpc_runtime::protocol::Status::Ok);

    let stopping = tokio::spawn(provider.shutdown());
    // The server stops accepting when its shutdown starts: from then on, for the drain window
    // (300 ms), open connections answer late requests `Unavailable`.
    eventually(Duration::from_secs(5), "the listener is closed", || async {
        matches!(
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;
    let answer = tokio::task::spawn_blocking(move || {
        conn.write_all(&request(2)).unwrap();
        read_frame(&mut conn)
    })
    .await
    .unwrap()
    .expect("a late request is answered, not dropped with the connection");
    assert_eq!(answer.request_id, 2);
    assert_eq!(answer.status, rpc_runtime::protocol::Status::Unavailable);
    assert!(stopping.await.unwrap().unwrap().drained);
}

#[tokio::test]
async fn calls_per_connection_are_bounded_by_max_in_flight() {
    let store = MemoryStore::new();
    let (service, _) = echo_impl();
    let options = rpc_runtime::server::ServerOptions::default().with_max_in_flight(2);
    let provider = Provider::new(RpcConfig::default().with_server_port(0))
        .with_registry(memory_registry(&store))
        .with_service(EchoServer::new(service))
        .with_server_options(options)
        .start()
        .await
        .unwrap();
    let consumer = Consumer::new(memory_registry(&store), ConsumerOptions::default());
    let client = EchoClient::new(consumer);
    client.echo("warm".into()).await.unwrap();
    let started = Instant::now();
    let calls = (0..6).map(|_| client.slow(200));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap(), 200);
    }
    // Six 200 ms calls, two at a time on the one connection: three waves.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    provider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_node_gets_no_call_and_gets_them_back_when_enabled() {
    let store = MemoryStore::new();
    let (a, a_state) = observed_memory_provider(&store).await;
    let (b, b_state) = observed_memory_provider(&store).await;
    let consumer = Consumer::new(memory_registry(&store), ConsumerOptions::default());
    let client = EchoClient::new(consumer.clone());
    let admin = memory_registry(&store);
    let a_address = format!("127.0.0.1:{}", a.local_addr().port());
    eventually(Duration::from_secs(5), "both providers known", || async {
        consumer
            .registry()
            .discover("Echo:1.0")
            .await
            .unwrap()
            .len()
            == 2
    })
    .await;
    admin
        .set_override("Echo:1.0", &a_address, |o| o.enabled = Some(false))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the consumer sees a disabled",
        || async {
            consumer
                .registry()
                .discover("Echo:1.0")
                .await
                .unwrap()
                .iter()
                .any(|n| n.address() == a_address && !n.enabled)
        },
    )
    .await;
    let served_by_a = a_state.whoami_served.load(Ordering::Relaxed);
    for _ in 0..50 {
        assert_eq!(client.whoami().await.unwrap(), b.local_addr().port());
    }
    assert_eq!(a_state.whoami_served.load(Ordering::Relaxed), served_by_a);
    assert!(b_state.whoami_served.load(Ordering::Relaxed) >= 50);
    // The last node disabled too: no provider takes traffic, and the call says so.
    let b_address = format!("127.0.0.1:{}", b.local_addr().port());
    admin
        .set_override("Echo:1.0", &b_address, |o| o.enabled = Some(false))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "no enabled provider", || async {
        matches!(client.whoami().await, Err(CallError::NoProvider { .. }))
    })
    .await;
    admin
        .set_override("Echo:1.0", &a_address, |o| o.enabled = None)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "a takes calls again", || async {
        client.whoami().await.ok() == Some(a.local_addr().port())
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
