//! A 3-server ZooKeeper ensemble losing servers: no registration lost for longer than the
//! recovery window, and a consumer keeps serving its last nodes meanwhile (never an empty
//! list).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_conformance::{default_options, init_tracing, survive};
use registry_core::RegistryOptions;
use registry_test_support::ZkEnsemble;

fn ensemble() -> Arc<Mutex<ZkEnsemble>> {
    init_tracing();
    Arc::new(Mutex::new(
        ZkEnsemble::start().unwrap_or_else(|e| panic!("{e}")),
    ))
}

/// The sessions owning the `svc:1.0` nodes under `options`' root, read with a fresh session.
async fn owners(address: &str, options: &RegistryOptions) -> BTreeSet<i64> {
    let raw = support::raw(address).await;
    let dir = options.keys.service_prefix("svc:1.0");
    let dir = dir.trim_end_matches('/');
    let (children, _) = raw.get_children(dir).await.unwrap();
    let mut owners = BTreeSet::new();
    for child in children {
        let (_, stat) = raw.get_data(&format!("{dir}/{child}")).await.unwrap();
        owners.insert(stat.ephemeral_owner);
    }
    owners
}

/// The leader is SIGKILLed: every server drops its clients while the other two elect a new
/// one, the sessions reconnect and keep their nodes (the new leader gives every session a
/// fresh timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed() {
    let ensemble = ensemble();
    let address = ensemble.lock().unwrap().connect_string();
    let target = support::target(&address);
    let leader = ensemble.lock().unwrap().leader_index().expect("a leader");
    let options = default_options();
    let recovery = options.ttl * 2 + Duration::from_secs(3);
    let runtime = tokio::runtime::Handle::current();
    let before = Arc::new(Mutex::new(BTreeSet::new()));
    let after = Arc::new(Mutex::new(BTreeSet::new()));
    let (e1, e2, b1, a2) = (
        ensemble.clone(),
        ensemble.clone(),
        before.clone(),
        after.clone(),
    );
    let (address1, address2, options1, options2) =
        (address.clone(), address, options.clone(), options.clone());
    let (rt1, rt2) = (runtime.clone(), runtime);
    let report = survive(
        &target,
        options,
        3,
        move || {
            *b1.lock().unwrap() = rt1.block_on(owners(&address1, &options1));
            e1.lock().unwrap().member_mut(leader).kill();
        },
        recovery,
        move || {
            *a2.lock().unwrap() = rt2.block_on(owners(&address2, &options2));
            e2.lock()
                .unwrap()
                .member_mut(leader)
                .restart()
                .unwrap_or_else(|e| panic!("{e}"));
        },
    )
    .await;
    println!("zookeeper 3 servers, leader SIGKILL: {report:?}");
    report.assert_survived("zookeeper leader SIGKILL", recovery);
    let before = before.lock().unwrap().clone();
    assert_eq!(before.len(), 1, "one provider session: {before:?}");
    assert_eq!(
        *after.lock().unwrap(),
        before,
        "the provider's session survived the failover"
    );
}

/// The server the provider's session is connected to (found with `cons`) is SIGKILLed: the
/// session moves to another server within its timeout, so it does not expire and its nodes
/// stay, owned by the same session. The clients are given the two followers only, so that
/// server is a follower and the rest of the ensemble serves on undisturbed (zookeeper-client
/// shuffles the servers of its connect string: their order does not choose one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_of_the_providers_session_killed() {
    let ensemble = ensemble();
    let address = {
        let e = ensemble.lock().unwrap();
        let leader = e.leader_index().expect("a leader");
        (0..3)
            .filter(|&i| i != leader)
            .map(|i| e.member(i).connect_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let target = support::target(&address);
    let options = default_options();
    let recovery = options.ttl * 2 + Duration::from_secs(3);
    let runtime = tokio::runtime::Handle::current();
    // (the provider's session, the server it was on, its role), then the owners after.
    let before = Arc::new(Mutex::new(None));
    let after = Arc::new(Mutex::new(BTreeSet::new()));
    let (e1, e2, b1, b2, a2) = (
        ensemble.clone(),
        ensemble.clone(),
        before.clone(),
        before.clone(),
        after.clone(),
    );
    let (address1, address2, options1, options2) =
        (address.clone(), address, options.clone(), options.clone());
    let (rt1, rt2) = (runtime.clone(), runtime);
    let report = survive(
        &target,
        options,
        3,
        move || {
            let owners = rt1.block_on(owners(&address1, &options1));
            assert_eq!(owners.len(), 1, "one provider session: {owners:?}");
            let session = *owners.first().unwrap();
            let mut e = e1.lock().unwrap();
            let victim = e
                .member_serving(session)
                .unwrap_or_else(|| panic!("no server lists session {session:#x}"));
            let role = e.mode(victim);
            e.member_mut(victim).kill();
            *b1.lock().unwrap() = Some((session, victim, role));
        },
        recovery,
        move || {
            *a2.lock().unwrap() = rt2.block_on(owners(&address2, &options2));
            let victim = b2.lock().unwrap().as_ref().expect("killed").1;
            e2.lock()
                .unwrap()
                .member_mut(victim)
                .restart()
                .unwrap_or_else(|e| panic!("{e}"));
        },
    )
    .await;
    let (session, victim, role) = before.lock().unwrap().clone().unwrap();
    println!(
        "zookeeper 3 servers, SIGKILL of the provider's server ({victim}, {role:?}): {report:?}"
    );
    report.assert_survived("zookeeper provider's server SIGKILL", recovery);
    assert_eq!(
        *after.lock().unwrap(),
        BTreeSet::from([session]),
        "the provider's session {session:#x} moved to another server without expiring"
    );
}

/// Two servers of three are down for longer than the session timeout, then back. The client
/// library gives the sessions up (no server for 1.4 times their timeout), but the ensemble
/// keeps them: only a leader expires sessions, and the one elected once the quorum is back
/// gives every session a fresh timeout. The backend takes its session back, so the nodes are
/// never deleted and re-created by a new session (which every consumer would see as the
/// provider leaving), and the consumer keeps serving its last nodes meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_down_beyond_the_session_timeout() {
    let ensemble = ensemble();
    let address = ensemble.lock().unwrap().connect_string();
    let target = support::target(&address);
    let options = default_options();
    let down_for = options.ttl * 2;
    // Down, then the quorum back (two restarts), then the sessions taken back.
    let recovery = down_for + options.ttl * 3 + Duration::from_secs(5);
    let leader = ensemble.lock().unwrap().leader_index().expect("a leader");
    let victims = [leader, (leader + 1) % 3];
    let runtime = tokio::runtime::Handle::current();
    let before = Arc::new(Mutex::new(BTreeSet::new()));
    let after = Arc::new(Mutex::new(BTreeSet::new()));
    let quorum_back = Arc::new(Mutex::new(None));
    let (e1, q1, b1, a2) = (
        ensemble.clone(),
        quorum_back.clone(),
        before.clone(),
        after.clone(),
    );
    let (address1, address2, options1, options2) =
        (address.clone(), address, options.clone(), options.clone());
    let (rt1, rt2) = (runtime.clone(), runtime);
    let ttl = options.ttl;
    let report = survive(
        &target,
        options,
        3,
        move || {
            *b1.lock().unwrap() = rt1.block_on(owners(&address1, &options1));
            let killed = Instant::now();
            for v in victims {
                e1.lock().unwrap().member_mut(v).kill();
            }
            std::thread::sleep(down_for);
            for v in victims {
                e1.lock()
                    .unwrap()
                    .member_mut(v)
                    .restart()
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            *q1.lock().unwrap() = Some(killed.elapsed());
        },
        recovery,
        move || {
            // By now a session nobody took back has expired (one timeout after the quorum)
            // and its nodes belong to a new one.
            std::thread::sleep(ttl * 2);
            *a2.lock().unwrap() = rt2.block_on(owners(&address2, &options2));
        },
    )
    .await;
    let quorum_back = quorum_back.lock().unwrap().expect("restarted");
    println!(
        "zookeeper 3 servers, 2 down for {down_for:?} (both serving again {quorum_back:?} after the kill): {report:?}"
    );
    report.assert_survived("zookeeper majority down", recovery);
    let before = before.lock().unwrap().clone();
    assert_eq!(before.len(), 1, "one provider session: {before:?}");
    assert_eq!(
        *after.lock().unwrap(),
        before,
        "the provider's nodes are still its first session's: the session was taken back"
    );
}
