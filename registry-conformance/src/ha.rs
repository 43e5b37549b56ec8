//! One fault on a store's high-availability setup (a cluster member killed or paused, a
//! primary failing over), watched from outside: what happened to the registrations and to a
//! consumer while it lasted. Each store's HA tests inflict their own faults and assert on the
//! [`HaReport`]; `make chaos` prints the same reports as `RELIABILITY.md`'s table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_core::{EmptyProtection, RegistryOptions};

use crate::{svc, Target};

/// What one fault did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HaReport {
    /// Registered nodes.
    pub nodes: usize,
    /// From the fault until a fresh client reads every node from the store again (zero when
    /// the store never stopped showing them all).
    pub back_after: Duration,
    /// How long the consumer's cache was marked stale (served its last nodes while the store
    /// did not confirm them).
    pub stale_for: Duration,
    /// The fewest nodes the consumer's cache held at any time (never 0, or the failover
    /// emptied a consumer).
    pub consumer_min: usize,
    /// Nodes missing from the store once the recovery window and two more TTLs are over
    /// (must be 0).
    pub lost_at_end: usize,
}

impl HaReport {
    /// Panics unless no node was lost, the consumer never went empty, and everything was
    /// back within `recovery`.
    pub fn assert_survived(&self, what: &str, recovery: Duration) {
        assert_eq!(self.lost_at_end, 0, "{what}: nodes lost: {self:?}");
        assert!(
            self.consumer_min > 0,
            "{what}: the consumer's cache went empty: {self:?}"
        );
        assert!(
            self.back_after <= recovery,
            "{what}: nodes back only after {:?} (recovery window {recovery:?}): {self:?}",
            self.back_after
        );
    }
}

/// Registers `nodes` nodes of `svc:1.0` through `target` (the whole cluster's endpoints),
/// has a consumer (empty protection `OnResync`) discover them, runs `inject` (the fault, on a
/// blocking thread: it may kill, pause and wait), then measures until the store shows every
/// node again and the consumer is no longer stale (at most `recovery` after the fault), and
/// checks two TTLs later that nothing was lost. `heal` runs after the measurement (restart
/// what was killed, resume what was paused), so the cluster is whole again.
pub async fn survive<F, H>(
    target: &Target,
    options: RegistryOptions,
    nodes: u16,
    inject: F,
    recovery: Duration,
    heal: H,
) -> HaReport
where
    F: FnOnce() + Send + 'static,
    H: FnOnce() + Send + 'static,
{
    let provider = target.registry(options.clone()).await;
    for port in 1..=nodes {
        provider.register(svc(port)).await.unwrap();
    }
    let consumer = target
        .registry(
            options
                .clone()
                .with_empty_protection(EmptyProtection::OnResync),
        )
        .await;
    crate::eventually(
        Duration::from_secs(10),
        "the consumer sees every node",
        || async {
            consumer
                .discover("svc:1.0")
                .await
                .is_ok_and(|n| n.len() == usize::from(nodes))
        },
    )
    .await;

    // The consumer's cache, sampled every 5 ms from the fault on.
    let sampling = Arc::new(AtomicBool::new(true));
    let samples = Arc::new(Mutex::new((usize::MAX, Duration::ZERO)));
    let sampler = {
        let (consumer, sampling, samples) = (consumer.clone(), sampling.clone(), samples.clone());
        tokio::spawn(async move {
            let mut last = Instant::now();
            while sampling.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let now = Instant::now();
                let (len, stale) = consumer
                    .cached("svc:1.0")
                    .map_or((0, false), |n| (n.len(), n.is_stale()));
                let mut s = samples.lock().unwrap();
                s.0 = s.0.min(len);
                if stale {
                    s.1 += now - last;
                }
                last = now;
            }
        })
    };

    // The store as a client sees it; connected before the fault (a client cannot connect
    // while a ZooKeeper quorum is down), it follows the fault as every client must.
    let inspector = target.registry(options.clone()).await;
    let faulted = Instant::now();
    tokio::task::spawn_blocking(inject).await.unwrap();
    let complete = || async {
        inspector
            .inspect(Some("svc:1.0"))
            .await
            .is_ok_and(|n| n.len() == usize::from(nodes))
    };
    let mut back_after = None;
    while faulted.elapsed() < recovery {
        if complete().await {
            back_after = Some(faulted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = back_after.unwrap_or(Duration::MAX);
    while faulted.elapsed() < recovery
        && consumer
            .cached("svc:1.0")
            .is_none_or(|n| n.is_stale() || n.len() != usize::from(nodes))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(heal).await.unwrap();

    // Two TTLs later, heartbeats have kept (or put back) every node. The consumer is sampled
    // until then: a store can show every node and lose them after (ZooKeeper's old sessions
    // expire once a quorum is back).
    tokio::time::sleep(options.ttl * 2).await;
    // A request can still fail here (the Sentinels of a loaded machine failing over a second
    // time): asked again for a while; a count, once read, is the answer.
    let asked = Instant::now();
    let present = loop {
        match inspector.inspect(Some("svc:1.0")).await {
            Ok(n) => break n.len(),
            Err(error) if asked.elapsed() < recovery => {
                eprintln!(
                    "inspecting the store at the end failed, asking again: {}",
                    registry_core::error_chain(&error)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                eprintln!(
                    "inspecting the store at the end failed: {}",
                    registry_core::error_chain(&error)
                );
                break 0;
            }
        }
    };
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let (consumer_min, stale_for) = *samples.lock().unwrap();
    for r in [provider, consumer, inspector] {
        let _ = r.shutdown().await;
    }
    HaReport {
        nodes: usize::from(nodes),
        back_after,
        stale_for,
        consumer_min,
        lost_at_end: usize::from(nodes).saturating_sub(present),
    }
}
