//! Cold start during an outage, as a user sees it: a consumer with
//! `rpc.registryConfig.snapshotDir` calls the provider once (the snapshot is written), etcd
//! goes down, and a fresh consumer process started meanwhile still calls the provider, from
//! the nodes the snapshot kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use registry_test_support::{free_port, EtcdServer};

#[test]
fn a_consumer_started_while_etcd_is_down_calls_from_its_snapshot() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    let port = free_port();
    std::fs::write(
        dir.path().join("rpc.toml"),
        format!(
            "[rpc]\nserverPort = {port}\n[rpc.registryConfig]\nregistry = \"etcd\"\naddress = \"{}\"\n\
             ttl = 3\nheartbeatInterval = 1\ntimeout = 1000\nsnapshotDir = \"{}\"\n",
            etcd.endpoint(),
            snapshots.display()
        ),
    )
    .unwrap();
    let mut provider = Command::new(env!("CARGO_BIN_EXE_provider"))
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let consumer = |calls: &str| {
        Command::new(env!("CARGO_BIN_EXE_consumer"))
            .args(["--calls", calls, "--interval-ms", "100"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // The provider may need a moment to register: the first consumer retries a few times.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = consumer("1");
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first consumer never got an answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        snapshots.join("UserService%3A1.0.json").is_file(),
        "snapshot written"
    );

    etcd.kill();
    let started = Instant::now();
    let out = consumer("2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the consumer started during the outage failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("getUser ->").count(), 2, "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let _ = provider.kill();
    let _ = provider.wait();
}
