//! What the `Registry` adds to a deregistration, before the store's acknowledgement: on each
//! store, `Registry::unregister` of a node against the same backend's own `delete` of a key it
//! wrote, each on its own client, samples interleaved in one run (issue 15, item 2: where the
//! time goes). The registry's client also watches the service it registers (as every provider
//! does); the bare backend watches nothing, unless `--bare-watched` has it watch the key it
//! writes too (the store then notifies one watcher on both sides).
//!
//! `cargo bench -p rpc-bench --bench unregister` (`-- --samples N --bare-watched`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use clap::Parser;
use registry_conformance::measure::percentile;
use registry_core::ServiceMetaInfo;

#[path = "support/stores.rs"]
mod stores;
use stores::{backend, client, Stores};

/// `Registry::unregister` against the backend's own delete, on each store.
#[derive(Debug, Parser)]
struct Args {
    /// Samples per store and side.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// The bare backend also watches the key it writes, through its own watch, as the
    /// registry's client watches the service it registers.
    #[arg(long)]
    bare_watched: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn micros(sorted: &[Duration], p: f64) -> u128 {
    percentile(sorted, p).as_micros()
}

/// (registry, backend) samples: from the start of the delete to its acknowledgement.
async fn store(
    name: &str,
    address: &str,
    samples: usize,
    bare_watched: bool,
) -> (Vec<Duration>, Vec<Duration>) {
    let registry = client(name, address).await;
    let bare = backend(name, address).await;
    let watching = bare_watched.then(|| {
        let bare = bare.clone();
        tokio::spawn(async move {
            let revision = bare.list("/rpc/bare:1.0/").await.unwrap().revision;
            let mut events = bare.watch("/rpc/bare:1.0/", revision);
            while let Some(Ok(_)) = futures::StreamExt::next(&mut events).await {}
        })
    });
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
    if let Some(watching) = watching {
        watching.abort();
    }
    ours.sort();
    direct.sort();
    (ours, direct)
}

fn main() {
    let args = Args::parse();
    let samples = args.samples;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stores = Stores::start();
    println!(
        "{samples} samples per side, interleaved; from the start of the delete to the store's acknowledgement, p50 / p99; the bare backend {} the key it writes\n",
        if args.bare_watched { "watches" } else { "does not watch" }
    );
    println!("| store | `Registry::unregister` | the backend's `delete` | the registry adds |");
    println!("|---|---:|---:|---:|");
    for (name, address) in stores.addresses() {
        let (ours, direct) = runtime.block_on(store(name, &address, samples, args.bare_watched));
        let (o50, o99) = (micros(&ours, 0.5), micros(&ours, 0.99));
        let (d50, d99) = (micros(&direct, 0.5), micros(&direct, 0.99));
        println!(
            "| {name} | {o50} / {o99} µs | {d50} / {d99} µs | {:+} / {:+} µs |",
            o50 as i128 - d50 as i128,
            o99 as i128 - d99 as i128
        );
    }
}
