//! The three store backends side by side, each against its real server started by the test
//! harness on loopback, through the same factory the runtime uses:
//!
//! 1. graceful deregistration -> a watcher in another client sees the removal (p50, p99);
//! 2. time to register 2,000 nodes (20 services x 100, 64 in flight) and see all of them in
//!    a consumer's cache.
//!
//! `cargo bench -p rpc-bench --bench backends` (`-- --samples N`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use clap::Parser;
use registry_conformance::measure::{self, percentile, Deregistration};
use registry_core::{ConnectOptions, Registry, RegistryOptions};
use registry_test_support::{EtcdServer, RedisServer, ZkServer};
use rpc_runtime::factory::BackendFactory;

/// The store backends side by side, each against its real server on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Deregistration samples per store.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn options() -> RegistryOptions {
    RegistryOptions::default()
        .with_ttl(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_secs(2))
}

async fn client(backend: &str, address: &str) -> Registry {
    let options = options();
    let store = BackendFactory::global()
        .connect(
            backend,
            ConnectOptions::for_registry(
                address,
                &options.clone().with_timeout(Duration::from_secs(5)),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{backend}: {}", registry_core::error_chain(&e)));
    Registry::new(store, options).unwrap()
}

async fn deregistration(backend: &str, address: &str, samples: usize) -> (Duration, Duration) {
    let mut probe = Deregistration::new(
        client(backend, address).await,
        client(backend, address).await,
    )
    .await;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        times.push(probe.sample().await);
    }
    probe.finish().await;
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

async fn mass(backend: &str, address: &str) -> (Duration, Duration) {
    let provider = client(backend, address).await;
    let consumer = client(backend, address).await;
    let times = measure::mass_registration(&provider, &consumer, 20, 2000).await;
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    times
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let samples = Args::parse().samples;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let zk = ZkServer::start().unwrap_or_else(|e| panic!("{e}"));
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let stores = [
        ("etcd", etcd.endpoint()),
        ("zookeeper", zk.connect_string()),
        ("redis", redis.url()),
    ];
    let mut rows = Vec::new();
    runtime.block_on(async {
        for (backend, address) in &stores {
            let (p50, p99) = deregistration(backend, address, samples).await;
            let (registered, seen) = mass(backend, address).await;
            eprintln!("{backend}: done");
            rows.push((backend, p50, p99, registered, seen));
        }
    });
    println!("deregistration -> watcher in another client: {samples} samples per store");
    println!(
        "2,000 nodes: 20 services x 100, 64 registrations in flight, consumer already watching"
    );
    println!();
    println!(
        "| store | dereg -> watcher p50 | p99 | 2,000 registered | all in the consumer's cache |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (backend, p50, p99, registered, seen) in rows {
        println!(
            "| {backend} | {} | {} | {} | {} |",
            ms(p50),
            ms(p99),
            ms(registered),
            ms(seen)
        );
    }
}
