//! `RegistryDiscover` on a real registry (the embedded memory store, on Tokio's paused clock):
//! the changes it yields for registrations, deregistrations, updates, outages and relists, and
//! a tower p2c balancer fed by it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
use registry_tower::{Change, MakeNodeService, RegistryDiscover};
use tower::balance::p2c::Balance;
use tower::load::Constant;
use tower::{service_fn, Service as _, ServiceExt as _};

const KEY: &str = "echo:1.0";

fn registry(store: &Arc<MemoryStore>) -> Registry {
    Registry::new(
        Arc::new(MemoryBackend::new(store.clone())),
        RegistryOptions::default().with_relist_cooldown(Duration::from_millis(100)),
    )
    .unwrap()
}

fn node(port: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new("echo", "127.0.0.1", port)
}

/// A change as plain data: `+address` (with the registration's weight) or `-address`.
fn show(change: Change<String, (String, u32)>) -> String {
    match change {
        Change::Insert(key, (address, weight)) => {
            assert_eq!(key, address);
            format!("+{address}/{weight}")
        }
        Change::Remove(key) => format!("-{key}"),
    }
}

type Discover = RegistryDiscover<fn(&ServiceMetaInfo) -> (String, u32)>;

fn discover(registry: &Registry) -> Discover {
    fn make(node: &ServiceMetaInfo) -> (String, u32) {
        (node.address(), node.weight)
    }
    RegistryDiscover::new(registry.clone(), KEY, make as fn(&ServiceMetaInfo) -> _)
}

/// The next `n` changes.
async fn next(discover: &mut Discover, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let change = tokio::time::timeout(Duration::from_secs(30), discover.next())
            .await
            .expect("a change within 30 s")
            .expect("the stream does not end")
            .unwrap();
        out.push(show(change));
    }
    out
}

/// Asserts that nothing comes for a while (the time is Tokio's paused clock).
async fn quiet(discover: &mut Discover) {
    if let Ok(item) = tokio::time::timeout(Duration::from_secs(20), discover.next()).await {
        panic!(
            "expected no change, got {:?}",
            item.map(|r| show(r.unwrap()))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn registrations_become_inserts_and_removes() {
    let store = MemoryStore::new();
    let provider = registry(&store);
    let consumer = registry(&store);
    provider.register(node(1)).await.unwrap();
    provider.register(node(2)).await.unwrap();

    let mut d = discover(&consumer);
    let mut first = next(&mut d, 2).await;
    first.sort();
    assert_eq!(
        first,
        ["+127.0.0.1:1/1", "+127.0.0.1:2/1"],
        "first delivery: every node"
    );

    provider.register(node(3)).await.unwrap();
    assert_eq!(next(&mut d, 1).await, ["+127.0.0.1:3/1"]);
    provider.unregister(&node(1)).await.unwrap();
    assert_eq!(next(&mut d, 1).await, ["-127.0.0.1:1"]);

    // A new weight: the service depends on it (a closure depends on everything): rebuilt.
    provider.register(node(2).with_weight(5)).await.unwrap();
    assert_eq!(next(&mut d, 2).await, ["-127.0.0.1:2", "+127.0.0.1:2/5"]);
    // The same registration again (a new registration time only): nothing.
    provider.register(node(2).with_weight(5)).await.unwrap();
    quiet(&mut d).await;
    let mut inserted: Vec<&str> = d.inserted().collect();
    inserted.sort_unstable();
    assert_eq!(inserted, ["127.0.0.1:2", "127.0.0.1:3"]);

    provider.shutdown().await.unwrap();
    let mut last = next(&mut d, 2).await;
    last.sort();
    assert_eq!(last, ["-127.0.0.1:2", "-127.0.0.1:3"]);
    consumer.shutdown().await.unwrap();
    assert!(d.next().await.is_none(), "ends with the registry");
}

/// A service that depends on the `zone` metadata only, and refuses nodes without one.
struct ZoneOnly;

impl MakeNodeService for ZoneOnly {
    type Service = String;
    fn make(&self, node: &ServiceMetaInfo) -> Option<String> {
        let zone = node.metadata.get("zone")?;
        Some(format!("{}@{zone}", node.address()))
    }
    fn must_rebuild(&self, old: &ServiceMetaInfo, new: &ServiceMetaInfo) -> bool {
        old.metadata.get("zone") != new.metadata.get("zone")
    }
}

#[tokio::test(start_paused = true)]
async fn a_disabled_node_is_removed_and_comes_back_when_enabled() {
    let store = MemoryStore::new();
    let provider = registry(&store);
    let consumer = registry(&store);
    let admin = registry(&store);
    provider.register(node(1)).await.unwrap();
    provider.register(node(2)).await.unwrap();
    let mut d = discover(&consumer);
    assert_eq!(next(&mut d, 2).await.len(), 2);
    admin
        .set_override(KEY, "127.0.0.1:1", |o| o.enabled = Some(false))
        .await
        .unwrap();
    assert_eq!(next(&mut d, 1).await, ["-127.0.0.1:1"]);
    admin
        .set_override(KEY, "127.0.0.1:1", |o| o.enabled = None)
        .await
        .unwrap();
    assert_eq!(next(&mut d, 1).await, ["+127.0.0.1:1/1"]);
    provider.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_custom_maker_rebuilds_only_on_what_it_depends_on_and_may_decline() {
    let store = MemoryStore::new();
    let provider = registry(&store);
    let consumer = registry(&store);
    provider.register(node(1)).await.unwrap(); // no zone: declined
    provider
        .register(node(2).with_metadata("zone", "a"))
        .await
        .unwrap();
    let mut d = RegistryDiscover::new(consumer.clone(), KEY, ZoneOnly);
    let mut changes = Vec::new();
    let mut collect = |change: Change<String, String>| match change {
        Change::Insert(_, s) => changes.push(format!("+{s}")),
        Change::Remove(k) => changes.push(format!("-{k}")),
    };
    collect(d.next().await.unwrap().unwrap());
    // The weight changes: not what the service depends on, nothing.
    provider
        .register(node(2).with_metadata("zone", "a").with_weight(9))
        .await
        .unwrap();
    // The declined node gets a zone: inserted now.
    provider
        .register(node(1).with_metadata("zone", "b"))
        .await
        .unwrap();
    collect(d.next().await.unwrap().unwrap());
    // The zone changes: rebuilt.
    provider
        .register(node(2).with_metadata("zone", "c").with_weight(9))
        .await
        .unwrap();
    collect(d.next().await.unwrap().unwrap());
    collect(d.next().await.unwrap().unwrap());
    // Loses its zone: removed, declined.
    provider.register(node(1)).await.unwrap();
    collect(d.next().await.unwrap().unwrap());
    assert_eq!(
        changes,
        [
            "+127.0.0.1:2@a",
            "+127.0.0.1:1@b",
            "-127.0.0.1:2",
            "+127.0.0.1:2@c",
            "-127.0.0.1:1"
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(20), d.next())
            .await
            .is_err(),
        "nothing more"
    );
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_outage_yields_nothing_and_a_relist_yields_only_the_differences() {
    let store = MemoryStore::new();
    let consumer = registry(&store);
    // Nodes written without a lease (they never expire), so that only the store's content
    // changes during the outage.
    let put = |port: u16| {
        let n = node(port);
        store
            .put(
                &format!("/rpc/{}", n.node_key()),
                &serde_json::to_vec(&n).unwrap(),
                None,
            )
            .unwrap()
    };
    put(1);
    put(2);
    let mut d = discover(&consumer);
    let mut first = next(&mut d, 2).await;
    first.sort();
    assert_eq!(first, ["+127.0.0.1:1/1", "+127.0.0.1:2/1"]);

    // Down: the watch breaks; nothing is yielded, the stream does not end or fail.
    store.set_down(true);
    quiet(&mut d).await;
    // Behind the watch's back: 2 goes, 3 comes, and the history is compacted away, so the
    // watcher must relist when the store is back.
    store.delete("/rpc/echo:1.0/127.0.0.1:2");
    let revision = put(3);
    store.compact(revision + 1);
    store.set_down(false);
    let mut relisted = next(&mut d, 2).await;
    relisted.sort();
    assert_eq!(
        relisted,
        ["+127.0.0.1:3/1", "-127.0.0.1:2"],
        "only the differences"
    );
    quiet(&mut d).await;

    // Everything gone during an outage: the relist comes back empty, and the default empty
    // protection keeps the last nodes, so the balancer keeps its set.
    store.set_down(true);
    let mut last = 0;
    for port in [1, 3] {
        last = store
            .delete(&format!("/rpc/echo:1.0/127.0.0.1:{port}"))
            .unwrap();
    }
    store.compact(last + 1);
    store.set_down(false);
    quiet(&mut d).await;
    let mut inserted: Vec<&str> = d.inserted().collect();
    inserted.sort_unstable();
    assert_eq!(inserted, ["127.0.0.1:1", "127.0.0.1:3"]);
    // A node shows up again: the store is the truth again, the others go.
    put(4);
    let mut back = next(&mut d, 3).await;
    back.sort();
    assert_eq!(back, ["+127.0.0.1:4/1", "-127.0.0.1:1", "-127.0.0.1:3"]);
    consumer.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_first_listing_is_retried_while_the_store_is_down() {
    let store = MemoryStore::new();
    let provider = registry(&store);
    let consumer = registry(&store);
    provider.register(node(1)).await.unwrap();
    store.set_down(true);
    let mut d = discover(&consumer);
    quiet(&mut d).await;
    store.set_down(false);
    assert_eq!(next(&mut d, 1).await, ["+127.0.0.1:1/1"]);
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2c_balancer_follows_the_registry() {
    let store = MemoryStore::new();
    let provider = registry(&store);
    let consumer = registry(&store);
    provider.register(node(1)).await.unwrap();
    provider.register(node(2)).await.unwrap();

    let discover = RegistryDiscover::new(consumer.clone(), KEY, |node: &ServiceMetaInfo| {
        let address = node.address();
        Constant::new(
            service_fn(move |()| std::future::ready(Ok::<_, Infallible>(address.clone()))),
            0,
        )
    });
    let mut balance = Balance::new(discover);
    let served = calls(&mut balance, 200).await;
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["127.0.0.1:1", "127.0.0.1:2"],
        "both nodes serve: {served:?}"
    );

    // Deregistered: once the consumer's cache shows it, the next `ready` reads the discover
    // stream first, and the balancer never picks the node again.
    provider.unregister(&node(1)).await.unwrap();
    registry_wait(&consumer, 1).await;
    let served = calls(&mut balance, 200).await;
    assert_eq!(served.keys().collect::<Vec<_>>(), ["127.0.0.1:2"]);

    provider.register(node(3)).await.unwrap();
    registry_wait(&consumer, 2).await;
    let served = calls(&mut balance, 400).await;
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["127.0.0.1:2", "127.0.0.1:3"],
        "{served:?}"
    );
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

/// `n` calls through the balancer: how many each node served.
async fn calls<D>(balance: &mut Balance<D, ()>, n: usize) -> BTreeMap<String, usize>
where
    D: tower::discover::Discover + Unpin,
    D::Key: std::hash::Hash + Clone,
    D::Error: Into<tower::BoxError>,
    D::Service: tower::Service<(), Response = String> + tower::load::Load,
    <D::Service as tower::Service<()>>::Error: Into<tower::BoxError>,
    <D::Service as tower::load::Load>::Metric: std::fmt::Debug,
{
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let address = balance.ready().await.unwrap().call(()).await.unwrap();
        *served.entry(address).or_default() += 1;
    }
    served
}

/// Waits until the consumer's cache holds `n` nodes of the service.
async fn registry_wait(registry: &Registry, n: usize) {
    for _ in 0..500 {
        if registry.cached(KEY).is_some_and(|nodes| nodes.len() == n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cache never held {n} nodes");
}
