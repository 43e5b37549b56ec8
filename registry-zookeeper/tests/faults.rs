//! The ZooKeeper backend under faults of a real server: killed and restarted without its
//! data (every session lost), and paused beyond the session timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use registry_core::conformance::{addresses, eventually, Recorder};
use registry_core::{EmptyProtection, ServiceMetaInfo};
use registry_test_support::ZkServer;

fn node(port: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new("svc", "127.0.0.1", port)
}

fn sorted(ports: &[u16]) -> Vec<String> {
    let mut a: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    a.sort();
    a
}

fn server() -> ZkServer {
    ZkServer::start_with_tick(200).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_back_after_a_restart_without_data() {
    support::init_tracing();
    let mut zk = server();
    let address = zk.connect_string();
    let options = registry_core::conformance::options(&Timing);
    let heartbeat = options.heartbeat_interval;
    let provider = support::registry(&address, options.clone()).await;
    let watcher = support::registry(
        &address,
        options.clone().with_empty_protection(EmptyProtection::Off),
    )
    .await;
    let consumer = support::registry(&address, options.clone()).await;
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

    zk.kill();
    zk.restart_wiped().unwrap_or_else(|e| panic!("{e}"));
    let restarted = Instant::now();
    let fresh = support::registry(&address, options.clone()).await;
    let took = eventually(
        options.ttl + heartbeat + Duration::from_secs(3),
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
    eventually(
        Duration::from_secs(10),
        "watcher converges to the 3 nodes",
        || async { rec.current() == sorted(&[1, 2, 3]) },
    )
    .await;
    provider.register(node(4)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "watcher sees a node added after the restart",
        || async { rec.current() == sorted(&[1, 2, 3, 4]) },
    )
    .await;
    eventually(Duration::from_secs(10), "consumer converged", || async {
        consumer
            .cached("svc:1.0")
            .is_some_and(|n| n.len() == 4 && !n.is_stale())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_beyond_the_session_timeout_converges_to_the_truth() {
    support::init_tracing();
    let mut zk = server();
    let address = zk.connect_string();
    let options = registry_core::conformance::options(&Timing);
    let provider = support::registry(&address, options.clone()).await;
    let consumer = support::registry(&address, options.clone()).await;
    provider.register(node(1)).await.unwrap();
    provider.register(node(2)).await.unwrap();
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);

    zk.pause();
    tokio::time::sleep(options.ttl + options.heartbeat_interval * 2).await;
    assert_eq!(
        addresses(&consumer, "svc:1.0").await.len(),
        2,
        "cache serves"
    );
    zk.resume();

    let fresh = support::registry(&address, options.clone()).await;
    eventually(
        Duration::from_secs(15),
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
        Duration::from_secs(15),
        "consumer cache equals the store",
        || async {
            consumer.cached("svc:1.0").is_some_and(|n| !n.is_stale())
                && addresses(&consumer, "svc:1.0").await == sorted(&[1, 2])
        },
    )
    .await;
    tokio::time::sleep(options.ttl * 2).await;
    assert_eq!(fresh.inspect(Some("svc:1.0")).await.unwrap().len(), 2);
}

/// The conformance timing (TTL 2 s, heartbeat 500 ms).
struct Timing;

#[async_trait::async_trait]
impl registry_core::conformance::Harness for Timing {
    async fn client(&self, _: registry_core::RegistryOptions) -> registry_core::Registry {
        unreachable!("only used for its timing")
    }
    async fn delete_raw(&self, _: &str) {}
    async fn put_raw(&self, _: &str, _: &[u8]) {}
}
