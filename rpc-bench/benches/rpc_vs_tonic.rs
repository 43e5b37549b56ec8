//! Calls per second and latency percentiles over loopback, one connection per client: our
//! runtime (bincode and json) beside a tonic unary echo and beside the ceiling of our own design
//! (the same frames over one multiplexed connection with no registry, balancer, serializer or
//! handler work: [`rpc_bench::raw`]), in the same process and run, rounds interleaved with the
//! order of the stacks rotating. Medians of the rounds are printed as Markdown tables for
//! `BENCHMARKS.md`:
//!
//! 1. 64 callers, a small message: every stack, as a fraction of the raw ceiling and of tonic;
//! 2. the same with a 1 KiB and a 64 KiB message, where the serializer starts to matter;
//! 3. how it grows: 1, 64 and 1,024 callers.
//!
//! `cargo bench -p rpc-bench --bench rpc_vs_tonic` (`-- --secs S --rounds R`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use rpc_bench::load::{drive, median, Throughput};
use rpc_bench::pb::echo_client::EchoClient as TonicClient;
use rpc_bench::pb::echo_server::EchoServer as TonicServer;
use rpc_bench::pb::EchoRequest;
use rpc_bench::{EchoClient, EchoImpl, EchoServer, Message, TonicEcho};
use rpc_runtime::config::RpcConfig;
use rpc_runtime::consumer::{Consumer, ConsumerOptions};
use rpc_runtime::provider::{Provider, RunningProvider};
use rpc_runtime::serializer::Serializer;

/// Every stack, rounds interleaved.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds measured per run (after a one-second warm-up).
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// Rounds; each runs every stack in every setting once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Runs only this stack (raw, bincode, json or tonic) with a small message, for a
    /// profiler; no tables.
    #[arg(long)]
    only: Option<String>,
    /// Callers of an `--only` run.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One setting: how many callers, how long the message's text.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Setting {
    callers: usize,
    text: usize,
}

const SMALL: usize = 15;

fn message(text: usize) -> Message {
    let text = if text == SMALL {
        "hello, registry".to_owned()
    } else {
        "x".repeat(text)
    };
    Message { text, n: 42 }
}

/// The stacks compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Stack {
    Raw,
    Bincode,
    Json,
    Tonic,
    /// Profiling only: the raw client against our server.
    RawToOurs,
    /// Profiling only: our client (bincode) against the raw server.
    OursToRaw,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Raw => "raw frames, one connection (ceiling)",
            Stack::Bincode => "rpc-runtime, bincode",
            Stack::Json => "rpc-runtime, json",
            Stack::Tonic => "tonic unary",
            Stack::RawToOurs => "raw client -> rpc-runtime server",
            Stack::OursToRaw => "rpc-runtime client -> raw server",
        }
    }

    async fn run(self, setting: Setting, secs: u64) -> Throughput {
        match self {
            Stack::Raw => raw(setting, secs).await,
            Stack::Bincode => ours(Serializer::Bincode, setting, secs).await,
            Stack::Json => ours(Serializer::Json, setting, secs).await,
            Stack::Tonic => tonic_baseline(setting, secs).await,
            Stack::RawToOurs => raw_to_ours(setting, secs).await,
            Stack::OursToRaw => ours_to_raw(setting, secs).await,
        }
    }
}

async fn raw(setting: Setting, secs: u64) -> Throughput {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(rpc_bench::raw::serve(listener));
    let client = rpc_bench::raw::Client::connect(addr).await.unwrap();
    // The body our bincode client sends for the same message, encoded once.
    let body = bytes::Bytes::from(bincode::serialize(&message(setting.text)).unwrap());
    let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let result = drive(setting.callers, secs, move || {
        let (client, body, ids) = (client.clone(), body.clone(), Arc::clone(&ids));
        async move {
            let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let reply = client.call(id, body.clone()).await.unwrap();
            assert_eq!(reply.len(), body.len());
        }
    })
    .await;
    server.abort();
    result
}

/// Our echo served on a free port and registered in `registry`.
async fn echo_provider(registry: registry_core::Registry) -> RunningProvider {
    Provider::new(RpcConfig::default().with_server_port(0))
        .with_registry(registry)
        .with_service(EchoServer::new(EchoImpl))
        .start()
        .await
        .unwrap()
}

/// `setting.callers` callers echoing through our client for `secs`.
async fn drive_echo(client: EchoClient, setting: Setting, secs: u64) -> Throughput {
    drive(setting.callers, secs, move || {
        let client = client.clone();
        async move {
            let reply = client.echo(message(setting.text)).await.unwrap();
            assert_eq!(reply.n, 42);
        }
    })
    .await
}

async fn raw_to_ours(setting: Setting, secs: u64) -> Throughput {
    let registry = rpc_bench::memory_registries();
    let provider = echo_provider(registry()).await;
    let consumer = Consumer::new(registry(), ConsumerOptions::default());
    let key = consumer.service_key("Echo");
    let nodes = consumer.registry().discover(&key).await.unwrap();
    let node = nodes.nodes()[0].address();
    let client = rpc_bench::raw::Client::connect(node.parse().unwrap())
        .await
        .unwrap();
    let args = bincode::serialize(&(message(setting.text),)).unwrap();
    let body =
        rpc_runtime::protocol::Frame::request(0, Serializer::Bincode, &key, "echo", &args).body;
    let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let result = drive(setting.callers, secs, move || {
        let (client, body, ids) = (client.clone(), body.clone(), Arc::clone(&ids));
        async move {
            let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let reply = client.call(id, body).await.unwrap();
            assert!(!reply.is_empty());
        }
    })
    .await;
    provider.shutdown().await.unwrap();
    result
}

async fn ours_to_raw(setting: Setting, secs: u64) -> Throughput {
    use registry_core::{Registry, ServiceMetaInfo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = bytes::Bytes::from(bincode::serialize(&message(setting.text)).unwrap());
    let server = tokio::spawn(rpc_bench::raw::serve_answering(listener, Some(answer)));
    let registry: Registry = rpc_bench::memory_registries()();
    let consumer = Consumer::new(
        registry.clone(),
        ConsumerOptions::default().with_serializer(Serializer::Bincode),
    );
    let node = ServiceMetaInfo::new("Echo", addr.ip().to_string(), addr.port());
    registry.register(node).await.unwrap();
    let client = EchoClient::new(consumer);
    let result = drive_echo(client, setting, secs).await;
    server.abort();
    result
}

async fn ours(serializer: Serializer, setting: Setting, secs: u64) -> Throughput {
    let registry = rpc_bench::memory_registries();
    let provider = echo_provider(registry()).await;
    let consumer = Consumer::new(
        registry(),
        ConsumerOptions::default().with_serializer(serializer),
    );
    let client = EchoClient::new(consumer);
    let result = drive_echo(client, setting, secs).await;
    provider.shutdown().await.unwrap();
    result
}

async fn tonic_baseline(setting: Setting, secs: u64) -> Throughput {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TonicServer::new(TonicEcho))
            .serve_with_incoming_shutdown(tokio_stream_from(listener), async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    let client = TonicClient::new(channel);
    let result = drive(setting.callers, secs, move || {
        let mut client = client.clone();
        async move {
            let m = message(setting.text);
            let reply = client
                .echo(EchoRequest {
                    text: m.text,
                    n: m.n,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.n, 42);
        }
    })
    .await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((accepted, listener))
    })
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let every = [Stack::Raw, Stack::Bincode, Stack::Json, Stack::Tonic];
    let profiling = [Stack::RawToOurs, Stack::OursToRaw];
    let growth = [Stack::Raw, Stack::Bincode, Stack::Tonic];
    let main = Setting {
        callers: 64,
        text: SMALL,
    };
    let mut plan: Vec<(Setting, &[Stack])> = vec![(main, &every)];
    for text in [1024, 64 * 1024] {
        plan.push((Setting { text, ..main }, &every));
    }
    for callers in [1, 1024] {
        plan.push((Setting { callers, ..main }, &growth));
    }
    if let Some(only) = &args.only {
        let Some(stack) = every
            .into_iter()
            .chain(profiling)
            .find(|s| format!("{s:?}").eq_ignore_ascii_case(only))
        else {
            eprintln!("unknown stack {only:?}: raw, bincode, json, tonic, rawtoours or ourstoraw");
            std::process::exit(2);
        };
        let setting = Setting {
            callers: args.callers,
            ..main
        };
        let r = runtime.block_on(stack.run(setting, args.secs));
        println!(
            "{}: {:.0} calls/s, p50 {:?}, p99 {:?}",
            stack.name(),
            r.calls_per_sec,
            r.p50,
            r.p99
        );
        return;
    }
    let mut results: HashMap<(Stack, usize, usize), Vec<Throughput>> = HashMap::new();
    runtime.block_on(async {
        for round in 0..args.rounds {
            for (setting, stacks) in &plan {
                // The order rotates from round to round, so no stack always runs first.
                for i in 0..stacks.len() {
                    let stack = stacks[(i + round) % stacks.len()];
                    let r = stack.run(*setting, args.secs).await;
                    eprintln!(
                        "round {round}, {} callers, {} B text: {} {:.0}/s p99 {:.0} µs",
                        setting.callers,
                        setting.text,
                        stack.name(),
                        r.calls_per_sec,
                        r.p99.as_secs_f64() * 1e6
                    );
                    results
                        .entry((stack, setting.callers, setting.text))
                        .or_default()
                        .push(r);
                }
            }
        }
    });
    let get = |stack, setting: Setting| median(&results[&(stack, setting.callers, setting.text)]);
    println!(
        "{} s per run after 1 s warm-up, {} rounds interleaved (order rotating), medians of rounds; {} worker threads",
        args.secs,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for text in [SMALL, 1024, 64 * 1024] {
        let setting = Setting { text, ..main };
        let (raw, tonic) = (get(Stack::Raw, setting), get(Stack::Tonic, setting));
        println!();
        println!("64 callers, {text} B message text");
        println!();
        println!("| stack | calls/s | of raw ceiling | vs tonic | p50 | p99 | p99 vs tonic |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for stack in every {
            let r = get(stack, setting);
            println!(
                "| {} | {:.0} | {:.0} % | {:.2}x | {:.0} µs | {:.0} µs | {:.2} |",
                stack.name(),
                r.calls_per_sec,
                100.0 * r.calls_per_sec / raw.calls_per_sec,
                r.calls_per_sec / tonic.calls_per_sec,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() / tonic.p99.as_secs_f64()
            );
        }
    }
    println!();
    println!("Growth with callers ({SMALL} B message text): calls/s (p99)");
    println!();
    println!("| stack | 1 caller | 64 callers | 1,024 callers |");
    println!("|---|---:|---:|---:|");
    for stack in growth {
        let cells: Vec<String> = [1, 64, 1024]
            .into_iter()
            .map(|callers| {
                let r = get(stack, Setting { callers, ..main });
                format!(
                    "{:.0} ({:.0} µs)",
                    r.calls_per_sec,
                    r.p99.as_secs_f64() * 1e6
                )
            })
            .collect();
        println!("| {} | {} |", stack.name(), cells.join(" | "));
    }
}
