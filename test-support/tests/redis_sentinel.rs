//! The Redis Sentinel setup against the real servers: a primary, its replica and three
//! Sentinels; the primary SIGKILLed, the replica promoted with the data, the old primary back
//! as a replica of the new one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use registry_test_support::{RedisSentinel, MASTER_NAME};

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn redis_sentinel_fails_over_and_the_old_primary_rejoins_as_a_replica() {
    let started = Instant::now();
    let mut setup = RedisSentinel::start().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "primary, replica and 3 Sentinels ready in {:?}",
        started.elapsed()
    );
    let address = setup.address();
    assert!(
        address.starts_with("redis+sentinel://127.0.0.1:") && address.ends_with("/mymaster"),
        "{address}"
    );
    assert_eq!(address.matches(',').count(), 2, "{address}");
    assert_eq!(setup.master_name(), MASTER_NAME);
    assert_eq!(setup.primary_index(), Some(0));
    assert_eq!(setup.node(0).role().as_deref(), Some("master"));
    assert_eq!(setup.node(1).role().as_deref(), Some("slave"));

    assert!(setup.node(0).command("SET k v").unwrap().starts_with("+OK"));
    eventually("the replica has the key", || {
        setup
            .node(1)
            .command("GET k")
            .is_some_and(|a| a.contains("\r\nv\r\n"))
    });
    assert!(
        setup
            .node(1)
            .command("SET x y")
            .unwrap()
            .starts_with("-READONLY"),
        "a replica refuses writes"
    );

    let killed_at = Instant::now();
    let killed = setup.kill_primary().unwrap();
    assert_eq!(killed, 0);
    assert!(setup.node(0).command("PING").is_none());
    let promoted = setup
        .wait_for_primary(Some(killed), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "replica promoted {:?} after the SIGKILL",
        killed_at.elapsed()
    );
    assert_eq!(promoted, 1);
    assert_eq!(setup.primary_index(), Some(1));
    assert!(
        setup
            .node(1)
            .command("GET k")
            .unwrap()
            .contains("\r\nv\r\n"),
        "data kept"
    );
    assert!(setup
        .node(1)
        .command("SET k2 v2")
        .unwrap()
        .starts_with("+OK"));

    setup
        .restart_as_replica(killed)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(setup.node(0).role().as_deref(), Some("slave"));
    eventually("the old primary has the new primary's writes", || {
        setup
            .node(0)
            .command("GET k2")
            .is_some_and(|a| a.contains("\r\nv2\r\n"))
    });
    assert_eq!(setup.primary_index(), Some(1));
}
