//! A client that watches what it registers does not read its own nodes back: one request per
//! registration, counted by the server (`mntr`), and every watcher, its own and another
//! client's, still holds the very values written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use registry_conformance::{default_options, eventually, svc};
use registry_test_support::probe;

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
    let requests = packets_received(port) - before;
    let registrations = u64::from(NODES - 1);
    // Each registration: one create by the provider, one read by the other client's watch.
    // Reading its own nodes back would add one more each.
    println!("{requests} requests for {registrations} registrations");
    assert!(
        requests < registrations * 5 / 2,
        "{requests} requests for {registrations} registrations"
    );
    provider.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}
