//! The etcd backend under faults of a real server: killed and restarted empty, paused beyond
//! the TTL, junk under the root, authentication, and a 3-member cluster losing its leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use registry_conformance::{
    addresses, default_options, eventually, init_tracing, restart_without_data, svc, svc_addresses,
    Recorder,
};
use registry_core::{BackendError, ConnectOptions, RegistryOptions};
use registry_etcd::EtcdBackend;
use registry_test_support::EtcdCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_back_after_a_restart_with_wiped_data() {
    let mut etcd = support::start();
    let target = etcd.target().clone();
    let options = default_options();
    let back_within = options.heartbeat_interval + Duration::from_secs(2);
    restart_without_data(
        &target,
        &mut |fault| {
            fault.inflict(&mut etcd);
            let keys = etcd.etcdctl(&["get", "--prefix", "/", "--keys-only"]);
            assert!(keys.stdout.is_empty(), "data really wiped");
        },
        options,
        back_within,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_beyond_the_ttl_converges_to_the_truth() {
    let mut etcd = support::start();
    etcd.pause_beyond_ttl(
        default_options().with_timeout(Duration::from_secs(1)),
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_written_with_etcdctl_is_skipped() {
    let etcd = support::start();
    let options = default_options();
    let root = options.keys.root().to_owned();
    for (key, value) in [
        (format!("{root}svc:1.0/127.0.0.1:9"), "not json"),
        (
            format!("{root}svc:1.0/127.0.0.1:8"),
            r#"{"serviceName":"svc"}"#,
        ),
        (format!("{root}svc:1.0"), "a key without an address"),
    ] {
        let out = etcd.etcdctl(&["put", &key, value]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let provider = etcd.registry(options.clone()).await;
    let consumer = etcd.registry(options).await;
    provider.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&consumer, "svc:1.0").await, svc_addresses(&[1]));
    assert_eq!(consumer.inspect(None).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error_at_startup() {
    let etcd = support::start();
    for args in [
        vec!["user", "add", "root", "--new-user-password=rootpw"],
        vec!["auth", "enable"],
    ] {
        let out = etcd.etcdctl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let with = |password: &str| ConnectOptions {
        address: etcd.endpoint(),
        username: Some("root".into()),
        password: Some(password.into()),
        timeout: Duration::from_secs(3),
        ttl: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let err = EtcdBackend::connect(&with("wrong")).await.unwrap_err();
    assert!(matches!(err, BackendError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("authentication"), "{err}");

    let backend = EtcdBackend::connect(&with("rootpw")).await.unwrap();
    let registry =
        registry_core::Registry::new(std::sync::Arc::new(backend), default_options()).unwrap();
    registry.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&registry, "svc:1.0").await, svc_addresses(&[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_loses_its_leader_keeps_registrations_heartbeats_and_watches() {
    init_tracing();
    let mut cluster = EtcdCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let cluster_target = support::target(&cluster.endpoints());
    let options: RegistryOptions = default_options();
    let provider = cluster_target.registry(options.clone()).await;
    let watcher = cluster_target.registry(options.clone()).await;
    provider.register(svc(1)).await.unwrap();
    provider.register(svc(2)).await.unwrap();
    let rec = Recorder::default();
    let _sub = watcher.subscribe("svc:1.0", rec.listener()).await.unwrap();
    eventually(Duration::from_secs(5), "watcher sees both", || async {
        rec.current().len() == 2
    })
    .await;

    let leader = cluster.leader_index().expect("a leader");
    cluster.member_mut(leader).kill();
    let survivors: String = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.member(i).endpoint())
        .collect::<Vec<_>>()
        .join(",");

    // Registrations outlive two TTLs: the heartbeats reach the survivors.
    tokio::time::sleep(options.ttl * 2 + Duration::from_millis(500)).await;
    let fresh = support::target(&survivors).registry(options.clone()).await;
    assert_eq!(
        fresh.inspect(Some("svc:1.0")).await.unwrap().len(),
        2,
        "nodes kept alive through the leader loss"
    );
    assert!(
        rec.removed().is_empty(),
        "watcher saw no removal: {:?}",
        rec.changes()
    );

    // The watcher keeps receiving changes.
    provider.register(svc(3)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "watcher sees the node added after the kill",
        || async { rec.current() == svc_addresses(&[1, 2, 3]) },
    )
    .await;
    provider.shutdown().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "watcher sees the graceful removal",
        || async { rec.current().is_empty() },
    )
    .await;
}

/// Each heartbeat reads the keys bound to the lease: a node deleted behind our back is
/// reported missing at the next beat, whether or not this process watches its service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_reports_a_node_deleted_behind_our_back() {
    use registry_core::Liveness;
    let etcd = support::start();
    let options = default_options();
    let backend = etcd.target().backend(&options).await;
    let keys: Vec<String> = (1..=3)
        .map(|i| format!("{}svc:1.0/127.0.0.1:{i}", options.keys.root()))
        .collect();
    for key in &keys {
        backend.put(key, b"{}", options.ttl).await.unwrap();
    }
    assert_eq!(
        backend.keep_alive(&keys, options.ttl).await.unwrap(),
        Liveness::Alive { missing: vec![] }
    );
    let mut raw = support::raw(&etcd.endpoint()).await;
    raw.delete(keys[1].as_str(), None).await.unwrap();
    assert_eq!(
        backend.keep_alive(&keys, options.ttl).await.unwrap(),
        Liveness::Alive {
            missing: vec![keys[1].clone()]
        }
    );
}

/// The reported case: one process registers 200 nodes of one service as fast as it can, then
/// one is deleted with etcdctl: it is back within about a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_200_nodes_deleted_behind_our_back_comes_back() {
    let etcd = support::start();
    let options = default_options();
    let provider = etcd.registry(options.clone()).await;
    let registered =
        futures::future::join_all((0..200).map(|i| provider.register(svc(10_000 + i)))).await;
    assert!(registered.iter().all(Result::is_ok));
    tokio::time::sleep(support::SETTLE).await;
    let victim = format!("{}svc:1.0/127.0.0.1:10007", options.keys.root());
    let out = etcd.etcdctl(&["del", &victim]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let inspector = etcd.registry(options.clone()).await;
    eventually(
        options.heartbeat_interval * 2 + Duration::from_secs(3),
        "the deleted node is back",
        || async {
            inspector
                .inspect(Some("svc:1.0"))
                .await
                .is_ok_and(|n| n.iter().any(|s| s.node.service_port == 10_007) && n.len() == 200)
        },
    )
    .await;
}

/// etcd leases count whole seconds: a shorter TTL is refused at connect time, with the key.
#[tokio::test]
async fn a_ttl_below_one_second_is_a_config_error() {
    let etcd = support::start();
    let options = ConnectOptions {
        address: etcd.endpoint(),
        ttl: Duration::from_millis(1),
        ..ConnectOptions::default()
    };
    let err = EtcdBackend::connect(&options).await.unwrap_err();
    assert!(matches!(err, BackendError::Config { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("rpc.registryConfig.ttl must be at least 1s"),
        "{err}"
    );
}

/// Several endpoints, the first one hung (SIGSTOP: it takes connections and never answers):
/// a client starts, registers and keeps its nodes alive through the others, each request
/// leaving the hung member within a quarter of the TTL, long before a lease could run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_first_endpoint_is_left_for_the_next_within_a_fraction_of_the_ttl() {
    init_tracing();
    let mut cluster = EtcdCluster::start().unwrap_or_else(|e| panic!("{e}"));
    // The hung member must not be the leader, or the survivors first hold an election.
    let hung = (0..3).find(|i| Some(*i) != cluster.leader_index()).unwrap();
    let ordered: String = std::iter::once(hung)
        .chain((0..3).filter(|i| *i != hung))
        .map(|i| cluster.member(i).endpoint())
        .collect::<Vec<_>>()
        .join(",");
    cluster.member_mut(hung).pause();
    // The request timeout is longer than the TTL: only the per-member limit saves the lease.
    let options = default_options().with_timeout(Duration::from_secs(10));
    let started = std::time::Instant::now();
    let provider = support::target(&ordered).registry(options.clone()).await;
    provider.health().await.unwrap();
    provider.register(svc(1)).await.unwrap();
    assert!(
        started.elapsed() < options.ttl,
        "start, health and register took {:?}",
        started.elapsed()
    );
    tokio::time::sleep(options.ttl * 3).await;
    let inspector = support::target(&ordered).registry(options.clone()).await;
    assert_eq!(
        addresses(&inspector, "svc:1.0").await,
        svc_addresses(&[1]),
        "the node outlived three TTLs with its first endpoint hung"
    );
    cluster.member_mut(hung).resume();
}
