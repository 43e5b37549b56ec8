//! Watchers report no data loss that did not happen: many clients writing into many watched
//! services make no watch relist. (A real loss still is reported: a restart without data or
//! from an older snapshot in `faults.rs`, a failover in `ha.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use registry_conformance::{default_options, eventually};
use registry_core::{Registry, ServiceChange, ServiceMetaInfo};

const SERVICES: u16 = 200;
const REGISTRATIONS: u16 = 2000;
const WRITERS: usize = 4;
const IN_FLIGHT: usize = 64;

fn node(i: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new(format!("load-{}", i % SERVICES), "127.0.0.1", 10_000 + i)
}

fn service_key(s: u16) -> String {
    format!("load-{s}:1.0")
}

/// Nodes the consumer's cache holds over every service.
fn cached(consumer: &Registry) -> usize {
    (0..SERVICES)
        .map(|s| consumer.cached(&service_key(s)).map_or(0, |n| n.len()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_into_many_watched_services_make_no_watch_relist() {
    let server = support::start();
    let relists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let target = support::counting_target(&server.url(), &relists);
    let options = default_options();
    let consumer = target.registry(options.clone()).await;
    let mut subscriptions = Vec::new();
    for s in 0..SERVICES {
        let sub = consumer
            .subscribe(&service_key(s), |_: &ServiceChange| {})
            .await
            .unwrap();
        subscriptions.push(sub);
    }
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        writers.push(target.registry(options.clone()).await);
    }

    let started = Instant::now();
    let writers_ref = &writers;
    futures::stream::iter(0..REGISTRATIONS)
        .map(|i| async move {
            writers_ref[usize::from(i) % WRITERS]
                .register(node(i))
                .await
                .unwrap();
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let registered = started.elapsed();
    let n = usize::from(REGISTRATIONS);
    eventually(
        Duration::from_secs(30),
        "the consumer sees every node",
        || async { cached(&consumer) == n },
    )
    .await;
    let seen = started.elapsed();
    // Heartbeats and reaps go on for a while: still nothing lost.
    tokio::time::sleep(options.ttl).await;
    assert_eq!(cached(&consumer), n);

    let stopping = Instant::now();
    for writer in writers {
        writer.shutdown().await.unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "the consumer sees every node go",
        || async { cached(&consumer) == 0 },
    )
    .await;
    let gone = stopping.elapsed();
    let relisted = relists.load(Ordering::Relaxed);
    println!(
        "{WRITERS} writers, {REGISTRATIONS} registrations ({IN_FLIGHT} in flight) into \
         {SERVICES} services watched by one consumer: registered in {registered:?}, all seen \
         by the consumer after {seen:?}, all gone {gone:?} after the writers' shutdown; \
         watch relists (consumer and writers, {} watches): {relisted}",
        usize::from(SERVICES) * (WRITERS + 1)
    );
    assert_eq!(
        relisted, 0,
        "no watch may report a loss that did not happen"
    );
    drop(subscriptions);
    consumer.shutdown().await.unwrap();
}
