//! A client that watches what it registers does not read its own nodes back: one request per
//! registration, counted by the server (`mntr`), and every watcher, its own and another
//! client's, still holds the very values written. It deletes a node it wrote in one request
//! too, and still leaves alone a node another session holds at that path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use registry_conformance::{default_options, eventually, svc, BackendUnderTest};
use registry_core::{RegistrationState, Registry, ServiceMetaInfo};
use registry_test_support::{probe, ZkServer};
use zookeeper_client as zk;

const NODES: u16 = 50;

/// Requests the server has received so far (`zk_packets_received` of `mntr`).
fn packets_received(port: u16) -> u64 {
    let answer = probe(port, b"mntr").expect("mntr answers");
    answer
        .lines()
        .find_map(|l| l.strip_prefix("zk_packets_received"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no zk_packets_received in {answer}"))
}

/// Asserts that `requests` are fewer than `per_one` for each of `done` operations (`what`).
fn fewer_than(requests: u64, per_one: f64, done: u16, what: &str) {
    println!("{requests} requests for {done} {what}");
    assert!(
        (requests as f64) < per_one * f64::from(done),
        "{requests} requests for {done} {what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_registrations_are_not_read_back() {
    let zk = support::start();
    let port = zk.port();
    let options = default_options();
    let provider = zk.registry(options.clone()).await;
    let other = zk.registry(options).await;
    // Both watch the service before the registrations.
    provider.register(svc(1)).await.unwrap();
    let key = svc(1).service_key();
    eventually(
        Duration::from_secs(5),
        "the other sees the first node",
        || async { other.discover(&key).await.is_ok_and(|n| n.len() == 1) },
    )
    .await;
    let before = packets_received(port);
    for p in 2..=NODES {
        provider
            .register(svc(p).with_metadata("n", p.to_string()))
            .await
            .unwrap();
    }
    let all = usize::from(NODES);
    for (who, registry) in [("provider", &provider), ("other", &other)] {
        // (`discover`: the provider's own watch builds its served list for a first reader.)
        eventually(Duration::from_secs(10), who, || async {
            registry.discover(&key).await.is_ok_and(|n| n.len() == all)
        })
        .await;
        let nodes = registry.cached(&key).unwrap();
        for node in nodes.iter().filter(|n| n.service_port > 1) {
            let expected = node.service_port.to_string();
            assert_eq!(node.metadata.get("n"), Some(&expected), "{who}: {node:?}");
        }
    }
    // Each registration: one create by the provider, one read by the other client's watch.
    // Reading its own nodes back would add one more each.
    fewer_than(
        packets_received(port) - before,
        2.5,
        NODES - 1,
        "registrations",
    );
    provider.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_nodes_are_deleted_in_one_request() {
    let zk = support::start();
    let port = zk.port();
    let provider = zk.registry(default_options()).await;
    for p in 1..=NODES {
        provider.register(svc(p)).await.unwrap();
    }
    let key = svc(1).service_key();
    let all = usize::from(NODES);
    // (The provider's own watch of the service: it reads none of its own nodes back.)
    eventually(Duration::from_secs(10), "every node seen", || async {
        provider.discover(&key).await.is_ok_and(|n| n.len() == all)
    })
    .await;
    let before = packets_received(port);
    // One node stays: the list never empties (empty protection is not what is tested).
    for p in 2..=NODES {
        provider.unregister(&svc(p)).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "only the first node left",
        || async { provider.discover(&key).await.is_ok_and(|n| n.len() == 1) },
    )
    .await;
    // One versioned delete each; reading each node's owner first would double it.
    fewer_than(
        packets_received(port) - before,
        1.5,
        NODES - 1,
        "deregistrations",
    );
    provider.shutdown().await.unwrap();
}

/// The owner of `node` (its znode path), `None` when there is none.
async fn owner(raw: &zk::Client, node: &str) -> Option<i64> {
    raw.check_stat(node)
        .await
        .unwrap()
        .map(|stat| stat.ephemeral_owner)
}

/// A provider holding `svc(1)` and `svc(2)` (one node stays when the other goes), the second
/// as registered and its znode path, and another plain session.
async fn provider_and_stranger(
    zk: &BackendUnderTest<ZkServer>,
) -> (Registry, ServiceMetaInfo, String, zk::Client) {
    let options = default_options();
    let provider = zk.registry(options.clone()).await;
    provider.register(svc(1)).await.unwrap();
    let node = provider.register(svc(2)).await.unwrap();
    let path = options.keys.node_path(&svc(2));
    let stranger = support::raw(&zk.connect_string()).await;
    (provider, node, path, stranger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_still_held_but_written_by_someone_else_is_deleted() {
    let zk = support::start();
    let (provider, _, node, raw) = provider_and_stranger(&zk).await;
    let held_by = owner(&raw, &node).await.expect("registered");
    // Another session rewrites the data (its version moves on); the node is still the
    // provider's ephemeral node, so the provider's delete must still remove it.
    raw.set_data(&node, b"not a node", None).await.unwrap();
    provider.unregister(&svc(2)).await.unwrap();
    assert_eq!(owner(&raw, &node).await, None, "held by {held_by:#x}");
    provider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_another_session_took_after_ours_was_deleted_is_left_alone() {
    let zk = support::start();
    let (provider, node, path, taker) = provider_and_stranger(&zk).await;
    // Another session deletes the provider's node and creates its own at that path, at the
    // version the provider's own write left (0), at once (one `multi`: the provider's repair
    // cannot come in between).
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    let mut take = taker.new_multi_writer();
    take.add_delete(&path, None).unwrap();
    take.add_create(&path, b"{}", &ephemeral).unwrap();
    take.commit().await.unwrap();
    let taken = taker.check_stat(&path).await.unwrap().expect("taken");
    assert_eq!(
        (taken.ephemeral_owner, taken.version),
        (taker.session_id().0, 0)
    );
    // The provider hears of it: its repair finds the node held.
    eventually(Duration::from_secs(10), "the provider repairs", || async {
        provider.registration_state(&node) == Some(RegistrationState::Repairing)
    })
    .await;
    provider.unregister(&svc(2)).await.unwrap();
    assert_eq!(
        owner(&taker, &path).await,
        Some(taker.session_id().0),
        "the other session's node was deleted"
    );
    provider.shutdown().await.unwrap();
}
