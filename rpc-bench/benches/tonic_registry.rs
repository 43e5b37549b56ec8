//! The tonic bridge (`registry-tonic`) measured:
//!
//! 1. **Overhead**: calls per second and latency percentiles of a tonic unary echo through a
//!    registry channel (`RegistryChannel`, kept in sync with the `memory` registry) against a
//!    static balanced channel (`Channel::balance_list`) to the same two servers: the same
//!    tonic balancer, only the source of its endpoints differs. Rounds interleaved (the order
//!    alternates), medians of the rounds.
//! 2. **Deregistration to the last call**: under continuous load, a node is deregistered
//!    (`Registry::unregister`); we take the moment the consumer's own watch shows it gone (the
//!    registry's propagation) and the arrival time of the last call the node received (it
//!    keeps serving, so a late call would be seen). On the `memory` store and on a real etcd.
//!
//! `cargo bench -p rpc-bench --bench tonic_registry` (`-- --secs S --rounds R --callers C
//! --samples N --load-callers L --load-pause-us P --stores memory,etcd`). Prints Markdown
//! tables for `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt as _;
use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
use registry_test_support::EtcdServer;
use registry_tonic::RegistryChannel;
use rpc_bench::load::{self, Throughput};
use rpc_bench::pb::echo_client::EchoClient;
use rpc_bench::pb::echo_server::{Echo, EchoServer};
use rpc_bench::pb::{EchoReply, EchoRequest};
use tonic::transport::{Channel, Endpoint};

const SERVICE: &str = "echo";
const KEY: &str = "echo:1.0";

/// The tonic bridge against a static channel; deregistration to the last call.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds measured per throughput run (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Throughput rounds; each runs the static channel, the registry channel and the static
    /// channel again (the A/A noise floor), in a rotating order.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Deregistrations measured per store.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// Callers keeping the load on during the deregistrations.
    #[arg(long, default_value_t = 8)]
    load_callers: usize,
    /// Pause of each of those callers between two calls, in microseconds (0: unpaced, which
    /// saturates this machine and measures its scheduler more than the bridge).
    #[arg(long, default_value_t = 1000)]
    load_pause_us: u64,
    /// Stores for the deregistration measurement (comma-separated: memory, etcd).
    #[arg(long, value_delimiter = ',', default_value = "memory,etcd")]
    stores: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One clock for every server and the measurement.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// A tonic echo that remembers when its last call arrived.
#[derive(Clone, Default)]
struct Recorder {
    served: Arc<AtomicU64>,
    /// Nanoseconds since [`base`] of the last arrival.
    last_arrival: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Echo for Recorder {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        let now = u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_arrival.fetch_max(now, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        let r = request.into_inner();
        Ok(tonic::Response::new(EchoReply {
            text: r.text,
            n: r.n,
        }))
    }
}

struct TestServer {
    addr: SocketAddr,
    recorder: Recorder,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = EchoServer::new(recorder.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Self {
            addr,
            recorder,
            stop: Some(stop),
        }
    }

    fn node(&self) -> ServiceMetaInfo {
        ServiceMetaInfo::new(SERVICE, "127.0.0.1", self.addr.port())
    }

    fn last_arrival(&self) -> Instant {
        base() + Duration::from_nanos(self.recorder.last_arrival.load(Ordering::Relaxed))
    }

    fn served(&self) -> u64 {
        self.recorder.served.load(Ordering::Relaxed)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `callers` loops of echo calls through `channel` for `secs`, after a one-second warm-up.
async fn drive(channel: Channel, callers: usize, secs: u64) -> Throughput {
    load::drive(callers, secs, move || {
        let mut client = EchoClient::new(channel.clone());
        async move {
            let reply = client
                .echo(EchoRequest {
                    text: "hello, registry".into(),
                    n: 42,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.n, 42);
        }
    })
    .await
}

fn memory_registry(store: &Arc<MemoryStore>) -> Registry {
    Registry::new(
        Arc::new(MemoryBackend::new(Arc::clone(store))),
        RegistryOptions::default(),
    )
    .unwrap()
}

/// The three arms of a round: the registry channel between two static ones (the second static
/// run is the A/A noise floor: the same channel measured twice in one round).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arm {
    Static,
    Registry,
    StaticAgain,
}

/// Per round, each arm once, in an order that rotates from round to round.
struct Rounds {
    fixed: Vec<Throughput>,
    registry: Vec<Throughput>,
    again: Vec<Throughput>,
}

impl Rounds {
    /// Per round, `arm`'s figure over the first static run's: (calls/s ratio, p99 ratio).
    fn ratios(&self, arm: &[Throughput]) -> (Vec<f64>, Vec<f64>) {
        self.fixed
            .iter()
            .zip(arm)
            .map(|(f, r)| {
                (
                    r.calls_per_sec / f.calls_per_sec,
                    r.p99.as_secs_f64() / f.p99.as_secs_f64(),
                )
            })
            .unzip()
    }
}

/// Static vs registry channel over the same two servers, rounds interleaved.
async fn overhead(args: &Args) -> Rounds {
    let servers = [TestServer::start().await, TestServer::start().await];
    let store = MemoryStore::new();
    let provider = memory_registry(&store);
    for server in &servers {
        provider.register(server.node()).await.unwrap();
    }
    let consumer = memory_registry(&store);
    let mut rounds = Rounds {
        fixed: Vec::new(),
        registry: Vec::new(),
        again: Vec::new(),
    };
    let arms = [Arm::Static, Arm::Registry, Arm::StaticAgain];
    for round in 0..args.rounds {
        // Rotate the order, so that no arm always runs first (on a colder process) or last.
        let mut order = arms;
        order.rotate_left(round % arms.len());
        for arm in order {
            let channel = if arm == Arm::Registry {
                RegistryChannel::new(consumer.clone(), KEY)
                    .connect()
                    .await
                    .unwrap()
            } else {
                let endpoints = servers
                    .iter()
                    .map(|s| Endpoint::from_shared(format!("http://{}", s.addr)).unwrap());
                Channel::balance_list(endpoints)
            };
            let measured = drive(channel, args.callers, args.secs).await;
            match arm {
                Arm::Static => rounds.fixed.push(measured),
                Arm::Registry => rounds.registry.push(measured),
                Arm::StaticAgain => rounds.again.push(measured),
            }
        }
        eprintln!(
            "round {round} ({order:?}): static {:.0}/s p99 {:?}, registry {:.0}/s p99 {:?}, static again {:.0}/s p99 {:?}",
            rounds.fixed[round].calls_per_sec,
            rounds.fixed[round].p99,
            rounds.registry[round].calls_per_sec,
            rounds.registry[round].p99,
            rounds.again[round].calls_per_sec,
            rounds.again[round].p99,
        );
    }
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    rounds
}

/// One deregistration: the registry's propagation, the last call's arrival, both from the
/// start of `unregister`, in microseconds (the last call may be negative: before the
/// propagation).
#[derive(Clone, Copy, Debug)]
struct Deregistration {
    propagation_us: f64,
    last_call_us: f64,
}

fn micros_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1e6
    } else {
        -((from - to).as_secs_f64() * 1e6)
    }
}

async fn deregistrations(
    store: &str,
    provider: Registry,
    consumer: Registry,
    args: &Args,
) -> Vec<Deregistration> {
    let stable = TestServer::start().await;
    let leaving = TestServer::start().await;
    provider.register(stable.node()).await.unwrap();
    provider.register(leaving.node()).await.unwrap();
    let channel = RegistryChannel::new(consumer.clone(), KEY)
        .connect()
        .await
        .unwrap();

    // Every change the consumer's cache publishes, with when this process saw it.
    let seen: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let mut watch = consumer.watch(KEY).await.unwrap();
    let leaving_port = leaving.addr.port();
    let recorder = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(change) = watch.next().await {
                let listed = change.nodes.iter().any(|n| n.service_port == leaving_port);
                seen.lock().unwrap().push((Instant::now(), listed));
            }
        })
    };

    // Continuous load.
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Duration::from_micros(args.load_pause_us);
    let callers: Vec<_> = (0..args.load_callers.max(1))
        .map(|_| {
            let mut client = EchoClient::new(channel.clone());
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    client
                        .echo(EchoRequest {
                            text: "hello".into(),
                            n: 1,
                        })
                        .await
                        .unwrap();
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();

    let mut samples = Vec::with_capacity(args.samples);
    for i in 0..args.samples {
        // The node is registered and taking calls.
        if i > 0 {
            provider.register(leaving.node()).await.unwrap();
        }
        let served = leaving.served();
        let wait = Instant::now();
        while leaving.served() < served + 100 {
            assert!(wait.elapsed() < Duration::from_secs(10), "node never used");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        provider.unregister(&leaving.node()).await.unwrap();
        // Wait for the consumer to see it, then long enough for any straggler to arrive.
        let gone = loop {
            let found = seen
                .lock()
                .unwrap()
                .iter()
                .find(|(at, listed)| *at >= started && !listed)
                .map(|(at, _)| *at);
            if let Some(at) = found {
                break at;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never seen");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sample = Deregistration {
            propagation_us: micros_between(started, gone),
            last_call_us: micros_between(started, leaving.last_arrival()),
        };
        eprintln!(
            "{store} deregistration {i}: seen by the consumer after {:.0} µs, last call arrived {:.0} µs after the start",
            sample.propagation_us, sample.last_call_us
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    let _ = recorder.await;
    samples
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

async fn etcd_registry(endpoint: &str) -> Registry {
    let config = rpc_runtime::config::RpcConfig::default()
        .with_registry("etcd")
        .with_address(endpoint);
    rpc_runtime::connect::connect_registry(&config.registry_config)
        .await
        .unwrap()
}

fn main() {
    let args = Args::parse();
    let _ = base();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rounds = overhead(&args).await;
        println!(
            "{} callers, {} s per run after 1 s warm-up, {} rounds, each: static, registry, static again (order rotating); {} worker threads",
            args.callers,
            args.secs,
            args.rounds,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!("| channel over the same 2 servers | calls/s (median of rounds) | p99 (median of rounds) | per-round calls/s ratio to the first static run, median (min-max) | per-round p99 ratio, median (min-max) |");
        println!("|---|---:|---:|---:|---:|");
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::MAX, f64::min);
            let hi = v.iter().copied().fold(f64::MIN, f64::max);
            format!("**{:.3}x** ({lo:.2}-{hi:.2})", load::median_of(v.to_vec()))
        };
        for (name, arm) in [
            ("static `Channel::balance_list` (baseline)", &rounds.fixed),
            ("static again (A/A: the noise floor)", &rounds.again),
            ("`registry_tonic::RegistryChannel` (memory registry)", &rounds.registry),
        ] {
            let (tp, p99) = rounds.ratios(arm);
            let m = load::median(arm);
            println!(
                "| {name} | {:.0} | {:.0} µs | {} | {} |",
                m.calls_per_sec,
                m.p99.as_secs_f64() * 1e6,
                spread(&tp),
                spread(&p99),
            );
        }
        println!();
        println!(
            "deregistrations under {} callers each pausing {} µs between calls; times from the start of `Registry::unregister`",
            args.load_callers, args.load_pause_us
        );
        println!();
        println!(
            "| store | samples | propagation p50 / p90 / max | last call p50 / p90 / max | last call - propagation p50 / p90 / max |"
        );
        println!("|---|---:|---:|---:|---:|");
        for store in &args.stores {
            let (samples, _etcd) = match store.as_str() {
                "memory" => {
                    let store = MemoryStore::new();
                    let s = deregistrations(
                        "memory",
                        memory_registry(&store),
                        memory_registry(&store),
                        &args,
                    )
                    .await;
                    (s, None)
                }
                "etcd" => {
                    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
                    let s = deregistrations(
                        "etcd",
                        etcd_registry(&etcd.endpoint()).await,
                        etcd_registry(&etcd.endpoint()).await,
                        &args,
                    )
                    .await;
                    (s, Some(etcd))
                }
                other => panic!("unknown store {other}: memory or etcd"),
            };
            let mut propagation: Vec<f64> = samples.iter().map(|s| s.propagation_us).collect();
            let mut last: Vec<f64> = samples.iter().map(|s| s.last_call_us).collect();
            let mut delta: Vec<f64> = samples
                .iter()
                .map(|s| s.last_call_us - s.propagation_us)
                .collect();
            let row = |v: &mut Vec<f64>| {
                format!(
                    "{:.0} / {:.0} / {:.0} µs",
                    percentile(v, 0.5),
                    percentile(v, 0.9),
                    percentile(v, 1.0)
                )
            };
            println!(
                "| {store} | {} | {} | {} | {} |",
                samples.len(),
                row(&mut propagation),
                row(&mut last),
                row(&mut delta)
            );
        }
    });
}
