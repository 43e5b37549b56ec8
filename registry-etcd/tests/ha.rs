//! A 3-member etcd cluster losing members: no registration lost for longer than the recovery
//! window, and a consumer keeps serving its last nodes meanwhile (never an empty list).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_conformance::{default_options, init_tracing, survive};
use registry_test_support::EtcdCluster;

fn cluster() -> Arc<Mutex<EtcdCluster>> {
    init_tracing();
    Arc::new(Mutex::new(
        EtcdCluster::start().unwrap_or_else(|e| panic!("{e}")),
    ))
}

/// Which member: the leader, or one that is not.
fn member(cluster: &Arc<Mutex<EtcdCluster>>, leader: bool) -> usize {
    let c = cluster.lock().unwrap();
    let l = c.leader_index().expect("a leader");
    if leader {
        l
    } else {
        (l + 1) % 3
    }
}

async fn kill_and_restart(leader: bool) {
    let cluster = cluster();
    let target = support::target(&cluster.lock().unwrap().endpoints());
    let victim = member(&cluster, leader);
    let options = default_options();
    let recovery = options.ttl * 2 + Duration::from_secs(3);
    let (c1, c2) = (cluster.clone(), cluster.clone());
    let report = survive(
        &target,
        options,
        3,
        move || c1.lock().unwrap().member_mut(victim).kill(),
        recovery,
        move || {
            c2.lock()
                .unwrap()
                .member_mut(victim)
                .restart()
                .unwrap_or_else(|e| panic!("{e}"))
        },
    )
    .await;
    println!(
        "etcd 3 members, {} SIGKILL: {report:?}",
        if leader { "leader" } else { "follower" }
    );
    report.assert_survived("etcd member SIGKILL", recovery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed() {
    kill_and_restart(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed() {
    kill_and_restart(false).await;
}

/// The member the clients talk to first (their current endpoint) is paused for longer than
/// the TTL: requests, keep-alives and watches move to the others before a lease can expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_the_clients_use_paused_beyond_the_ttl() {
    let cluster = cluster();
    let target = support::target(&cluster.lock().unwrap().endpoints());
    let options = default_options().with_timeout(Duration::from_secs(3));
    let pause_for = options.ttl + options.ttl / 2;
    let recovery = options.ttl * 2 + Duration::from_secs(3);
    let paused_at = Arc::new(Mutex::new(None));
    let (c1, c2, p1, p2) = (
        cluster.clone(),
        cluster.clone(),
        paused_at.clone(),
        paused_at,
    );
    let report = survive(
        &target,
        options,
        3,
        move || {
            c1.lock().unwrap().member_mut(0).pause();
            *p1.lock().unwrap() = Some(Instant::now());
        },
        recovery,
        move || {
            let since = p2.lock().unwrap().expect("paused");
            std::thread::sleep(pause_for.saturating_sub(since.elapsed()));
            c2.lock().unwrap().member_mut(0).resume();
        },
    )
    .await;
    println!("etcd 3 members, the clients' member SIGSTOP beyond the TTL: {report:?}");
    report.assert_survived("etcd member paused", recovery);
}

/// Four registrars and two consumers for 15 s while a random member is killed or paused and
/// brought back every 2 s: afterwards every consumer's cache equals the store, which equals
/// what the registrars want.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_registrations_under_random_member_faults_converge() {
    use rand::Rng as _;
    use registry_conformance::{converge_under_faults, ConvergeRun};
    let cluster = cluster();
    let target = support::target(&cluster.lock().unwrap().endpoints());
    let options = default_options().with_timeout(Duration::from_secs(2));
    let run = ConvergeRun {
        clients: 4,
        consumers: 2,
        run_for: Duration::from_secs(15),
        fault_every: Duration::from_secs(2),
        converge_within: options.ttl * 3 + Duration::from_secs(5),
    };
    let report = converge_under_faults(&target, options, run, move |_| {
        let member = rand::rng().random_range(0..3);
        let pause = rand::rng().random_bool(0.5);
        let mut c = cluster.lock().unwrap();
        if pause {
            c.member_mut(member).pause();
        } else {
            c.member_mut(member).kill();
        }
        let cluster = cluster.clone();
        Box::new(move || {
            let mut c = cluster.lock().unwrap();
            if pause {
                c.member_mut(member).resume();
            } else {
                c.member_mut(member)
                    .restart()
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        })
    })
    .await;
    println!("etcd 3 members under random faults: {report:?}");
    assert!(report.faults >= 5, "{report:?}");
    assert!(report.operations >= 100, "{report:?}");
}
