//! Cache-hit discover: 10,000 nodes across 1,000 services, every service cached.
//!
//! `cargo bench -p registry-core --bench cache_hit`
//!
//! Compared in the same run with two baselines: the same lookup through an `RwLock<HashMap>` of
//! `Arc` lists (what a straightforward lock-based cache costs), and the physical floor: a
//! `HashMap` lookup and an `Arc` clone with no synchronisation at all (what no shared cache
//! can beat). Then how a hit grows with the number of cached services: 10, 1,000 and 100,000.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};

use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt as _;
use registry_core::{
    KeySpace, MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo,
};

const SERVICES: usize = 1_000;
const NODES_PER_SERVICE: usize = 10;

fn setup(rt: &tokio::runtime::Runtime) -> (Registry, Vec<String>) {
    setup_n(rt, SERVICES, NODES_PER_SERVICE)
}

/// `services` services of `nodes_per_service` nodes, every one discovered (cached).
fn setup_n(
    rt: &tokio::runtime::Runtime,
    services: usize,
    nodes_per_service: usize,
) -> (Registry, Vec<String>) {
    rt.block_on(async {
        let store = MemoryStore::new();
        let keys = KeySpace::default();
        let mut service_keys = Vec::with_capacity(services);
        for s in 0..services {
            for n in 0..nodes_per_service {
                let node =
                    ServiceMetaInfo::new(format!("service-{s}"), "10.0.0.1", 10_000 + n as u16);
                store
                    .put(
                        &keys.node_path(&node),
                        &serde_json::to_vec(&node).unwrap(),
                        None,
                    )
                    .unwrap();
            }
            service_keys.push(format!("service-{s}:1.0"));
        }
        let registry = Registry::new(
            Arc::new(MemoryBackend::new(store)),
            RegistryOptions::default(),
        )
        .unwrap();
        for key in &service_keys {
            assert_eq!(
                registry.discover(key).await.unwrap().len(),
                nodes_per_service
            );
        }
        (registry, service_keys)
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (registry, keys) = setup(&rt);
    let mut group = c.benchmark_group("cache_hit_10k_nodes_1k_services");

    let mut i = 0;
    group.bench_function("Registry::cached", |b| {
        b.iter(|| {
            i = (i + 1) % SERVICES;
            black_box(registry.cached(black_box(&keys[i])))
        })
    });

    let mut i = 0;
    group.bench_function("Registry::discover (hit, polled once)", |b| {
        b.iter(|| {
            i = (i + 1) % SERVICES;
            black_box(registry.discover(black_box(&keys[i])).now_or_never())
        })
    });

    // Baseline: a lock-based map of shared lists, same hasher.
    type Baseline =
        RwLock<HashMap<String, Arc<[Arc<ServiceMetaInfo>]>, foldhash::fast::RandomState>>;
    let baseline: Baseline = RwLock::new(
        keys.iter()
            .map(|k| (k.clone(), registry.cached(k).unwrap().shared()))
            .collect(),
    );
    // The physical floor: the same map, no lock, no atomics but the `Arc` clone.
    let floor: HashMap<String, Arc<[Arc<ServiceMetaInfo>]>, foldhash::fast::RandomState> = keys
        .iter()
        .map(|k| (k.clone(), registry.cached(k).unwrap().shared()))
        .collect();
    let mut i = 0;
    group.bench_function("floor HashMap + Arc clone (no synchronisation)", |b| {
        b.iter(|| {
            i = (i + 1) % SERVICES;
            black_box(floor.get(black_box(&keys[i])).cloned())
        })
    });

    let mut i = 0;
    group.bench_function("baseline RwLock<HashMap> + Arc clone", |b| {
        b.iter(|| {
            i = (i + 1) % SERVICES;
            black_box(baseline.read().unwrap().get(black_box(&keys[i])).cloned())
        })
    });

    // The same lookups while a second thread does lookups too (the machine has 2 cores):
    // shared lock words bounce between cores, lock-free loads mostly do not.
    fn contended<F: Fn(usize) + Sync>(lookup: F) -> impl FnMut(u64) -> std::time::Duration {
        move |iters| {
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i = (i + 7) % SERVICES;
                        lookup(i);
                    }
                });
                let start = std::time::Instant::now();
                for n in 0..iters as usize {
                    lookup(n % SERVICES);
                }
                let took = start.elapsed();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                took
            })
        }
    }
    group.bench_function("Registry::cached, 2 threads", |b| {
        b.iter_custom(contended(|i| {
            black_box(registry.cached(black_box(&keys[i])));
        }))
    });
    group.bench_function("baseline RwLock<HashMap> + Arc clone, 2 threads", |b| {
        b.iter_custom(contended(|i| {
            black_box(baseline.read().unwrap().get(black_box(&keys[i])).cloned());
        }))
    });
    group.finish();
    drop(rt);

    // Growth: a hit with 10, 1,000 and 100,000 cached services (one node each).
    let mut group = c.benchmark_group("cache_hit_growth");
    for services in [10, 1_000, 100_000] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (registry, keys) = setup_n(&rt, services, 1);
        let mut i = 0;
        group.bench_function(format!("Registry::cached, {services} services"), |b| {
            b.iter(|| {
                i = (i + 1) % services;
                black_box(registry.cached(black_box(&keys[i])))
            })
        });
        let floor: HashMap<String, Arc<[Arc<ServiceMetaInfo>]>, foldhash::fast::RandomState> = keys
            .iter()
            .map(|k| (k.clone(), registry.cached(k).unwrap().shared()))
            .collect();
        let mut i = 0;
        group.bench_function(format!("floor, {services} services"), |b| {
            b.iter(|| {
                i = (i + 1) % services;
                black_box(floor.get(black_box(&keys[i])).cloned())
            })
        });
        rt.block_on(registry.shutdown()).unwrap();
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
