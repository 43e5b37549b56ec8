//! etcd backend figures quoted in `BENCHMARKS.md`, against a real etcd started by the test
//! harness on loopback:
//!
//! 1. graceful deregistration -> a watcher in another client sees the removal, side by side
//!    with the same delete seen by a raw `etcd-client` watch (samples interleaved, same run);
//! 2. heartbeat cost: etcd requests per minute for 1, 100 and 1,000 nodes of one process,
//!    counted by etcd itself (`grpc_server_msg_received_total`);
//! 3. time to register 10,000 nodes and see all of them in a consumer's cache.
//!
//! Run with `cargo bench -p registry-etcd --bench etcd` (`-- --samples N`, `--window-secs S`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{EventType, WatchOptions};
use futures::{StreamExt, TryStreamExt};
use registry_conformance::measure::{self, percentile, Deregistration};
use registry_core::{ConnectOptions, Registry, RegistryOptions, ServiceMetaInfo};
use registry_etcd::EtcdBackend;
use registry_test_support::{metric_sum, EtcdServer};

/// etcd backend figures for `BENCHMARKS.md`, against a real etcd started on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Deregistration samples (registry and raw etcd-client, interleaved).
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Steady-state window of the heartbeat cost, in seconds.
    #[arg(long = "window-secs", default_value_t = 30)]
    window_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

async fn registry(address: &str, options: RegistryOptions) -> Registry {
    let backend = EtcdBackend::connect(&ConnectOptions::for_registry(address, &options))
        .await
        .expect("connect");
    Registry::new(Arc::new(backend), options).expect("options")
}

fn options(ttl: u64, heartbeat: u64) -> RegistryOptions {
    RegistryOptions {
        ttl: Duration::from_secs(ttl),
        heartbeat_interval: Duration::from_secs(heartbeat),
        ..RegistryOptions::default()
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn deregistration_latency(etcd: &EtcdServer, samples: usize) {
    let address = etcd.endpoint();
    let mut ours_probe = Deregistration::new(
        registry(&address, options(30, 10)).await,
        registry(&address, options(30, 10)).await,
    )
    .await;

    // Raw etcd-client: one client writes, another watches the same kind of key.
    let mut writer = etcd_client::Client::connect([address.as_str()], None)
        .await
        .unwrap();
    let mut watcher = etcd_client::Client::connect([address.as_str()], None)
        .await
        .unwrap();
    let raw_watch = watcher
        .watch("/raw/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    // Read in a task of its own, as ours is (`measure::stamped`); it fails when the server
    // stops at the end of the run.
    let mut raw_news = measure::stamped(raw_watch.filter_map(|response| {
        std::future::ready(response.ok().map(|r| {
            r.events()
                .iter()
                .map(|e| e.event_type())
                .collect::<Vec<_>>()
        }))
    }));

    let mut ours = Vec::with_capacity(samples);
    let mut raw = Vec::with_capacity(samples);
    for _ in 0..samples {
        ours.push(ours_probe.sample().await);

        // Raw: put, wait for it, then time the delete.
        writer.put("/raw/node", "x", None).await.unwrap();
        wait_raw(&mut raw_news, EventType::Put).await;
        tokio::time::sleep(measure::SETTLE).await;
        let started = Instant::now();
        writer.delete("/raw/node", None).await.unwrap();
        let seen = wait_raw(&mut raw_news, EventType::Delete).await;
        raw.push(seen.saturating_duration_since(started));
    }
    ours.sort();
    raw.sort();
    let (o50, o99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
    let (r50, r99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    println!("## deregistration -> watcher sees the removal ({samples} samples each, interleaved)");
    println!("| | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| registry (unregister -> listener in another client) | {} | {} |",
        micros(o50),
        micros(o99)
    );
    println!(
        "| raw etcd-client (delete -> watch event) | {} | {} |",
        micros(r50),
        micros(r99)
    );
    println!(
        "| overhead | {} | {} |",
        micros(o50.saturating_sub(r50)),
        micros(o99.saturating_sub(r99))
    );
    println!();
    ours_probe.finish().await;
}

/// When the first response holding an event of `kind` arrived.
async fn wait_raw(
    news: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, Vec<EventType>)>,
    kind: EventType,
) -> Instant {
    loop {
        let (at, kinds) = news.recv().await.expect("watch open");
        if kinds.contains(&kind) {
            return at;
        }
    }
}

/// Every gRPC message etcd received (unary requests, keep-alive and watch stream messages).
fn requests(etcd: &EtcdServer) -> (f64, f64, f64) {
    let m = etcd.metrics();
    (
        metric_sum(&m, "grpc_server_msg_received_total", ""),
        metric_sum(&m, "etcd_mvcc_put_total", ""),
        metric_sum(&m, "etcd_debugging_lease_renewed_total", ""),
    )
}

async fn heartbeat_cost(etcd: &EtcdServer, window: Duration) {
    let address = etcd.endpoint();
    println!(
        "## heartbeat cost (TTL 6 s, heartbeat every 2 s, steady state over {:?}, counted by etcd)",
        window
    );
    println!("| nodes | requests/min | puts/min | lease renewals/min |");
    println!("|---|---|---|---|");
    for n in [1u16, 100, 1000] {
        let provider = registry(&address, options(6, 2)).await;
        futures::stream::iter(0..n)
            .map(|i| {
                let provider = provider.clone();
                async move {
                    provider
                        .register(ServiceMetaInfo::new("hb", "127.0.0.1", 10_000 + i))
                        .await
                }
            })
            .buffer_unordered(64)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = requests(etcd);
        tokio::time::sleep(window).await;
        let after = requests(etcd);
        let per_min = 60.0 / window.as_secs_f64();
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} |",
            (after.0 - before.0) * per_min,
            (after.1 - before.1) * per_min,
            (after.2 - before.2) * per_min
        );
        provider.shutdown().await.unwrap();
    }
    println!();
}

async fn mass_registration(etcd: &EtcdServer) {
    let address = etcd.endpoint();
    let provider = registry(&address, options(30, 10)).await;
    let consumer = registry(&address, options(30, 10)).await;
    let (registered, seen) = measure::mass_registration(&provider, &consumer, 100, 10_000).await;
    println!(
        "## 10,000 nodes (100 services x 100), 64 registrations in flight, one provider process"
    );
    println!("| step | time |");
    println!("|---|---|");
    println!(
        "| all 10,000 registered (acknowledged by etcd) | {:.2} s |",
        registered.as_secs_f64()
    );
    println!(
        "| all 10,000 in the consumer's cache | {:.2} s |",
        seen.as_secs_f64()
    );
    println!();
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    println!("etcd {} on {}", etcd_version(), etcd.endpoint());
    println!();
    runtime.block_on(async {
        deregistration_latency(&etcd, args.samples).await;
        heartbeat_cost(&etcd, Duration::from_secs(args.window_secs)).await;
        mass_registration(&etcd).await;
    });
}

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default()
}
