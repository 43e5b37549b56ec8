//! The harness against the real servers: readiness, pause/resume, kill/restart on the same
//! port, wiped restarts, and a 3-member etcd cluster and a 3-server ZooKeeper ensemble losing
//! their leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use registry_test_support::{
    etcdctl, probe, EtcdCluster, EtcdServer, RedisServer, ZkEnsemble, ZkServer,
};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn etcd_pause_resume_kill_restart_and_wipe() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let port = etcd.port();
    ok(&etcd.etcdctl(&["put", "/k", "v"]));

    etcd.pause();
    let t = Instant::now();
    assert!(!etcd.is_ready(), "a paused server does not answer");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the probe has a timeout"
    );
    etcd.resume();
    assert!(etcd.is_ready());

    etcd.kill();
    assert!(!etcd.is_ready());
    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(etcd.port(), port);
    assert!(ok(&etcd.etcdctl(&["get", "/k"])).contains('v'), "data kept");

    etcd.restart_wiped().unwrap_or_else(|e| panic!("{e}"));
    assert!(ok(&etcd.etcdctl(&["get", "/k"])).is_empty(), "data wiped");
    assert!(etcd.metrics().contains("etcd_mvcc_put_total"));
}

#[test]
fn redis_pause_kill_restart() {
    let mut redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    assert!(redis.command("SET k v").unwrap().starts_with("+OK"));
    redis.pause();
    assert!(redis.command("PING").is_none());
    redis.resume();
    assert!(redis.command("PING").unwrap().starts_with("+PONG"));
    redis.restart_wiped().unwrap_or_else(|e| panic!("{e}"));
    assert!(redis.command("GET k").unwrap().starts_with("$-1"), "wiped");
    redis.kill();
    assert!(redis.command("PING").is_none());
}

#[test]
fn zookeeper_answers_pauses_and_restarts() {
    // A probe has a short read timeout; on a loaded machine one may miss, so ask a few times.
    let answers = |port: u16, command: &[u8], expect: &str| {
        (0..20).any(|_| {
            let ok = probe(port, command).is_some_and(|a| a.contains(expect));
            if !ok {
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        })
    };
    let mut zk = ZkServer::start().unwrap_or_else(|e| panic!("{e}"));
    assert!(answers(zk.port(), b"ruok", "imok"));
    zk.pause();
    assert!(probe(zk.port(), b"ruok").is_none());
    zk.resume();
    zk.restart().unwrap_or_else(|e| panic!("{e}"));
    assert!(answers(zk.port(), b"srvr", "Mode: standalone"));
}

#[test]
fn etcd_cluster_survives_losing_its_leader() {
    let mut cluster = EtcdCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let leader = cluster.leader_index().expect("a leader");
    ok(&etcdctl(&cluster.endpoints(), &["put", "/before", "1"]));
    cluster.member_mut(leader).kill();
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.member(i).endpoint())
        .collect();
    let start = Instant::now();
    loop {
        let out = etcdctl(&survivors.join(","), &["put", "/after", "2"]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "survivors never accepted a write"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let new_leader = cluster.leader_index().expect("a new leader");
    assert_ne!(new_leader, leader);
    cluster
        .member_mut(leader)
        .restart()
        .unwrap_or_else(|e| panic!("{e}"));
    let got = ok(&etcdctl(
        &cluster.member(leader).endpoint(),
        &["get", "/after"],
    ));
    assert!(got.contains('2'), "restarted member rejoined: {got}");
}

/// The value of `key` in a member's `mntr` output (tab-separated `key value` lines).
fn mntr(port: u16, key: &str) -> Option<String> {
    probe(port, b"mntr")?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t').map(str::to_owned))
}

/// The epoch (high 32 bits of `Zxid: 0x...`) a member's `srvr` shows: every member that
/// synced with the current leader shows the leader's.
fn epoch(port: u16) -> Option<u64> {
    let srvr = probe(port, b"srvr")?;
    let zxid = srvr.lines().find_map(|l| l.strip_prefix("Zxid: 0x"))?;
    u64::from_str_radix(zxid.trim(), 16).ok().map(|z| z >> 32)
}

#[test]
fn zookeeper_ensemble_elects_a_new_leader_and_takes_a_member_back() {
    let started = Instant::now();
    let mut ensemble = ZkEnsemble::start().unwrap_or_else(|e| panic!("{e}"));
    let up = started.elapsed();
    let ports: Vec<u16> = (0..3).map(|i| ensemble.member(i).port()).collect();
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "three client ports: {ports:?}");
    assert_eq!(
        ensemble.connect_string(),
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let leader = ensemble.leader_index().expect("a leader");
    let modes: Vec<Option<String>> = (0..3).map(|i| ensemble.mode(i)).collect();
    assert_eq!(
        modes
            .iter()
            .filter(|m| m.as_deref() == Some("follower"))
            .count(),
        2,
        "one leader, two followers: {modes:?}"
    );

    let killed = Instant::now();
    ensemble.member_mut(leader).kill();
    assert_eq!(
        ensemble.mode(leader),
        None,
        "a killed member does not answer"
    );
    let new_leader = ensemble
        .leader_index()
        .expect("the survivors elect a new leader");
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);
    let new_epoch = epoch(ports[new_leader]).expect("the new leader's zxid");

    let restarted = Instant::now();
    ensemble
        .member_mut(leader)
        .restart()
        .unwrap_or_else(|e| panic!("{e}"));
    let rejoined = restarted.elapsed();
    assert_eq!(ensemble.member(leader).port(), ports[leader], "same port");
    assert_eq!(ensemble.mode(leader).as_deref(), Some("follower"));
    assert_eq!(ensemble.leader_index(), Some(new_leader), "no new election");
    assert_eq!(
        epoch(ports[leader]),
        Some(new_epoch),
        "synced with the new leader"
    );
    // The leader counts it among its synced followers again (probes may miss when loaded).
    let synced = (0..50).any(|_| {
        let ok = mntr(ports[new_leader], "zk_synced_followers").as_deref() == Some("2");
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(synced, "{:?}", probe(ports[new_leader], b"mntr"));
    println!(
        "zookeeper ensemble: up in {up:?}, new leader in {elected:?}, rejoined in {rejoined:?}"
    );
}

#[test]
fn a_missing_binary_names_the_package() {
    let e = registry_test_support::HarnessError::Missing {
        what: "etcd".into(),
    }
    .to_string();
    assert!(
        e.contains("apt-get install") && e.contains("etcd-server"),
        "{e}"
    );
}
