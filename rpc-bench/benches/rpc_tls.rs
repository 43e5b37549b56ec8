//! The cost of TLS on the RPC transport: our runtime over plain TCP and over TLS (rustls,
//! `ring`, TLS 1.3, ECDSA P-256 certificates made at start by `TestPki`), and over mutual
//! TLS, in the same process and run, rounds interleaved; 64 concurrent callers, a small
//! request and response (bincode), loopback, one connection per consumer. Medians of the
//! rounds are printed as a Markdown table for `BENCHMARKS.md`, and the per-round ratios.
//!
//! `cargo bench -p rpc-bench --bench rpc_tls` (`-- --secs S --rounds R --callers C`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use clap::Parser;
use registry_test_support::TestPki;
use rpc_bench::load::{drive, median, median_of, Throughput};
use rpc_bench::{EchoClient, EchoImpl, EchoServer, Message};
use rpc_runtime::config::{RpcConfig, RpcTlsConfig};
use rpc_runtime::consumer::{Consumer, ConsumerOptions};
use rpc_runtime::provider::Provider;
use rpc_runtime::serializer::Serializer;
use rpc_runtime::tls::ClientTls;

/// Plain TCP against TLS and mutual TLS, rounds interleaved.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds measured per run (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Rounds; each runs plain, TLS and mutual TLS once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Plain,
    Tls,
    Mutual,
}

async fn run(mode: Mode, pki: &TestPki, args: &Args) -> Throughput {
    let registry = rpc_bench::memory_registries();
    let mut config = RpcConfig::default().with_server_port(0);
    let mut client_config = RpcTlsConfig::default();
    if mode != Mode::Plain {
        config.tls.cert_file = Some(pki.server.cert.clone());
        config.tls.key_file = Some(pki.server.key.clone());
        client_config.ca_file = Some(pki.ca.clone());
    }
    if mode == Mode::Mutual {
        config.tls.client_ca_file = Some(pki.ca.clone());
        client_config.client_cert_file = Some(pki.client.cert.clone());
        client_config.client_key_file = Some(pki.client.key.clone());
    }
    let provider = Provider::new(config)
        .with_registry(registry())
        .with_service(EchoServer::new(EchoImpl))
        .start()
        .await
        .unwrap();
    let mut options = ConsumerOptions::default().with_serializer(Serializer::Bincode);
    if let Some(tls) = ClientTls::from_config(&client_config).unwrap() {
        options = options.with_tls(tls);
    }
    let client = EchoClient::new(Consumer::new(registry(), options));
    let result = drive(args.callers, args.secs, move || {
        let client = client.clone();
        async move {
            let reply = client
                .echo(Message {
                    text: "hello, registry".to_owned(),
                    n: 42,
                })
                .await
                .unwrap();
            assert_eq!(reply.n, 42);
        }
    })
    .await;
    provider.shutdown().await.unwrap();
    result
}

fn main() {
    let args = Args::parse();
    let pki = TestPki::generate().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut plain, mut tls, mut mutual) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        for round in 0..args.rounds {
            // The order rotates so that no mode always runs first or last.
            let mut order = [Mode::Plain, Mode::Tls, Mode::Mutual];
            order.rotate_left(round % 3);
            for mode in order {
                let sample = run(mode, &pki, &args).await;
                match mode {
                    Mode::Plain => plain.push(sample),
                    Mode::Tls => tls.push(sample),
                    Mode::Mutual => mutual.push(sample),
                }
            }
            eprintln!(
                "round {round}: plain {:.0}/s p99 {:?}, tls {:.0}/s p99 {:?}, mutual tls {:.0}/s p99 {:?}",
                plain[round].calls_per_sec,
                plain[round].p99,
                tls[round].calls_per_sec,
                tls[round].p99,
                mutual[round].calls_per_sec,
                mutual[round].p99,
            );
        }
    });
    let ratio = |of: &[Throughput], f: fn(&Throughput) -> f64| {
        median_of(of.iter().zip(&plain).map(|(a, b)| f(a) / f(b)).collect())
    };
    let cps = |s: &Throughput| s.calls_per_sec;
    let p99 = |s: &Throughput| s.p99.as_secs_f64();
    println!(
        "{} callers, {} s per run after 1 s warm-up, {} rounds interleaved (order rotated), medians of rounds; bincode; {} worker threads",
        args.callers,
        args.secs,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| transport | calls/s | vs plain (median of per-round ratios) | p50 | p99 | p99 vs plain |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, samples) in [
        ("plain TCP", &plain),
        ("TLS 1.3 (server certificate)", &tls),
        ("mutual TLS 1.3 (client certificate too)", &mutual),
    ] {
        let m = median(samples);
        println!(
            "| {name} | {:.0} | {:.3}x | {:.0} µs | {:.0} µs | {:.3}x |",
            m.calls_per_sec,
            ratio(samples, cps),
            m.p50.as_secs_f64() * 1e6,
            m.p99.as_secs_f64() * 1e6,
            ratio(samples, p99),
        );
    }
}
