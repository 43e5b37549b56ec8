//! The ZooKeeper backend under faults of a real server: killed and restarted without its
//! data (every session lost), paused beyond the session timeout; and a graceful shutdown
//! when some of its nodes are already gone or cannot be deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use registry_conformance::{default_options, svc};
use registry_core::{Registry, RegistryOptions, ServiceMetaInfo};
use zookeeper_client as zk;

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

/// Options for the shutdown tests: the longest session the test server allows (4 s) and a
/// heartbeat that does not come before the shutdown (it would put a deleted node back).
fn shutdown_options() -> RegistryOptions {
    default_options()
        .with_ttl(Duration::from_secs(4))
        .with_heartbeat_interval(Duration::from_millis(1500))
}

/// Registers `nodes` with a new registry; returns it with the nodes' znode paths.
async fn provider(
    zk: &registry_conformance::BackendUnderTest<registry_test_support::ZkServer>,
    options: &RegistryOptions,
    nodes: Vec<ServiceMetaInfo>,
) -> (Registry, Vec<String>) {
    let registry = zk.registry(options.clone()).await;
    let mut paths = Vec::new();
    for node in nodes {
        paths.push(options.keys.node_path(&node));
        registry.register(node).await.unwrap();
    }
    (registry, paths)
}

/// Which of `paths` exist, read with a fresh session.
async fn present(raw: &zk::Client, paths: &[String]) -> Vec<String> {
    let mut present = Vec::new();
    for p in paths {
        if raw.check_stat(p).await.unwrap().is_some() {
            present.push(p.clone());
        }
    }
    present
}

/// The service directory of a node path.
fn dir(path: &str) -> &str {
    path.rsplit_once('/').unwrap().0
}

/// Every permission on `path` but `removed` (deleting a child needs DELETE on its parent,
/// creating one CREATE).
async fn deny(raw: &zk::Client, path: &str, removed: zk::Permission) {
    let all = [
        zk::Permission::READ,
        zk::Permission::WRITE,
        zk::Permission::CREATE,
        zk::Permission::DELETE,
        zk::Permission::ADMIN,
    ];
    let kept = all
        .into_iter()
        .filter(|p| *p != removed)
        .fold(zk::Permission::NONE, |a, p| a | p);
    let acl = [zk::Acl::new(kept, zk::AuthId::anyone())];
    raw.set_acl(path, &acl, None).await.unwrap();
}

/// A graceful shutdown after one node was deleted behind the registry's back removes the
/// others at once, not when the session expires: the registry still holds its session (it is
/// not dropped), so a node still there after `shutdown` would stay for as long as it lives.
/// The service directory refuses creations first, so the provider's own watch cannot put the
/// deleted node back before the shutdown (it would within milliseconds). (`close` asks which
/// nodes its session still owns before its `multi`, so the gone node is not in it; the next
/// test makes the `multi` itself fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_with_a_node_already_gone_removes_the_others_at_once() {
    let zk = support::start();
    let options = shutdown_options();
    let (registry, paths) = provider(&zk, &options, (1..=3).map(svc).collect()).await;
    let raw = support::raw(&zk.connect_string()).await;
    assert_eq!(present(&raw, &paths).await, paths);
    deny(&raw, dir(&paths[1]), zk::Permission::CREATE).await;
    raw.delete(&paths[1], None).await.unwrap();

    let started = std::time::Instant::now();
    registry.shutdown().await.unwrap();
    let left = present(&raw, &paths).await;
    let checked = started.elapsed();
    println!("zookeeper shutdown with a node gone: checked {checked:?} after the shutdown began");
    assert!(left.is_empty(), "nodes left after the shutdown: {left:?}");
    assert!(
        checked < options.ttl,
        "checked within the session timeout ({checked:?}), so the session did not remove them"
    );
}

/// A `multi` is all-or-nothing: when the server refuses to delete one node (its service
/// directory does not allow deletes), the shutdown falls back to deleting node by node, so the
/// others go at once, and reports the one it could not remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_with_a_node_that_cannot_be_deleted_removes_the_others() {
    let zk = support::start();
    let options = shutdown_options();
    let nodes = ["svc-a", "svc-b", "svc-c"]
        .map(|name| ServiceMetaInfo::new(name, "127.0.0.1", 1))
        .to_vec();
    let (registry, paths) = provider(&zk, &options, nodes).await;
    let raw = support::raw(&zk.connect_string()).await;
    assert_eq!(present(&raw, &paths).await, paths);
    deny(&raw, dir(&paths[1]), zk::Permission::DELETE).await;

    let err = registry.shutdown().await.unwrap_err();
    let left = present(&raw, &paths).await;
    assert_eq!(
        left,
        [paths[1].clone()],
        "only the node that cannot be deleted is left (shutdown said: {err})"
    );
}
