//! Fault scenarios: each backend's test supplies the store ([`Target`]) and inflicts the
//! fault on its server when the scenario asks ([`Fault::inflict`] does it on a
//! [`registry_test_support::Server`]).

use std::time::{Duration, Instant};

use registry_core::{EmptyProtection, RegistryOptions};
use registry_test_support::Server;

use crate::{addresses, eventually, svc, svc_addresses, Recorder, Target};

/// A fault a backend's test inflicts on its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then start again on the same address without its data.
    KillAndRestartEmpty,
    /// SIGSTOP.
    Pause,
    /// SIGCONT.
    Resume,
}

impl Fault {
    /// Inflicts the fault on `server` (a restart that fails panics with the server's log).
    pub fn inflict(self, server: &mut Server) {
        match self {
            Fault::KillAndRestartEmpty => {
                server.kill();
                server.restart_wiped().unwrap_or_else(|e| panic!("{e}"));
            }
            Fault::Pause => server.pause(),
            Fault::Resume => server.resume(),
        }
    }
}

/// The server dies and comes back empty (`inject` is called with
/// [`Fault::KillAndRestartEmpty`]): every node is in the store again within
/// `back_within` of the restart, a watcher in another client sees them come back (whatever
/// it saw go, it sees return) and keeps receiving changes, and a consumer converges.
pub async fn restart_without_data(
    target: &Target,
    inject: &mut dyn FnMut(Fault),
    options: RegistryOptions,
    back_within: Duration,
) {
    let provider = target.registry(options.clone()).await;
    let watcher = target
        .registry(options.clone().with_empty_protection(EmptyProtection::Off))
        .await;
    let consumer = target
        .registry(
            options
                .clone()
                .with_empty_protection(EmptyProtection::OnResync),
        )
        .await;
    for port in [1, 2, 3] {
        provider.register(svc(port)).await.unwrap();
    }
    let rec = Recorder::default();
    let _sub = watcher.subscribe("svc:1.0", rec.listener()).await.unwrap();
    eventually(Duration::from_secs(5), "watcher sees 3 nodes", || async {
        rec.current().len() == 3
    })
    .await;
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 3);

    inject(Fault::KillAndRestartEmpty);
    let restarted = Instant::now();
    let fresh = target.registry(options.clone()).await;
    eventually(back_within, "all nodes back in the store", || async {
        fresh
            .inspect(Some("svc:1.0"))
            .await
            .is_ok_and(|n| n.len() == 3)
    })
    .await;
    println!("nodes back {:?} after the restart", restarted.elapsed());
    // Whether the watcher relisted before or after the provider put the nodes back is a race;
    // either way every loss it saw is undone.
    eventually(
        Duration::from_secs(10),
        "watcher converges to the 3 nodes",
        || async {
            let added: usize = rec.changes().iter().map(|c| c.diff.added.len()).sum();
            rec.current() == svc_addresses(&[1, 2, 3]) && added == 3 + rec.removed().len()
        },
    )
    .await;
    // It watches the new server's history: a node added now arrives.
    provider.register(svc(4)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "watcher sees a node added after the restart",
        || async { rec.current() == svc_addresses(&[1, 2, 3, 4]) },
    )
    .await;
    eventually(Duration::from_secs(10), "consumer converged", || async {
        consumer
            .cached("svc:1.0")
            .is_some_and(|n| n.len() == 4 && !n.is_stale())
    })
    .await;
}

/// The server is paused for longer than the TTL (`inject` is called with [`Fault::Pause`], then
/// [`Fault::Resume`]): the consumer's cache keeps serving during the
/// pause; after it, the nodes are registered (within `converge_within`), the cache equals the
/// store, and heartbeats keep them there.
pub async fn pause_beyond_ttl(
    target: &Target,
    inject: &mut dyn FnMut(Fault),
    options: RegistryOptions,
    converge_within: Duration,
) {
    let provider = target.registry(options.clone()).await;
    let consumer = target
        .registry(
            options
                .clone()
                .with_empty_protection(EmptyProtection::OnResync),
        )
        .await;
    for port in [1, 2] {
        provider.register(svc(port)).await.unwrap();
    }
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);

    inject(Fault::Pause);
    tokio::time::sleep(options.ttl + options.heartbeat_interval * 2).await;
    assert_eq!(
        addresses(&consumer, "svc:1.0").await.len(),
        2,
        "the cache serves during the outage"
    );
    inject(Fault::Resume);

    let fresh = target.registry(options.clone()).await;
    eventually(converge_within, "nodes registered in the store", || async {
        fresh
            .inspect(Some("svc:1.0"))
            .await
            .is_ok_and(|n| n.len() == 2)
    })
    .await;
    eventually(
        converge_within,
        "consumer cache equals the store",
        || async {
            consumer.cached("svc:1.0").is_some_and(|n| !n.is_stale())
                && addresses(&consumer, "svc:1.0").await == svc_addresses(&[1, 2])
        },
    )
    .await;
    // Heartbeats keep going after the pause.
    tokio::time::sleep(options.ttl * 2).await;
    assert_eq!(fresh.inspect(Some("svc:1.0")).await.unwrap().len(), 2);
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        svc_addresses(&[1, 2])
    );
}
