//! A Redis primary with a replica and three Sentinels losing its primary: the clients follow
//! the failover by themselves, no registration is lost for longer than the recovery window,
//! the nodes are on the new primary, and a consumer keeps serving its last nodes meanwhile
//! (never an empty list), its watches relisting once on the new primary's history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_conformance::{default_options, init_tracing, survive};
use registry_test_support::RedisSentinel;

/// How long the Sentinels may take to promote the replica.
const PROMOTION: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_the_clients_follow_the_failover() {
    init_tracing();
    let setup = Arc::new(Mutex::new(
        RedisSentinel::start().unwrap_or_else(|e| panic!("{e}")),
    ));
    let address = setup.lock().unwrap().address();
    let relists = Arc::new(AtomicUsize::new(0));
    let target = support::counting_target(&address, &relists);
    let options = default_options();
    let root = options.keys.root().to_owned();
    let nodes = 20;
    // The Sentinels take about 2 s to promote the replica (8.5 s seen on a loaded machine);
    // then a heartbeat or a retry. The window covers their promotion (waited for at most 20 s);
    // ours, from the promotion until every node is back, is asserted on its own below.
    let ours = options.ttl * 2 + Duration::from_secs(4);
    let recovery = PROMOTION + ours;
    let (s1, s2) = (setup.clone(), setup.clone());
    let failover = Arc::new(Mutex::new(None));
    let (f1, f2) = (failover.clone(), failover.clone());
    let on_new_primary = Arc::new(Mutex::new(None));
    let seen = on_new_primary.clone();
    let report = survive(
        &target,
        options,
        nodes,
        move || {
            let mut setup = s1.lock().unwrap();
            let killed_at = Instant::now();
            let killed = setup.kill_primary().unwrap_or_else(|e| panic!("{e}"));
            let promoted = setup
                .wait_for_primary(Some(killed), PROMOTION)
                .unwrap_or_else(|e| panic!("{e}"));
            *f1.lock().unwrap() = Some((killed, promoted, killed_at.elapsed()));
        },
        recovery,
        move || {
            let mut setup = s2.lock().unwrap();
            let (killed, promoted, _) = f2.lock().unwrap().expect("failed over");
            // The nodes are on the new primary itself.
            let keys = setup
                .node(promoted)
                .command(&format!("KEYS {root}*"))
                .unwrap_or_default();
            *seen.lock().unwrap() = keys.lines().next().map(str::to_owned);
            setup
                .restart_as_replica(killed)
                .unwrap_or_else(|e| panic!("{e}"));
        },
    )
    .await;
    let (killed, promoted, took) = failover.lock().unwrap().expect("failed over");
    let relisted = relists.load(Ordering::Relaxed);
    print_sentinel_logs(&setup.lock().unwrap());
    println!(
        "Redis primary + replica + 3 Sentinels, primary (node {killed}) SIGKILL, node \
         {promoted} promoted after {took:?}: {report:?}; watch relists: {relisted}"
    );
    report.assert_survived("Redis primary SIGKILL", recovery);
    assert!(
        report.back_after.saturating_sub(took) <= ours,
        "nodes back {:?} after the promotion (window {ours:?}): {report:?}",
        report.back_after.saturating_sub(took)
    );
    assert_eq!(
        on_new_primary.lock().unwrap().as_deref(),
        Some(format!("*{nodes}").as_str()),
        "every node key on the new primary"
    );
    assert!(
        relisted > 0,
        "the watches relist on the new primary's history"
    );
}

/// The primary SIGSTOPped beyond the TTL: the Sentinels promote the replica, the clients
/// follow; when the old primary resumes it still calls itself a master until the Sentinels
/// demote it (and on a loaded machine they may fail over again): clients whose connections
/// still work must follow whatever server the Sentinels name, or their writes go to a server
/// nobody reads. No node lost, the consumer never empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_paused_beyond_the_ttl_no_node_is_lost() {
    init_tracing();
    let setup = Arc::new(Mutex::new(
        RedisSentinel::start().unwrap_or_else(|e| panic!("{e}")),
    ));
    let address = setup.lock().unwrap().address();
    let target = support::target(&address);
    let options = default_options();
    // As above: the window covers the Sentinels' promotion, ours is asserted after it.
    let ours = options.ttl * 2 + Duration::from_secs(4);
    let recovery = PROMOTION + ours;
    let paused_for = options.ttl + options.ttl / 2;
    let promoted_after = Arc::new(Mutex::new(Duration::ZERO));
    let promoted_after_fault = promoted_after.clone();
    let (s1, s2) = (setup.clone(), setup.clone());
    let victim = Arc::new(Mutex::new(None));
    let (v1, v2) = (victim.clone(), victim);
    let report = survive(
        &target,
        options,
        10,
        move || {
            let mut setup = s1.lock().unwrap();
            let primary = setup
                .wait_for_primary(None, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{e}"));
            let paused_at = Instant::now();
            setup.node_mut(primary).pause();
            *v1.lock().unwrap() = Some((primary, Instant::now()));
            setup
                .wait_for_primary(Some(primary), PROMOTION)
                .unwrap_or_else(|e| panic!("{e}"));
            *promoted_after_fault.lock().unwrap() = paused_at.elapsed();
        },
        recovery,
        move || {
            let (paused, at) = v2.lock().unwrap().expect("paused");
            std::thread::sleep(paused_for.saturating_sub(at.elapsed()));
            s2.lock().unwrap().node_mut(paused).resume();
        },
    )
    .await;
    println!("Redis primary SIGSTOP beyond the TTL: {report:?}");
    print_sentinel_logs(&setup.lock().unwrap());
    report.assert_survived("Redis primary SIGSTOP", recovery);
    let promoted_after = *promoted_after.lock().unwrap();
    assert!(
        report.back_after.saturating_sub(promoted_after) <= ours,
        "nodes back {:?} after the promotion (window {ours:?}): {report:?}",
        report.back_after.saturating_sub(promoted_after)
    );
}

/// Prints what the Sentinels logged (shown when a test fails): their failovers, one line
/// each (`+sdown`, `+switch-master`, ...), with the nodes' ports.
fn print_sentinel_logs(setup: &RedisSentinel) {
    for i in 0..2 {
        println!("node {i}: port {}", setup.node(i).port());
    }
    for i in 0..3 {
        println!("Sentinel {i}:\n{}", setup.sentinel(i).log_tail());
    }
}
