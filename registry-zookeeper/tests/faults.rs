//! The ZooKeeper backend under faults of a real server: killed and restarted without its
//! data (every session lost), and paused beyond the session timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use registry_conformance::default_options;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_back_after_a_restart_without_data() {
    let mut zk = support::start();
    let options = default_options();
    // The old sessions must expire first (a session timeout), then one heartbeat.
    let back_within = options.ttl + options.heartbeat_interval + Duration::from_secs(3);
    zk.restart_without_data(options, back_within).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_beyond_the_session_timeout_converges_to_the_truth() {
    let mut zk = support::start();
    zk.pause_beyond_ttl(default_options(), Duration::from_secs(15))
        .await;
}

/// A chroot that does not exist would fail every later request while `health` passed: it is
/// a configuration error at start, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chroot_is_a_config_error_at_start() {
    use registry_core::{BackendError, ConnectOptions};
    let zk = support::start();
    let options = ConnectOptions {
        address: format!("{}/no/such/chroot", zk.connect_string()),
        timeout: Duration::from_secs(5),
        ttl: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let err = registry_zookeeper::ZkBackend::connect(&options)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Config { .. }), "{err}");
    assert!(err.to_string().contains("chroot"), "{err}");
}
