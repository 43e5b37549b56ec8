//! Calls per second and latency percentiles: 64 concurrent callers, a small request and
//! response, loopback, one connection per client. Our runtime (json and bincode) side by side
//! with a tonic unary echo, in the same process and run, rounds interleaved; medians of the
//! rounds are printed as a Markdown table for `BENCHMARKS.md`.
//!
//! `cargo bench -p rpc-bench --bench rpc_vs_tonic` (`-- --secs S --rounds R --callers C`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions};
use rpc_bench::load::{drive, median, Throughput};
use rpc_bench::pb::echo_client::EchoClient as TonicClient;
use rpc_bench::pb::echo_server::EchoServer as TonicServer;
use rpc_bench::pb::EchoRequest;
use rpc_bench::{EchoClient, EchoImpl, EchoServer, Message, TonicEcho};
use rpc_runtime::config::RpcConfig;
use rpc_runtime::consumer::{Consumer, ConsumerOptions};
use rpc_runtime::provider::Provider;
use rpc_runtime::serializer::Serializer;

/// Our runtime (json and bincode) against a tonic unary echo, rounds interleaved.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds measured per run (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Rounds; each runs tonic, json and bincode once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn message() -> Message {
    Message {
        text: "hello, registry".to_owned(),
        n: 42,
    }
}

async fn ours(serializer: Serializer, args: &Args) -> Throughput {
    let store = MemoryStore::new();
    let registry = || {
        Registry::new(
            Arc::new(MemoryBackend::new(Arc::clone(&store))),
            RegistryOptions::default(),
        )
        .unwrap()
    };
    let provider = Provider::new(RpcConfig::default().with_server_port(0))
        .with_registry(registry())
        .with_service(EchoServer::new(EchoImpl))
        .start()
        .await
        .unwrap();
    let consumer = Consumer::new(
        registry(),
        ConsumerOptions::default().with_serializer(serializer),
    );
    let client = EchoClient::new(consumer);
    let result = drive(args.callers, args.secs, move || {
        let client = client.clone();
        async move {
            let reply = client.echo(message()).await.unwrap();
            assert_eq!(reply.n, 42);
        }
    })
    .await;
    provider.shutdown().await.unwrap();
    result
}

async fn tonic_baseline(args: &Args) -> Throughput {
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
    let result = drive(args.callers, args.secs, move || {
        let mut client = client.clone();
        async move {
            let m = message();
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
    let (mut json, mut bincode, mut tonic) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        for round in 0..args.rounds {
            tonic.push(tonic_baseline(&args).await);
            json.push(ours(Serializer::Json, &args).await);
            bincode.push(ours(Serializer::Bincode, &args).await);
            eprintln!(
                "round {round}: tonic {:.0}/s, ours json {:.0}/s, ours bincode {:.0}/s",
                tonic[round].calls_per_sec, json[round].calls_per_sec, bincode[round].calls_per_sec
            );
        }
    });
    let (json, bincode, tonic) = (median(&json), median(&bincode), median(&tonic));
    println!(
        "{} callers, {} s per run after 1 s warm-up, {} rounds interleaved, medians of rounds; {} worker threads",
        args.callers,
        args.secs,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| stack | calls/s | vs tonic | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [
        ("rpc-runtime, bincode", bincode),
        ("rpc-runtime, json", json),
        ("tonic unary (baseline)", tonic),
    ] {
        println!(
            "| {name} | {:.0} | {:.2}x | {:.0} µs | {:.0} µs |",
            r.calls_per_sec,
            r.calls_per_sec / tonic.calls_per_sec,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6
        );
    }
}
