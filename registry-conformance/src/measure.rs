//! Measurements the benchmark binaries share (figures go to `BENCHMARKS.md`, not to asserts).

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use registry_core::{Registry, ServiceChange, ServiceMetaInfo};

/// The `p` quantile (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Reads `stream` in a task of its own, as a listener runs in its own task, and hands on each
/// item with the instant it arrived there: what is timed is when the news reached the client
/// that waits for it, not when the task that made the change got round to looking.
pub fn stamped<S>(stream: S) -> mpsc::UnboundedReceiver<(Instant, S::Item)>
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send((Instant::now(), item)).is_err() {
                return;
            }
        }
    });
    rx
}

/// How long a deregistration sample waits after the node was seen, before the timed removal.
pub const SETTLE: Duration = Duration::from_millis(2);

/// Times graceful deregistrations: `provider` unregisters a node, until a watch of
/// `consumer` (`Registry::watch`, read in a task of its own: [`stamped`]) yields its
/// removal. One node stays registered throughout, so the list never empties (empty protection
/// is not what is timed).
pub struct Deregistration {
    provider: Registry,
    consumer: Registry,
    changes: mpsc::UnboundedReceiver<(Instant, ServiceChange)>,
}

impl Deregistration {
    /// Registers the node that stays and starts the consumer's watch.
    pub async fn new(provider: Registry, consumer: Registry) -> Self {
        provider
            .register(ServiceMetaInfo::new("bench", "127.0.0.1", 1))
            .await
            .unwrap();
        let changes = stamped(consumer.watch("bench:1.0").await.unwrap());
        Deregistration {
            provider,
            consumer,
            changes,
        }
    }

    /// One sample: register, wait until the consumer has the node (and [`SETTLE`]), then time
    /// its removal.
    pub async fn sample(&mut self) -> Duration {
        self.sample_parts().await.1
    }

    /// One sample in two parts, both from the start of the removal: until `unregister`
    /// returned (the store acknowledged the delete) and until the consumer's watch yielded it.
    /// The consumer may see it first: our watch can get the store's event before the
    /// provider gets the store's answer.
    pub async fn sample_parts(&mut self) -> (Duration, Duration) {
        let node = ServiceMetaInfo::new("bench", "127.0.0.1", 2);
        self.provider.register(node.clone()).await.unwrap();
        while let Some((_, c)) = self.changes.recv().await {
            if c.nodes.iter().any(|n| n.service_port == 2) {
                break;
            }
        }
        // The registration's other work settles first (on ZooKeeper the provider's watch of
        // its own service reads the new node back, on the session the delete goes through).
        tokio::time::sleep(SETTLE).await;
        let started = Instant::now();
        self.provider.unregister(&node).await.unwrap();
        let acknowledged = started.elapsed();
        while let Some((at, c)) = self.changes.recv().await {
            if c.diff.removed.iter().any(|n| n.service_port == 2) {
                return (acknowledged, at.saturating_duration_since(started));
            }
        }
        panic!("the watch ended");
    }

    /// Shuts both clients down.
    pub async fn finish(self) {
        self.provider.shutdown().await.unwrap();
        self.consumer.shutdown().await.unwrap();
    }
}

/// Registers `nodes` nodes over `services` services (64 in flight) with `provider` while
/// `consumer` already watches every service; returns the time until every registration
/// was acknowledged and the time until the consumer's cache held them all.
pub async fn mass_registration(
    provider: &Registry,
    consumer: &Registry,
    services: u16,
    nodes: u16,
) -> (Duration, Duration) {
    for s in 0..services {
        consumer.discover(&format!("mass{s}:1.0")).await.ok();
    }
    let started = Instant::now();
    futures::stream::iter(0..nodes)
        .map(|i| async move {
            provider
                .register(ServiceMetaInfo::new(
                    format!("mass{}", i % services),
                    "127.0.0.1",
                    20_000 + i,
                ))
                .await
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let registered = started.elapsed();
    loop {
        let seen: usize = (0..services)
            .map(|s| {
                consumer
                    .cached(&format!("mass{s}:1.0"))
                    .map_or(0, |n| n.len())
            })
            .sum();
        if seen == usize::from(nodes) {
            return (registered, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
