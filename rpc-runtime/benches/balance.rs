//! One `roundRobin` pick over 1, 10 and 100 nodes: equal weights (the counter, no lock) beside
//! one heavier node (the weighted rule: one lock, one state entry per node), in the same run.
//!
//! `cargo bench -p rpc-runtime --bench balance`

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use registry_core::{Node, ServiceMetaInfo};
use rpc_runtime::balance::{by_name, LoadBalancer};

fn nodes(n: u16, heavier: bool) -> Vec<Node> {
    (1..=n)
        .map(|port| {
            let mut node = ServiceMetaInfo::new("svc", "10.0.0.1", port);
            if heavier && port == 1 {
                node.weight = 3;
            }
            Arc::new(node)
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("roundRobin pick");
    for n in [1u16, 10, 100] {
        for (name, heavier) in [("equal weights", false), ("one node heavier", true)] {
            let balancer: Box<dyn LoadBalancer> = by_name("roundRobin").unwrap();
            let ns = nodes(n, heavier);
            group.bench_with_input(BenchmarkId::new(name, n), &ns, |b, ns| {
                b.iter(|| balancer.pick(ns, 0, &|_| false).map(|n| n.service_port));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
