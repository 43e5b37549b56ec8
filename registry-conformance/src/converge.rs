//! Convergence under random faults: several clients register and unregister nodes at random
//! while faults are injected; once the faults stop, every consumer's cache must equal the
//! store, and the store must equal what the registrars want.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng as _;
use registry_core::{EmptyProtection, Registry, RegistryOptions, ServiceMetaInfo};

use crate::Target;

/// What the run survived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvergeReport {
    /// Registrations and unregistrations issued.
    pub operations: u64,
    /// Of those, the ones the store refused at the time (they stay wanted and are retried by
    /// the registrar, or were unregistered anyway).
    pub failed_operations: u64,
    /// Faults injected.
    pub faults: u64,
    /// Nodes wanted at the end.
    pub wanted: usize,
    /// From the last fault healed until the store and every consumer agreed with the
    /// registrars.
    pub converged_after: Duration,
}

/// The shape of a run.
#[derive(Clone, Copy, Debug)]
pub struct ConvergeRun {
    /// Registrar clients, each with its own 16 ports.
    pub clients: usize,
    /// Consumer clients of `svc:1.0`.
    pub consumers: usize,
    /// How long registrations go on.
    pub run_for: Duration,
    /// A fault every this long, healed half a period later.
    pub fault_every: Duration,
    /// The longest convergence after the last fault is healed.
    pub converge_within: Duration,
}

/// Runs `run.clients` registrars and `run.consumers` consumers of `svc:1.0` on `target` for
/// `run.run_for`, each registrar registering or unregistering one of its own 16 ports at
/// random every few milliseconds, while `fault(i)` is called (on a blocking thread) every
/// `run.fault_every`: it inflicts fault number `i` and returns a closure that heals it, called
/// half a period later. Then waits up to `run.converge_within` for convergence, and panics if
/// it does not come.
pub async fn converge_under_faults<F>(
    target: &Target,
    options: RegistryOptions,
    run: ConvergeRun,
    fault: F,
) -> ConvergeReport
where
    F: FnMut(u64) -> Box<dyn FnOnce() + Send> + Send + 'static,
{
    let ConvergeRun {
        clients,
        consumers,
        run_for,
        fault_every,
        converge_within,
    } = run;
    let options = options.with_empty_protection(EmptyProtection::OnResync);
    let mut registrars = Vec::new();
    for _ in 0..clients {
        registrars.push(target.registry(options.clone()).await);
    }
    let mut readers = Vec::new();
    for _ in 0..consumers {
        let r = target.registry(options.clone()).await;
        let _ = r.discover("svc:1.0").await;
        readers.push(r);
    }
    let counts = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let deadline = Instant::now() + run_for;

    let mut workers = Vec::new();
    for (i, registry) in registrars.iter().cloned().enumerate() {
        let counts = counts.clone();
        workers.push(tokio::spawn(async move {
            // Each registrar its own ports: what it wants is its own business.
            let base = 20_000 + 100 * i as u16;
            let mut wanted = BTreeSet::new();
            while Instant::now() < deadline {
                let port = base + rand::rng().random_range(0..16u16);
                let node = ServiceMetaInfo::new("svc", "127.0.0.1", port);
                let ok = if wanted.remove(&port) {
                    registry.unregister(&node).await.is_ok()
                } else {
                    wanted.insert(port);
                    registry.register(node).await.is_ok()
                };
                {
                    let mut c = counts.lock().unwrap();
                    c.0 += 1;
                    c.1 += u64::from(!ok);
                }
                let pause = rand::rng().random_range(5..50);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            wanted
        }));
    }

    // Inflicted on a blocking thread (a fault may wait for a failover).
    let fault = Arc::new(std::sync::Mutex::new(fault));
    let mut faults = 0;
    let mut last_healed = Instant::now();
    while Instant::now() + fault_every < deadline {
        tokio::time::sleep(fault_every / 2).await;
        let heal = tokio::task::spawn_blocking({
            let (n, fault) = (faults, Arc::clone(&fault));
            move || (fault.lock().unwrap_or_else(PoisonError::into_inner))(n)
        })
        .await
        .unwrap();
        faults += 1;
        tokio::time::sleep(fault_every / 2).await;
        tokio::task::spawn_blocking(heal).await.unwrap();
        last_healed = Instant::now();
    }
    let mut want = BTreeSet::new();
    for w in workers {
        want.extend(w.await.unwrap());
    }

    // Every consumer's cache equals the store, which equals what the registrars want.
    let inspector = target.registry(options.clone()).await;
    let agreed = |r: &Registry| {
        r.cached("svc:1.0").is_some_and(|n| {
            !n.is_stale() && n.iter().map(|n| n.service_port).collect::<BTreeSet<_>>() == want
        }) || (want.is_empty() && r.cached("svc:1.0").is_some_and(|n| n.is_empty()))
    };
    let started = Instant::now();
    loop {
        let store: Option<BTreeSet<u16>> = inspector
            .inspect(Some("svc:1.0"))
            .await
            .ok()
            .map(|n| n.iter().map(|s| s.node.service_port).collect());
        if store.as_ref() == Some(&want) && readers.iter().all(agreed) {
            break;
        }
        assert!(
            started.elapsed() < converge_within,
            "no convergence {converge_within:?} after the last fault: wanted {want:?}, store {store:?}, consumers {:?}",
            readers
                .iter()
                .map(|r| r.cached("svc:1.0").map(|n| (n.len(), n.is_stale())))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converged_after = last_healed.elapsed();
    let (operations, failed_operations) = *counts.lock().unwrap();
    for r in registrars.into_iter().chain(readers).chain([inspector]) {
        let _ = r.shutdown().await;
    }
    ConvergeReport {
        operations,
        failed_operations,
        faults,
        wanted: want.len(),
        converged_after,
    }
}
