//! What the `Registry` adds to a deregistration, before the store's acknowledgement: on each
//! store, `Registry::unregister` of a node against the same backend's own `delete` of a key it
//! wrote, each on its own client, samples interleaved in one run (issue 15, item 2: where the
//! time goes). The registry's client also watches the service it registers (as every provider
//! does); the bare backend watches nothing.
//!
//! `cargo bench -p rpc-bench --bench unregister` (`-- --samples N`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use registry_conformance::measure::percentile;
use registry_core::backend::Backend;
use registry_core::{ConnectOptions, Registry, RegistryOptions, ServiceMetaInfo};
use registry_test_support::{EtcdServer, RedisServer, ZkServer};
use rpc_runtime::factory::BackendFactory;

/// `Registry::unregister` against the backend's own delete, on each store.
#[derive(Debug, Parser)]
struct Args {
    /// Samples per store and side.
    #[arg(long, default_value_t = 500)]
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

async fn backend(name: &str, address: &str) -> Arc<dyn Backend> {
    let options = options().with_timeout(Duration::from_secs(5));
    BackendFactory::global()
        .connect(name, ConnectOptions::for_registry(address, &options))
        .await
        .unwrap_or_else(|e| panic!("{name}: {}", registry_core::error_chain(&e)))
}

fn micros(sorted: &[Duration], p: f64) -> u128 {
    percentile(sorted, p).as_micros()
}

/// (registry, backend) samples: from the start of the delete to its acknowledgement.
async fn store(name: &str, address: &str, samples: usize) -> (Vec<Duration>, Vec<Duration>) {
    let registry = Registry::new(backend(name, address).await, options()).unwrap();
    let bare = backend(name, address).await;
    // One node stays, so the service never empties.
    registry
        .register(ServiceMetaInfo::new("unreg", "127.0.0.1", 1))
        .await
        .unwrap();
    let value = serde_json::to_vec(&ServiceMetaInfo::new("bare", "127.0.0.1", 2)).unwrap();
    let key = "/rpc/bare:1.0/127.0.0.1:2";
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let node = ServiceMetaInfo::new("unreg", "127.0.0.1", 2);
        registry.register(node.clone()).await.unwrap();
        // Let the registration's own events settle first, on both sides alike.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        registry.unregister(&node).await.unwrap();
        ours.push(started.elapsed());

        bare.put(key, &value, Duration::from_secs(6)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        bare.delete(key).await.unwrap();
        direct.push(started.elapsed());
    }
    registry.shutdown().await.unwrap();
    ours.sort();
    direct.sort();
    (ours, direct)
}

fn main() {
    let samples = Args::parse().samples;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let zk = ZkServer::start().unwrap_or_else(|e| panic!("{e}"));
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{samples} samples per side, interleaved; from the start of the delete to the store's acknowledgement, p50 / p99\n"
    );
    println!("| store | `Registry::unregister` | the backend's `delete` | the registry adds |");
    println!("|---|---:|---:|---:|");
    for (name, address) in [
        ("etcd", etcd.endpoint()),
        ("zookeeper", zk.connect_string()),
        ("redis", redis.url()),
    ] {
        let (ours, direct) = runtime.block_on(store(name, &address, samples));
        let (o50, o99) = (micros(&ours, 0.5), micros(&ours, 0.99));
        let (d50, d99) = (micros(&direct, 0.5), micros(&direct, 0.99));
        println!(
            "| {name} | {o50} / {o99} µs | {d50} / {d99} µs | {:+} / {:+} µs |",
            o50 as i128 - d50 as i128,
            o99 as i128 - d99 as i128
        );
    }
}
