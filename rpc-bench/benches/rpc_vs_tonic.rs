//! Calls per second and latency percentiles over loopback, one connection per client: our
//! runtime (bincode and json) beside a tonic unary echo and beside the ceiling of our own design
//! (the same frames over one multiplexed connection with no registry, balancer, serializer or
//! handler work: [`rpc_bench::raw`]), in the same process and run, rounds interleaved with the
//! order of the stacks rotating. Medians of the rounds are printed as Markdown tables for
//! `BENCHMARKS.md`:
//!
//! 1. 64 callers, a small message: every stack, as a fraction of the raw ceiling and of tonic;
//! 2. the same with a 1 KiB and a 64 KiB message, where the serializer starts to matter;
//! 3. how it grows: 1, 64 and 1,024 callers;
//! 4. the first setting again with every server in a process of its own (this binary, with
//!    `--serve`), as a server is deployed: in one runtime a hand-off between a client task
//!    and a server task can stay on one worker thread, which no deployment has.
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
use rpc_runtime::provider::Provider;
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
    /// An `--only` run with the server in a process of its own.
    #[arg(long)]
    process: bool,
    /// Serves this stack's server (in the child process of a run with servers apart).
    #[arg(long, hide = true)]
    serve: Option<ServerKind>,
    /// The message text length a `--serve` server answers with.
    #[arg(long, hide = true, default_value_t = SMALL)]
    text: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One setting: how many callers, how long the message's text, where the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Setting {
    callers: usize,
    text: usize,
    servers: Servers,
}

/// Where a run's server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Servers {
    /// A task on the clients' runtime: a hand-off between a client task and a server task can
    /// stay on one worker thread, which no deployment has.
    Shared,
    /// A child process of its own (this binary with `--serve`), with its own runtime of as
    /// many worker threads, as a server is deployed.
    Process,
}

/// The servers of the stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ServerKind {
    /// [`rpc_bench::raw::serve`]: each body answered as is.
    Raw,
    /// [`rpc_bench::raw::serve_answering`] with the answer our client decodes.
    RawAnswering,
    /// Our provider with the echo service.
    Ours,
    /// tonic's echo.
    Tonic,
}

/// A server a run talks to.
struct ServerAt {
    addr: SocketAddr,
    running: Running,
}

enum Running {
    /// Serves until told to stop.
    Task(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    /// Serves until its standard input closes.
    Child(std::process::Child),
}

impl ServerAt {
    /// Starts a `kind` server for `setting`.
    async fn start(kind: ServerKind, setting: Setting) -> Self {
        match setting.servers {
            Servers::Shared => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let (addr, serve) = bind_server(kind, setting.text, stopped).await;
                let task = tokio::spawn(serve);
                ServerAt {
                    addr,
                    running: Running::Task(stop, task),
                }
            }
            Servers::Process => tokio::task::spawn_blocking(move || {
                use std::io::BufRead as _;
                let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                    .arg("--serve")
                    .arg(
                        clap::ValueEnum::to_possible_value(&kind)
                            .unwrap()
                            .get_name(),
                    )
                    .args(["--text", &setting.text.to_string()])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut line = String::new();
                std::io::BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let port: u16 = line.trim().parse().unwrap();
                ServerAt {
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    running: Running::Child(child),
                }
            })
            .await
            .unwrap(),
        }
    }

    async fn stop(self) {
        match self.running {
            Running::Task(stop, task) => {
                let _ = stop.send(());
                let _ = task.await;
            }
            Running::Child(mut child) => {
                drop(child.stdin.take());
                tokio::task::spawn_blocking(move || child.wait())
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    }
}

/// A `kind` server on a free loopback port, on the current runtime: its address, and the
/// future that serves until `stop` completes, then ends it (gracefully, for ours).
async fn bind_server(
    kind: ServerKind,
    text: usize,
    stop: impl std::future::Future + Send + 'static,
) -> (SocketAddr, futures::future::BoxFuture<'static, ()>) {
    use futures::FutureExt as _;
    if kind == ServerKind::Ours {
        let provider = Provider::new(RpcConfig::default().with_server_port(0))
            .with_registry(rpc_bench::memory_registries()())
            .with_service(EchoServer::new(EchoImpl))
            .start()
            .await
            .unwrap();
        let addr = provider.local_addr();
        let serve = async move {
            stop.await;
            provider.shutdown().await.unwrap();
        };
        return (addr, serve.boxed());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Raw and tonic servers end when their future is dropped.
    let until_stop = |serve: futures::future::BoxFuture<'static, ()>| {
        async move {
            tokio::select! {
                () = serve => {}
                _ = stop => {}
            }
        }
        .boxed()
    };
    match kind {
        ServerKind::Raw => (addr, until_stop(rpc_bench::raw::serve(listener).boxed())),
        ServerKind::RawAnswering => {
            // The response our client decodes, encoded once.
            let answer = bytes::Bytes::from(bincode::serialize(&message(text)).unwrap());
            let serve = rpc_bench::raw::serve_answering(listener, Some(answer));
            (addr, until_stop(serve.boxed()))
        }
        ServerKind::Tonic => {
            let serve = async move {
                tonic::transport::Server::builder()
                    .add_service(TonicServer::new(TonicEcho))
                    .serve_with_incoming(tokio_stream_from(listener))
                    .await
                    .unwrap();
            };
            (addr, until_stop(serve.boxed()))
        }
        ServerKind::Ours => unreachable!("served above, on a port of its own"),
    }
}

/// `--serve`: a `kind` server in this process, its port on the first line of the standard
/// output, serving until the standard input closes (the parent ended or let it go).
fn serve_child(kind: ServerKind, text: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let closed = tokio::task::spawn_blocking(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        });
        let (addr, serve) = bind_server(kind, text, closed).await;
        println!("{}", addr.port());
        serve.await;
    });
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
    let server = ServerAt::start(ServerKind::Raw, setting).await;
    let client = rpc_bench::raw::Client::connect(server.addr).await.unwrap();
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
    server.stop().await;
    result
}

/// Our client with `serializer`, its registry listing the node at `addr` (as discovery would
/// find it).
async fn our_client(serializer: Serializer, addr: SocketAddr) -> EchoClient {
    let registry: registry_core::Registry = rpc_bench::memory_registries()();
    let node = registry_core::ServiceMetaInfo::new("Echo", addr.ip().to_string(), addr.port());
    registry.register(node).await.unwrap();
    EchoClient::new(Consumer::new(
        registry,
        ConsumerOptions::default().with_serializer(serializer),
    ))
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
    let server = ServerAt::start(ServerKind::Ours, setting).await;
    let client = rpc_bench::raw::Client::connect(server.addr).await.unwrap();
    let key = Consumer::new(rpc_bench::memory_registries()(), ConsumerOptions::default())
        .service_key("Echo");
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
    server.stop().await;
    result
}

async fn ours_to_raw(setting: Setting, secs: u64) -> Throughput {
    let server = ServerAt::start(ServerKind::RawAnswering, setting).await;
    let client = our_client(Serializer::Bincode, server.addr).await;
    let result = drive_echo(client, setting, secs).await;
    server.stop().await;
    result
}

async fn ours(serializer: Serializer, setting: Setting, secs: u64) -> Throughput {
    let server = ServerAt::start(ServerKind::Ours, setting).await;
    let client = our_client(serializer, server.addr).await;
    let result = drive_echo(client, setting, secs).await;
    server.stop().await;
    result
}

async fn tonic_baseline(setting: Setting, secs: u64) -> Throughput {
    let server = ServerAt::start(ServerKind::Tonic, setting).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
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
    server.stop().await;
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
    if let Some(kind) = args.serve {
        serve_child(kind, args.text);
        return;
    }
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
        servers: Servers::Shared,
    };
    let apart = Setting {
        servers: Servers::Process,
        ..main
    };
    let mut plan: Vec<(Setting, &[Stack])> = vec![(main, &every)];
    for text in [1024, 64 * 1024] {
        plan.push((Setting { text, ..main }, &every));
    }
    for callers in [1, 1024] {
        plan.push((Setting { callers, ..main }, &growth));
    }
    plan.push((apart, &every));
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
            servers: if args.process {
                Servers::Process
            } else {
                Servers::Shared
            },
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
    let mut results: HashMap<(Stack, Setting), Vec<Throughput>> = HashMap::new();
    runtime.block_on(async {
        for round in 0..args.rounds {
            for (setting, stacks) in &plan {
                // The order rotates from round to round, so no stack always runs first.
                for i in 0..stacks.len() {
                    let stack = stacks[(i + round) % stacks.len()];
                    let r = stack.run(*setting, args.secs).await;
                    eprintln!(
                        "round {round}, {} callers, {} B text, servers {:?}: {} {:.0}/s p99 {:.0} µs",
                        setting.callers,
                        setting.text,
                        setting.servers,
                        stack.name(),
                        r.calls_per_sec,
                        r.p99.as_secs_f64() * 1e6
                    );
                    results.entry((stack, *setting)).or_default().push(r);
                }
            }
        }
    });
    let get = |stack, setting: Setting| median(&results[&(stack, setting)]);
    println!(
        "{} s per run after 1 s warm-up, {} rounds interleaved (order rotating), medians of rounds; {} worker threads",
        args.secs,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let tables = [SMALL, 1024, 64 * 1024]
        .map(|text| Setting { text, ..main })
        .into_iter()
        .chain([apart]);
    for setting in tables {
        let (raw, tonic) = (get(Stack::Raw, setting), get(Stack::Tonic, setting));
        let text = setting.text;
        println!();
        match setting.servers {
            Servers::Shared => println!("64 callers, {text} B message text"),
            Servers::Process => {
                println!("64 callers, {text} B message text, every server in a process of its own")
            }
        }
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
