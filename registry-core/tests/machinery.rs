//! The shared machinery under faults, on the memory store (which can fail on demand): outages,
//! lost history, failed registrations, slow listeners, empty protection, eviction.
//!
//! Most tests run on Tokio's paused clock (`start_paused`): the memory store's leases and every
//! timer of the registry follow it, so a TTL passes in no real time and in the same order on
//! every run. Sleeps remain only where time passing is the point (leases running out, retries
//! failing, nothing happening for a while); everything else waits on something observable: the
//! store's open watches and listings served, the cache, a stream. The tests with a listener
//! that blocks its thread run on the real clock with several worker threads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;

use registry_conformance::{addresses, eventually, Recorder};
use registry_core::{
    EmptyProtection, KeySpace, MemoryBackend, MemoryStore, Registry, RegistryError,
    RegistryOptions, ServiceChange, ServiceMetaInfo,
};

const TTL: Duration = Duration::from_millis(600);
const BEAT: Duration = Duration::from_millis(150);

fn options() -> RegistryOptions {
    RegistryOptions::default()
        .with_ttl(TTL)
        .with_heartbeat_interval(BEAT)
        .with_timeout(Duration::from_secs(2))
        .with_retry(Duration::from_millis(20), Duration::from_millis(200))
        .with_relist_cooldown(Duration::from_millis(50))
}

fn client(store: &Arc<MemoryStore>, options: RegistryOptions) -> Registry {
    Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap()
}

fn node(port: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new("svc", "127.0.0.1", port)
}

fn raw_put(store: &MemoryStore, n: &ServiceMetaInfo) {
    let path = KeySpace::default().node_path(n);
    store
        .put(&path, &serde_json::to_vec(n).unwrap(), None)
        .unwrap();
}

/// Takes the store down once the clients watch it (`watching` registries watch one service
/// each: two watches apiece, the service's and the overrides tree's), and returns when every
/// client noticed: their watches broke (and do not reopen while the store is down), so what
/// the store does next reaches them only after the outage, as a resumed watch.
async fn outage(store: &MemoryStore, watching: usize) {
    eventually(Duration::from_secs(3), "every watch open", || async {
        store.watch_count() == watching * 2
    })
    .await;
    store.set_down(true);
    eventually(Duration::from_secs(3), "every watch broke", || async {
        store.watch_count() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn nodes_come_back_after_an_outage_longer_than_the_ttl() {
    let store = MemoryStore::new();
    let provider = client(&store, options());
    let consumer = client(
        &store,
        options().with_empty_protection(EmptyProtection::Off),
    );
    provider.register(node(1)).await.unwrap();
    let b = provider.register(node(2)).await.unwrap();
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);

    outage(&store, 2).await;
    // Unregistering during the outage fails to delete, but the node is no longer wanted.
    assert!(provider.unregister(&b).await.is_err());
    // The leases run out while the provider cannot reach the store (many failed retries).
    tokio::time::sleep(TTL * 4).await;
    assert!(
        store.list("/rpc/").entries.is_empty(),
        "leases expired during the outage"
    );
    store.set_down(false);

    eventually(
        BEAT * 4 + Duration::from_secs(2),
        "wanted node registered again",
        || async { addresses(&consumer, "svc:1.0").await == vec!["127.0.0.1:1".to_owned()] },
    )
    .await;
    // The node unregistered on purpose never comes back.
    tokio::time::sleep(BEAT * 4).await;
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        vec!["127.0.0.1:1".to_owned()]
    );
    let fresh = client(&store, options());
    assert_eq!(
        addresses(&fresh, "svc:1.0").await,
        vec!["127.0.0.1:1".to_owned()]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_register_is_retried_in_the_background() {
    let store = MemoryStore::new();
    let provider = client(&store, options());
    store.set_down(true);
    let err = provider.register(node(3)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Store { .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(provider.registered().len(), 1, "still wanted");
    // A few background retries fail meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.set_down(false);
    let consumer = client(&store, options());
    eventually(
        Duration::from_secs(3),
        "failed registration lands",
        || async { addresses(&consumer, "svc:1.0").await == vec!["127.0.0.1:3".to_owned()] },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn changes_made_while_the_watch_was_down_are_not_lost() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    raw_put(&store, &node(1));
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 1);
    outage(&store, 1).await;
    // Changes the consumer cannot see yet.
    raw_put(&store, &node(2));
    raw_put(&store, &node(3));
    store.delete(&KeySpace::default().node_path(&node(1)));
    // The cache keeps serving its last nodes meanwhile.
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        vec!["127.0.0.1:1".to_owned()]
    );
    store.set_down(false);
    eventually(
        Duration::from_secs(3),
        "resumed watch applies every change",
        || async {
            addresses(&consumer, "svc:1.0").await
                == vec!["127.0.0.1:2".to_owned(), "127.0.0.1:3".to_owned()]
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn compacted_history_leads_to_a_relist_that_misses_nothing() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    raw_put(&store, &node(1));
    let rec = Recorder::default();
    let _sub = consumer.subscribe("svc:1.0", rec.listener()).await.unwrap();
    outage(&store, 1).await;
    raw_put(&store, &node(2));
    store.delete(&KeySpace::default().node_path(&node(1)));
    store.compact(store.revision());
    store.set_down(false);
    eventually(
        Duration::from_secs(3),
        "relist swaps in the truth",
        || async { addresses(&consumer, "svc:1.0").await == vec!["127.0.0.1:2".to_owned()] },
    )
    .await;
    // Readers and listeners never saw an empty list on the way.
    assert!(
        rec.changes().iter().all(|c| !c.nodes.is_empty()),
        "{:?}",
        rec.changes()
    );
    // And the rewatch after the relist works: a later change arrives.
    raw_put(&store, &node(4));
    eventually(Duration::from_secs(3), "later change arrives", || async {
        addresses(&consumer, "svc:1.0").await.len() == 2
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn empty_protection_keeps_nodes_through_a_wiped_store() {
    let store = MemoryStore::new();
    let protected = client(&store, options());
    let unprotected = client(
        &store,
        options().with_empty_protection(EmptyProtection::Off),
    );
    raw_put(&store, &node(1));
    assert_eq!(addresses(&protected, "svc:1.0").await.len(), 1);
    assert_eq!(addresses(&unprotected, "svc:1.0").await.len(), 1);
    // The store loses everything while clients are cut off (a restart with a wiped data dir).
    outage(&store, 2).await;
    store.delete(&KeySpace::default().node_path(&node(1)));
    store.compact(store.revision());
    store.set_down(false);
    eventually(
        Duration::from_secs(3),
        "unprotected cache empties",
        || async { addresses(&unprotected, "svc:1.0").await.is_empty() },
    )
    .await;
    eventually(
        Duration::from_secs(3),
        "protected cache relisted",
        || async { protected.cached("svc:1.0").is_some_and(|n| n.is_stale()) },
    )
    .await;
    let nodes = protected.discover("svc:1.0").await.unwrap();
    assert_eq!(nodes.len(), 1, "kept the last known node");
    // The RPC layer finds the node dead: eviction still takes it out.
    protected.evict("svc:1.0", "127.0.0.1:1");
    let err = protected.discover("svc:1.0").await.unwrap_err();
    assert!(
        err.to_string().contains("no provider for service svc:1.0"),
        "{err}"
    );
    // A provider registering again ends the protection with the store's truth.
    raw_put(&store, &node(9));
    eventually(Duration::from_secs(3), "fresh node served", || async {
        match protected.discover("svc:1.0").await {
            Ok(n) => !n.is_stale() && n.len() == 1 && n[0].service_port == 9,
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn mass_expiry_seen_on_reconnect_is_protected() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    raw_put(&store, &node(1));
    raw_put(&store, &node(2));
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);
    outage(&store, 1).await;
    store.delete(&KeySpace::default().node_path(&node(1)));
    store.delete(&KeySpace::default().node_path(&node(2)));
    store.set_down(false);
    // The resumed watch replays both deletes; they are applied as a resync, so the list is kept.
    eventually(Duration::from_secs(3), "deletes applied", || async {
        consumer.cached("svc:1.0").is_some_and(|n| n.is_stale())
    })
    .await;
    let nodes = consumer.discover("svc:1.0").await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.is_stale());
}

#[tokio::test(start_paused = true)]
async fn graceful_removal_of_the_last_node_empties_the_list() {
    let store = MemoryStore::new();
    let provider = client(&store, options());
    let consumer = client(&store, options());
    let n = provider.register(node(1)).await.unwrap();
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 1);
    provider.unregister(&n).await.unwrap();
    eventually(
        Duration::from_secs(3),
        "default policy applies a live delete",
        || async {
            matches!(
                consumer.discover("svc:1.0").await,
                Err(RegistryError::NoProvider { .. })
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_listener_never_delays_the_cache_and_gets_a_resync() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    raw_put(&store, &node(1000));
    let seen: Arc<Mutex<Vec<ServiceChange>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), calls.clone());
    let _sub = consumer
        .subscribe("svc:1.0", move |change: &ServiceChange| {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            s.lock().unwrap().push(change.clone());
        })
        .await
        .unwrap();
    for port in 1..=30 {
        raw_put(&store, &node(port));
        // The cache follows each change at once, whatever the listener is doing.
        eventually(Duration::from_secs(2), "cache follows", || async {
            consumer
                .cached("svc:1.0")
                .is_some_and(|n| n.len() == 1 + port as usize)
        })
        .await;
    }
    eventually(
        Duration::from_secs(10),
        "listener catches up with the truth",
        || async {
            seen.lock()
                .unwrap()
                .last()
                .is_some_and(|c| c.nodes.len() == 31)
        },
    )
    .await;
    let changes = seen.lock().unwrap().clone();
    assert!(
        changes.len() < 31,
        "changes were folded, not queued: {}",
        changes.len()
    );
    assert!(
        changes.iter().skip(1).any(|c| c.resync),
        "a folded change is marked resync"
    );
    // Folded or not, the diffs add up to every node: nothing was silently dropped.
    let added: usize = changes.iter().map(|c| c.diff.added.len()).sum();
    assert_eq!(added, 31);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_listener_stays_subscribed() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let _sub = consumer
        .subscribe("svc:1.0", move |_: &ServiceChange| {
            c.fetch_add(1, Ordering::SeqCst);
            panic!("listener bug");
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(3), "first delivery", || async {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    raw_put(&store, &node(1));
    eventually(
        Duration::from_secs(3),
        "listener called again after panicking",
        || async { calls.load(Ordering::SeqCst) == 2 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listing_and_one_watch_per_service() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    raw_put(&store, &node(1));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = consumer.clone();
        tasks.push(tokio::spawn(async move {
            c.discover("svc:1.0").await.map(|n| n.len())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    assert_eq!(consumer.cached_services(), vec!["svc:1.0".to_owned()]);
    // Plus one listing and one watch of the overrides tree, once per registry.
    eventually(Duration::from_secs(3), "the watches are open", || async {
        store.watch_count() == 2
    })
    .await;
    assert_eq!(
        store.list_count(),
        2,
        "one listing of the service, one of the overrides"
    );
    assert_eq!(
        store.watch_count(),
        2,
        "one watch of the service, one of the overrides"
    );
    assert_eq!(
        consumer.discover("other:1.0").await.map(|n| n.len()).ok(),
        None
    );
    eventually(
        Duration::from_secs(3),
        "the second service's watch",
        || async { store.watch_count() == 3 },
    )
    .await;
    assert_eq!(
        store.list_count(),
        3,
        "a second service costs one listing, one watch"
    );
}

#[tokio::test(start_paused = true)]
async fn evicted_node_stays_out_until_registered_again() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    raw_put(&store, &node(1));
    raw_put(&store, &node(2));
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);
    let lists = store.list_count();
    consumer.evict("svc:1.0", "127.0.0.1:1");
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        vec!["127.0.0.1:2".to_owned()]
    );
    // The eviction asks for a relist; it happens (the store serves one more listing, and on
    // this single-threaded runtime the watcher applies it in the same step)...
    eventually(Duration::from_secs(3), "the eviction's relist", || async {
        store.list_count() > lists
    })
    .await;
    assert_eq!(store.list_count(), lists + 1, "one relist");
    // ... and still shows the node (its TTL has not run out): it stays out.
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        vec!["127.0.0.1:2".to_owned()]
    );
    // Registered anew (a restarted provider): back at once.
    raw_put(&store, &node(1).with_weight(3));
    eventually(
        Duration::from_secs(3),
        "re-registered node served",
        || async { addresses(&consumer, "svc:1.0").await.len() == 2 },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn bad_options_are_rejected_naming_the_option() {
    let err = Registry::new(
        Arc::new(MemoryBackend::new(MemoryStore::new())),
        RegistryOptions::default()
            .with_ttl(Duration::from_secs(10))
            .with_heartbeat_interval(Duration::from_secs(5)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("heartbeatInterval"), "{err}");
}

#[test]
fn creating_a_registry_outside_a_runtime_is_an_error() {
    let err = Registry::new(
        Arc::new(MemoryBackend::new(MemoryStore::new())),
        RegistryOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::NoRuntime));
}

#[tokio::test(start_paused = true)]
async fn inspect_and_subscribe_all_see_every_service_and_skip_junk() {
    let store = MemoryStore::new();
    let provider = client(&store, options());
    let tool = client(&store, options());
    provider.register(node(1)).await.unwrap();
    provider
        .register(ServiceMetaInfo::new("other", "127.0.0.1", 1))
        .await
        .unwrap();
    store.put("/rpc/svc:1.0/junk", b"junk", None).unwrap();
    let all = tool.inspect(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|s| s.ttl_remaining.is_some_and(|t| t <= TTL)));
    let one = tool.inspect(Some("other:1.0")).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].node.service_name, "other");

    let rec = Recorder::default();
    let _sub = tool.subscribe_all(rec.listener()).await.unwrap();
    eventually(Duration::from_secs(3), "both services listed", || async {
        rec.current().len() == 2
    })
    .await;
    // Same address, two services: distinct nodes in the diff.
    provider
        .register(ServiceMetaInfo::new("third", "127.0.0.1", 1))
        .await
        .unwrap();
    eventually(Duration::from_secs(3), "third service seen", || async {
        rec.current().len() == 3
    })
    .await;
    provider.shutdown().await.unwrap();
    eventually(Duration::from_secs(3), "all removed", || async {
        rec.removed().len() == 3
    })
    .await;
    assert!(
        tool.cached_services().is_empty(),
        "the root watch is not a service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listener_runs_after_shutdown_returned() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, f) = (started.clone(), finished.clone());
    let _sub = consumer
        .subscribe("svc:1.0", move |_: &ServiceChange| {
            s.fetch_add(1, Ordering::SeqCst);
            // A listener that takes its time: shutdown must wait for it.
            std::thread::sleep(Duration::from_millis(20));
            f.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    // Another client keeps changing the service, before, during and after the shutdown.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for port in 1.. {
                raw_put(&store, &node(port));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    eventually(
        Duration::from_secs(3),
        "listener called a few times",
        || async { finished.load(Ordering::SeqCst) >= 3 },
    )
    .await;
    consumer.shutdown().await.unwrap();
    let calls = started.load(Ordering::SeqCst);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        calls,
        "a call still running"
    );
    // Changes keep arriving; nobody is told any more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(started.load(Ordering::SeqCst), calls);
    writer.abort();
}

// ---- the stream API (paused time: every wait is on the stream itself or the cache) ----

fn ports(nodes: &[registry_core::Node]) -> Vec<u16> {
    let mut p: Vec<u16> = nodes.iter().map(|n| n.service_port).collect();
    p.sort_unstable();
    p
}

/// The next item, failing the test instead of hanging.
async fn next(changes: &mut registry_core::ServiceWatch) -> Option<ServiceChange> {
    tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("the stream answers")
}

#[tokio::test(start_paused = true)]
async fn a_watch_stream_yields_the_list_then_each_change_in_order() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    raw_put(&store, &node(1));
    let mut changes = consumer.watch("svc:1.0").await.unwrap();
    assert_eq!(changes.service_key(), "svc:1.0");

    let first = next(&mut changes).await.unwrap();
    assert!(first.resync, "the current list comes first, as a resync");
    assert_eq!(ports(&first.diff.added), [1]);
    assert_eq!(&*first.service_key, "svc:1.0");

    raw_put(&store, &node(2));
    let added = next(&mut changes).await.unwrap();
    assert_eq!(ports(&added.diff.added), [2]);
    assert!(added.diff.removed.is_empty() && !added.resync);
    assert_eq!(ports(&added.nodes), [1, 2]);

    store.delete(&KeySpace::default().node_path(&node(1)));
    let removed = next(&mut changes).await.unwrap();
    assert_eq!(ports(&removed.diff.removed), [1]);
    assert!(removed.diff.added.is_empty() && !removed.resync);
    assert_eq!(ports(&removed.nodes), [2]);

    raw_put(&store, &node(2).with_weight(5));
    let updated = next(&mut changes).await.unwrap();
    assert_eq!(ports(&updated.diff.updated), [2]);
    assert_eq!(updated.nodes[0].weight, 5);
}

#[tokio::test(start_paused = true)]
async fn a_watch_stream_not_polled_gets_one_folded_change() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    let mut changes = consumer.watch("svc:1.0").await.unwrap();
    assert!(next(&mut changes).await.unwrap().nodes.is_empty());
    // Five changes, each published on its own while nobody polls the stream.
    for port in 1..=5u16 {
        raw_put(&store, &node(port));
        eventually(Duration::from_secs(3), "cache follows", || async {
            consumer
                .cached("svc:1.0")
                .is_some_and(|n| n.len() == usize::from(port))
        })
        .await;
    }
    let folded = next(&mut changes).await.unwrap();
    assert!(
        folded.resync,
        "several changes folded into one are a resync"
    );
    assert_eq!(ports(&folded.diff.added), [1, 2, 3, 4, 5]);
    // Caught up: the next change is a plain one.
    store.delete(&KeySpace::default().node_path(&node(3)));
    let one = next(&mut changes).await.unwrap();
    assert!(!one.resync);
    assert_eq!(ports(&one.diff.removed), [3]);
}

#[tokio::test(start_paused = true)]
async fn a_watch_stream_ends_when_the_registry_shuts_down_or_is_dropped() {
    let store = MemoryStore::new();
    let consumer = client(&store, options());
    let mut changes = consumer.watch("svc:1.0").await.unwrap();
    next(&mut changes).await.unwrap();
    // A listener on the same service: streams and listeners share one cache entry.
    let rec = Recorder::default();
    let _sub = consumer.subscribe("svc:1.0", rec.listener()).await.unwrap();
    consumer.shutdown().await.unwrap();
    raw_put(&store, &node(1));
    assert!(next(&mut changes).await.is_none());
    assert!(next(&mut changes).await.is_none(), "stays ended");
    assert!(matches!(
        consumer.watch("svc:1.0").await,
        Err(RegistryError::Shutdown)
    ));

    let dropped = client(&store, options());
    let mut changes = dropped.watch_all().await.unwrap();
    assert_eq!(ports(&next(&mut changes).await.unwrap().nodes), [1]);
    drop(dropped);
    raw_put(&store, &node(2));
    assert!(next(&mut changes).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_watch_all_stream_sees_every_service() {
    let store = MemoryStore::new();
    let provider = client(&store, options());
    let tool = client(&store, options());
    provider.register(node(1)).await.unwrap();
    provider
        .register(ServiceMetaInfo::new("other", "127.0.0.1", 1))
        .await
        .unwrap();
    let mut all = tool.watch_all().await.unwrap();
    assert_eq!(all.service_key(), "");
    let first = next(&mut all).await.unwrap();
    assert_eq!(first.nodes.len(), 2);
    provider
        .register(ServiceMetaInfo::new("third", "127.0.0.1", 1))
        .await
        .unwrap();
    let third = next(&mut all).await.unwrap();
    assert_eq!(third.diff.added.len(), 1);
    assert_eq!(third.diff.added[0].service_name, "third");
    provider.shutdown().await.unwrap();
    let gone = next(&mut all).await.unwrap();
    assert_eq!(gone.diff.removed.len(), 3);
    assert!(gone.nodes.is_empty());
}

/// "Is my registration live?": pending while the store refuses it, live once written, lost
/// when heartbeats fail for longer than the TTL, live again once the store is back; the stream
/// of states ends when the node is unregistered.
#[tokio::test(start_paused = true)]
async fn registration_states_follow_the_store() {
    use registry_core::RegistrationState::{Live, Lost, Pending};
    let store = MemoryStore::new();
    let provider = client(&store, options());
    store.set_down(true);
    assert!(provider.register(node(4)).await.is_err());
    assert_eq!(provider.registration_state(&node(4)), Some(Pending));
    let mut states = provider.watch_registration(&node(4)).unwrap();
    assert_eq!(states.next().await, Some(Pending));
    store.set_down(false);
    assert_eq!(states.next().await, Some(Live));

    // The store goes away for longer than the TTL: the heartbeats fail, the node is lost.
    store.set_down(true);
    assert_eq!(states.next().await, Some(Lost));
    store.set_down(false);
    // The registrar puts it back (through Repairing, which a slow reader may not see).
    loop {
        match states.next().await {
            Some(Live) => break,
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
    assert_eq!(provider.registration_state(&node(4)), Some(Live));
    provider.unregister(&node(4)).await.unwrap();
    assert_eq!(states.next().await, None, "ends once unregistered");
    assert_eq!(provider.registration_state(&node(4)), None);
}
