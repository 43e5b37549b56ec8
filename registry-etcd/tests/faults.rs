//! The etcd backend under faults of a real server: killed and restarted empty, paused beyond
//! the TTL, junk under the root, authentication, and a 3-member cluster losing its leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use registry_core::conformance::{addresses, eventually, Recorder};
use registry_core::{
    BackendError, ConnectOptions, EmptyProtection, RegistryOptions, ServiceMetaInfo,
};
use registry_etcd::EtcdBackend;
use registry_test_support::{EtcdCluster, EtcdServer};

fn node(port: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new("svc", "127.0.0.1", port)
}

fn sorted(ports: &[u16]) -> Vec<String> {
    let mut a: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    a.sort();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_back_after_a_restart_with_wiped_data() {
    support::init_tracing();
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let options = support::fast_options();
    let (_, heartbeat) = (options.ttl, options.heartbeat_interval);
    let provider = support::registry(&etcd.endpoint(), options.clone()).await;
    // A watcher that applies everything (no empty protection) sees the loss and the return.
    let watcher = support::registry(
        &etcd.endpoint(),
        options.clone().with_empty_protection(EmptyProtection::Off),
    )
    .await;
    // A default consumer keeps serving its nodes throughout.
    let consumer = support::registry(&etcd.endpoint(), options.clone()).await;
    for port in [1, 2, 3] {
        provider.register(node(port)).await.unwrap();
    }
    let rec = Recorder::default();
    let _sub = watcher.subscribe("svc:1.0", rec.listener()).await.unwrap();
    eventually(Duration::from_secs(5), "watcher sees 3 nodes", || async {
        rec.current().len() == 3
    })
    .await;
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 3);

    etcd.kill();
    etcd.restart_wiped().unwrap_or_else(|e| panic!("{e}"));
    let restarted = Instant::now();
    let raw = support::raw(&etcd.endpoint()).await;
    assert!(
        raw.clone().get("/", None).await.unwrap().kvs().is_empty(),
        "data really wiped"
    );

    let fresh = support::registry(&etcd.endpoint(), options.clone()).await;
    let took = eventually(
        heartbeat + Duration::from_secs(2),
        "all nodes back in the store",
        || async {
            fresh
                .inspect(Some("svc:1.0"))
                .await
                .map(|n| n.len() == 3)
                .unwrap_or(false)
        },
    )
    .await;
    println!(
        "nodes back {:?} after the restart",
        restarted.elapsed().min(took)
    );
    // The watcher converges: whatever loss it saw, it saw undone (whether it relisted before
    // or after the provider put the nodes back is a race; both are correct).
    eventually(
        Duration::from_secs(5),
        "watcher converges to the 3 nodes",
        || async {
            let added: usize = rec.changes().iter().map(|c| c.diff.added.len()).sum();
            rec.current() == sorted(&[1, 2, 3]) && added == 3 + rec.removed().len()
        },
    )
    .await;
    // And it watches the new store (whose revisions restarted at 1): a new node arrives.
    provider.register(node(4)).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "watcher sees a node added after the restart",
        || async { rec.current() == sorted(&[1, 2, 3, 4]) },
    )
    .await;
    eventually(Duration::from_secs(5), "consumer converged", || async {
        consumer
            .cached("svc:1.0")
            .is_some_and(|n| n.len() == 4 && !n.is_stale())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_beyond_the_ttl_converges_to_the_truth() {
    support::init_tracing();
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let options = support::fast_options().with_timeout(Duration::from_secs(1));
    let provider = support::registry(&etcd.endpoint(), options.clone()).await;
    let consumer = support::registry(&etcd.endpoint(), options.clone()).await;
    for port in [1, 2] {
        provider.register(node(port)).await.unwrap();
    }
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);
    etcd.pause();
    tokio::time::sleep(options.ttl + Duration::from_secs(1)).await;
    // The cache keeps serving meanwhile.
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);
    etcd.resume();
    let fresh = support::registry(&etcd.endpoint(), options.clone()).await;
    eventually(
        Duration::from_secs(10),
        "nodes registered in the store",
        || async {
            fresh
                .inspect(Some("svc:1.0"))
                .await
                .map(|n| n.len() == 2)
                .unwrap_or(false)
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "consumer cache equals the store",
        || async {
            let truth: Vec<String> = {
                let mut t: Vec<String> = fresh
                    .inspect(Some("svc:1.0"))
                    .await
                    .unwrap()
                    .iter()
                    .map(|s| s.node.address())
                    .collect();
                t.sort();
                t
            };
            consumer.cached("svc:1.0").is_some_and(|n| !n.is_stale())
                && addresses(&consumer, "svc:1.0").await == truth
        },
    )
    .await;
    // Heartbeats keep going after the pause.
    tokio::time::sleep(options.ttl * 2).await;
    assert_eq!(fresh.inspect(Some("svc:1.0")).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_written_with_etcdctl_is_skipped() {
    support::init_tracing();
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let options = support::fast_options();
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
    let provider = support::registry(&etcd.endpoint(), options.clone()).await;
    let consumer = support::registry(&etcd.endpoint(), options).await;
    provider.register(node(1)).await.unwrap();
    assert_eq!(addresses(&consumer, "svc:1.0").await, sorted(&[1]));
    assert_eq!(consumer.inspect(None).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error_at_startup() {
    support::init_tracing();
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
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
    };
    let err = EtcdBackend::connect(&with("wrong")).await.unwrap_err();
    assert!(matches!(err, BackendError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("authentication"), "{err}");

    let backend = EtcdBackend::connect(&with("rootpw")).await.unwrap();
    let registry =
        registry_core::Registry::new(std::sync::Arc::new(backend), support::fast_options())
            .unwrap();
    registry.register(node(1)).await.unwrap();
    assert_eq!(addresses(&registry, "svc:1.0").await, sorted(&[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_loses_its_leader_keeps_registrations_heartbeats_and_watches() {
    support::init_tracing();
    let mut cluster = EtcdCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoints = cluster.endpoints();
    let options: RegistryOptions = support::fast_options();
    let provider = support::registry(&endpoints, options.clone()).await;
    let watcher = support::registry(&endpoints, options.clone()).await;
    provider.register(node(1)).await.unwrap();
    provider.register(node(2)).await.unwrap();
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
    let fresh = support::registry(&survivors, options.clone()).await;
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
    provider.register(node(3)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "watcher sees the node added after the kill",
        || async { rec.current() == sorted(&[1, 2, 3]) },
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
