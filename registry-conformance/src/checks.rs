//! The conformance checks: the behaviour every backend must show, written once, each an async
//! function of a [`Harness`]. [`conformance_tests!`](crate::conformance_tests!) expands to one
//! test per check.
//!
//! Every check works under its own random root, so checks may share one server.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use registry_core::{BackendError, Origin, RegistryError, ServiceMetaInfo};

use crate::harness::options;
use crate::{addresses, eventually, Harness, Recorder};

fn node(name: &str, port: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new(name, "127.0.0.1", port)
}

/// Register, then discover from another client: the node comes back with its metadata and
/// registration time; the first lookup reads the store, the next one the cache.
pub async fn register_then_discover(h: &dyn Harness) {
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts).await;
    let before = SystemTime::now();
    let stored = provider
        .register(
            node("users", 7001)
                .with_weight(7)
                .with_metadata("zone", "eu-1")
                .with_metadata("protocol", "tcp"),
        )
        .await
        .unwrap();
    let after = SystemTime::now();
    let first = consumer.discover("users:1.0").await.unwrap();
    assert_eq!(first.origin(), Origin::Registry);
    assert_eq!(first.len(), 1);
    let found = &first[0];
    assert_eq!(**found, stored);
    assert_eq!(found.weight, 7);
    assert_eq!(found.metadata.get("zone").map(String::as_str), Some("eu-1"));
    let at = found.register_time.expect("registration time is set");
    // Stored with millisecond precision.
    assert!(
        at + Duration::from_millis(1) >= before && at <= after,
        "{at:?} not in [{before:?}, {after:?}]"
    );
    let second = consumer.discover("users:1.0").await.unwrap();
    assert_eq!(second.origin(), Origin::Cache);
    assert_eq!(second.len(), 1);
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

/// Unregister makes watchers (listeners and caches of other clients) see the removal.
pub async fn unregister_is_seen_by_watchers(h: &dyn Harness) {
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts).await;
    let rec = Recorder::default();
    let _sub = consumer
        .subscribe("orders:1.0", rec.listener())
        .await
        .unwrap();
    let a = provider.register(node("orders", 7101)).await.unwrap();
    provider.register(node("orders", 7102)).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "listener sees both nodes",
        || async { rec.current().len() == 2 },
    )
    .await;
    provider.unregister(&a).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "listener sees the removal",
        || async { rec.removed() == vec!["127.0.0.1:7101".to_owned()] },
    )
    .await;
    assert_eq!(rec.current(), vec!["127.0.0.1:7102".to_owned()]);
    eventually(
        Duration::from_secs(5),
        "consumer cache drops the node",
        || async { addresses(&consumer, "orders:1.0").await == vec!["127.0.0.1:7102".to_owned()] },
    )
    .await;
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

/// A node whose owner stops heart-beating (crash: dropped without shutdown) disappears within
/// TTL plus one heartbeat interval.
pub async fn dead_owner_expires(h: &dyn Harness) {
    let (ttl, heartbeat) = h.timing();
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts).await;
    provider.register(node("crashy", 7201)).await.unwrap();
    eventually(Duration::from_secs(5), "node visible", || async {
        addresses(&consumer, "crashy:1.0").await.len() == 1
    })
    .await;
    let crashed = Instant::now();
    drop(provider);
    // Generous bound: TTL + one heartbeat, plus slack for a loaded machine.
    let limit = ttl + heartbeat + Duration::from_secs(3);
    eventually(limit, "expired node leaves the consumer cache", || async {
        addresses(&consumer, "crashy:1.0").await.is_empty()
    })
    .await;
    assert!(
        crashed.elapsed() >= ttl.mul_f32(0.5),
        "node vanished after {:?}, before its TTL {ttl:?} could run out",
        crashed.elapsed()
    );
    consumer.shutdown().await.unwrap();
}

/// Heartbeats keep a node alive over more than three TTLs, and watchers never see it leave.
pub async fn heartbeats_keep_nodes_alive(h: &dyn Harness) {
    let (ttl, _) = h.timing();
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts.clone()).await;
    provider.register(node("steady", 7301)).await.unwrap();
    let rec = Recorder::default();
    let _sub = consumer
        .subscribe("steady:1.0", rec.listener())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "node visible", || async {
        rec.current().len() == 1
    })
    .await;
    tokio::time::sleep(ttl * 3 + ttl / 2).await;
    assert!(
        rec.removed().is_empty(),
        "node left during heartbeats: {:?}",
        rec.changes()
    );
    // A brand-new client reads it from the store, not from any cache.
    let fresh = h.client(opts).await;
    assert_eq!(
        addresses(&fresh, "steady:1.0").await,
        vec!["127.0.0.1:7301".to_owned()]
    );
    for r in [provider, consumer, fresh] {
        r.shutdown().await.unwrap();
    }
}

/// A node deleted behind the registry's back is registered again by the next heartbeat.
pub async fn deleted_node_is_registered_again(h: &dyn Harness) {
    let (_, heartbeat) = h.timing();
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let stored = provider.register(node("phoenix", 7401)).await.unwrap();
    let path = opts.keys.node_path(&stored);
    let consumer = h.client(opts.clone()).await;
    let rec = Recorder::default();
    let _sub = consumer
        .subscribe("phoenix:1.0", rec.listener())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "node visible", || async {
        rec.current().len() == 1
    })
    .await;
    // Give the provider's own watch time to confirm its write.
    tokio::time::sleep(heartbeat).await;
    h.delete_raw(&path).await;
    // Nobody but the owner writes this key: seeing it in the store after the raw delete
    // returned proves the owner put it back.
    let fresh = h.client(opts.clone()).await;
    eventually(
        heartbeat * 2 + Duration::from_secs(3),
        "node is back in the store",
        || async {
            fresh
                .inspect(Some("phoenix:1.0"))
                .await
                .is_ok_and(|n| n.len() == 1)
        },
    )
    .await;
    // The consumer ends with the node. Whether it saw the removal depends on timing: when the
    // deletion and the re-put reach its watch together they are applied as one batch, whose
    // net effect is no change, and no listener is bothered.
    eventually(Duration::from_secs(5), "consumer converged", || async {
        rec.current() == vec!["127.0.0.1:7401".to_owned()]
    })
    .await;
    assert_eq!(addresses(&fresh, "phoenix:1.0").await.len(), 1);
    for r in [provider, consumer, fresh] {
        r.shutdown().await.unwrap();
    }
}

/// Two services never see each other's nodes, even when one key is a prefix of the other.
pub async fn services_are_isolated(h: &dyn Harness) {
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts).await;
    provider.register(node("a", 7501)).await.unwrap();
    provider
        .register(node("a", 7502).with_group("canary"))
        .await
        .unwrap();
    provider
        .register(node("a", 7503).with_version("1.01"))
        .await
        .unwrap();
    provider.register(node("ab", 7504)).await.unwrap();
    assert_eq!(
        addresses(&consumer, "a:1.0").await,
        vec!["127.0.0.1:7501".to_owned()]
    );
    assert_eq!(
        addresses(&consumer, "a:1.0:canary").await,
        vec!["127.0.0.1:7502".to_owned()]
    );
    assert_eq!(
        addresses(&consumer, "a:1.01").await,
        vec!["127.0.0.1:7503".to_owned()]
    );
    assert_eq!(
        addresses(&consumer, "ab:1.0").await,
        vec!["127.0.0.1:7504".to_owned()]
    );
    assert!(addresses(&consumer, "b:1.0").await.is_empty());
    // Later changes stay apart too.
    provider.register(node("ab", 7505)).await.unwrap();
    eventually(Duration::from_secs(5), "ab sees its new node", || async {
        addresses(&consumer, "ab:1.0").await.len() == 2
    })
    .await;
    assert_eq!(
        addresses(&consumer, "a:1.0").await,
        vec!["127.0.0.1:7501".to_owned()]
    );
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

/// 100 concurrent registers and 100 concurrent discovers.
pub async fn concurrent_register_and_discover(h: &dyn Harness) {
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts).await;
    let mut tasks = Vec::new();
    for i in 0..100u16 {
        let p = provider.clone();
        tasks.push(tokio::spawn(async move {
            p.register(node("busy", 8000 + i)).await.map(|_| ())
        }));
        let c = consumer.clone();
        tasks.push(tokio::spawn(async move {
            match c.discover("busy:1.0").await {
                Ok(_) | Err(RegistryError::NoProvider { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "consumer sees all 100 nodes",
        || async { addresses(&consumer, "busy:1.0").await.len() == 100 },
    )
    .await;
    let distinct: HashSet<String> = addresses(&consumer, "busy:1.0").await.into_iter().collect();
    assert_eq!(distinct.len(), 100);
    assert_eq!(provider.registered().len(), 100);
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

/// Malformed data under the root is skipped (with a warning), never an error for the list.
pub async fn junk_is_skipped(h: &dyn Harness) {
    let opts = options(h);
    let root = opts.keys.root().to_owned();
    h.put_raw(&format!("{root}junk:1.0/127.0.0.1:1"), b"not json at all")
        .await;
    h.put_raw(
        &format!("{root}junk:1.0/127.0.0.1:2"),
        br#"{"unexpected":"shape"}"#,
    )
    .await;
    h.put_raw(&format!("{root}junk:1.0/not-an-address"), br#"[1,2,3]"#)
        .await;
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts).await;
    provider.register(node("junk", 7601)).await.unwrap();
    assert_eq!(
        addresses(&consumer, "junk:1.0").await,
        vec!["127.0.0.1:7601".to_owned()]
    );
    // Junk arriving through the watch is skipped as well.
    h.put_raw(&format!("{root}junk:1.0/127.0.0.1:3"), b"\xff\xfe")
        .await;
    provider.register(node("junk", 7602)).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the second real node arrives",
        || async {
            addresses(&consumer, "junk:1.0").await
                == vec!["127.0.0.1:7601".to_owned(), "127.0.0.1:7602".to_owned()]
        },
    )
    .await;
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

/// Graceful shutdown removes every node of the client at once (well before the TTL), and the
/// registry refuses further use.
pub async fn shutdown_removes_nodes(h: &dyn Harness) {
    let (ttl, _) = h.timing();
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts).await;
    provider.register(node("bye", 7701)).await.unwrap();
    provider.register(node("bye", 7702)).await.unwrap();
    assert_eq!(addresses(&consumer, "bye:1.0").await.len(), 2);
    provider.shutdown().await.unwrap();
    let took = eventually(ttl, "consumer sees both nodes gone", || async {
        addresses(&consumer, "bye:1.0").await.is_empty()
    })
    .await;
    assert!(took < ttl, "removal took {took:?}");
    assert!(matches!(
        provider.register(node("bye", 7703)).await,
        Err(RegistryError::Shutdown)
    ));
    consumer.shutdown().await.unwrap();
}

/// Two registrants of one node: the first keeps it, the second waits (its `register` reports
/// the node held, and it neither takes the node over nor deletes it, not even by unregistering
/// or shutting down), watchers see no flapping; when the first leaves gracefully, the second
/// takes over within a heartbeat or so.
pub async fn one_owner_per_node(h: &dyn Harness) {
    let (_, heartbeat) = h.timing();
    let opts = options(h);
    let first = h.client(opts.clone()).await;
    let second = h.client(opts.clone()).await;
    let watcher = h.client(opts.clone()).await;
    let inspector = h.client(opts.clone()).await;
    let rec = Recorder::default();
    let _sub = watcher.subscribe("dup:1.0", rec.listener()).await.unwrap();
    let held = first.register(node("dup", 7801)).await.unwrap();
    let stored_time = || async {
        // A loaded machine may time a request out now and then: that is not what is tested.
        let mut attempts = 0;
        let nodes = loop {
            match inspector.inspect(Some("dup:1.0")).await {
                Ok(nodes) => break nodes,
                Err(e) if attempts < 10 => {
                    attempts += 1;
                    eprintln!("inspect failed ({e}), again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("inspect kept failing: {e}"),
            }
        };
        assert!(nodes.len() <= 1, "{nodes:?}");
        nodes.first().and_then(|n| n.node.register_time)
    };
    // Distinct registration times tell whose value the store holds.
    tokio::time::sleep(Duration::from_millis(5)).await;
    match second.register(node("dup", 7801)).await {
        Err(RegistryError::Store {
            source: BackendError::Held { .. },
            ..
        }) => {}
        other => panic!("the second registrant must be told the node is held: {other:?}"),
    }
    // A third one that gives up (unregisters, shuts down) must not take the node with it.
    let quitter = h.client(opts.clone()).await;
    assert!(quitter.register(node("dup", 7801)).await.is_err());
    quitter.unregister(&node("dup", 7801)).await.unwrap();
    quitter.shutdown().await.unwrap();
    // Several heartbeats and retries later: still the first one's node, never removed.
    tokio::time::sleep(heartbeat * 4).await;
    assert_eq!(stored_time().await, held.register_time);
    assert!(rec.removed().is_empty(), "flapping: {:?}", rec.changes());
    assert_eq!(rec.current(), vec!["127.0.0.1:7801".to_owned()]);
    // The first leaves gracefully: the second takes over.
    first.shutdown().await.unwrap();
    eventually(
        heartbeat * 2 + Duration::from_secs(5),
        "the second registrant takes the node over",
        || async {
            stored_time()
                .await
                .is_some_and(|t| Some(t) != held.register_time)
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "watchers end with the node",
        || async { rec.current() == vec!["127.0.0.1:7801".to_owned()] },
    )
    .await;
    for r in [second, watcher, inspector] {
        r.shutdown().await.unwrap();
    }
}

/// Whether `consumer` serves `address` of `service` with `enabled` (and nothing is missing).
async fn served_enabled(
    consumer: &registry_core::Registry,
    service: &str,
    address: &str,
    enabled: bool,
) -> bool {
    consumer.discover(service).await.is_ok_and(|nodes| {
        nodes
            .iter()
            .any(|n| n.address() == address && n.enabled == enabled)
    })
}

/// An administrator takes a node out of traffic (`enabled = false` in the service's overrides
/// record): every consumer serves it disabled, a consumer starting later too; the owner's
/// heartbeats, its repair of a deleted node and its re-registration never undo it; a junk
/// record is skipped; enabling it again clears the record.
pub async fn disabled_node_stays_out_of_traffic(h: &dyn Harness) {
    let (_, heartbeat) = h.timing();
    let opts = options(h);
    let provider = h.client(opts.clone()).await;
    let consumer = h.client(opts.clone()).await;
    let admin = h.client(opts.clone()).await;
    let a = provider.register(node("drain", 7901)).await.unwrap();
    provider.register(node("drain", 7902)).await.unwrap();
    let rec = Recorder::default();
    let _sub = consumer
        .subscribe("drain:1.0", rec.listener())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "both nodes served", || async {
        rec.current().len() == 2
    })
    .await;
    let written = admin
        .set_override("drain:1.0", &a.address(), |o| o.enabled = Some(false))
        .await
        .unwrap();
    assert_eq!(written.enabled, Some(false));
    let wait = Duration::from_secs(5);
    eventually(wait, "the consumer serves the node disabled", || {
        served_enabled(&consumer, "drain:1.0", "127.0.0.1:7901", false)
    })
    .await;
    // The record is not a node: listeners still see two nodes, one of them updated.
    assert_eq!(rec.current().len(), 2, "{:?}", rec.changes());
    assert!(rec.removed().is_empty(), "{:?}", rec.changes());
    let late = h.client(opts.clone()).await;
    assert!(served_enabled(&late, "drain:1.0", "127.0.0.1:7901", false).await);
    assert!(served_enabled(&late, "drain:1.0", "127.0.0.1:7902", true).await);
    let listed = admin.inspect(Some("drain:1.0")).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Heartbeats, the repair of a deleted node and a re-registration leave it disabled.
    tokio::time::sleep(heartbeat * 3).await;
    assert!(served_enabled(&consumer, "drain:1.0", "127.0.0.1:7901", false).await);
    h.delete_raw(&opts.keys.node_path(&a)).await;
    let fresh = h.client(opts.clone()).await;
    eventually(
        heartbeat * 2 + wait,
        "the owner puts the node back",
        || async {
            fresh
                .inspect(Some("drain:1.0"))
                .await
                .is_ok_and(|n| n.len() == 2)
        },
    )
    .await;
    assert!(served_enabled(&fresh, "drain:1.0", "127.0.0.1:7901", false).await);
    provider.unregister(&a).await.unwrap();
    provider.register(node("drain", 7901)).await.unwrap();
    tokio::time::sleep(heartbeat).await;
    eventually(wait, "re-registered, still disabled", || {
        served_enabled(&consumer, "drain:1.0", "127.0.0.1:7901", false)
    })
    .await;
    // A junk record is skipped (with a warning): the owners' values apply.
    let record = opts.keys.overrides_path("drain:1.0");
    h.put_raw(&record, b"{not json").await;
    eventually(wait, "junk record skipped", || {
        served_enabled(&consumer, "drain:1.0", "127.0.0.1:7901", true)
    })
    .await;
    admin
        .set_override("drain:1.0", &a.address(), |o| o.enabled = Some(false))
        .await
        .unwrap();
    eventually(wait, "disabled again over the junk", || {
        served_enabled(&consumer, "drain:1.0", "127.0.0.1:7901", false)
    })
    .await;
    // Enabling clears the override, and the last one clears the record.
    admin
        .set_override("drain:1.0", &a.address(), |o| o.enabled = None)
        .await
        .unwrap();
    eventually(wait, "the consumer serves the node enabled", || {
        served_enabled(&consumer, "drain:1.0", "127.0.0.1:7901", true)
    })
    .await;
    assert!(admin.overrides("drain:1.0").await.unwrap().nodes.is_empty());
    eventually(wait, "listeners end with both nodes", || async {
        rec.current().len() == 2
    })
    .await;
    for r in [provider, consumer, admin, late, fresh] {
        r.shutdown().await.unwrap();
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each building its harness with
/// `$make().await`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@each $make,
            register_then_discover,
            unregister_is_seen_by_watchers,
            dead_owner_expires,
            heartbeats_keep_nodes_alive,
            deleted_node_is_registered_again,
            services_are_isolated,
            concurrent_register_and_discover,
            junk_is_skipped,
            shutdown_removes_nodes,
            one_owner_per_node,
            disabled_node_stays_out_of_traffic
        );
    };
    (@each $make:path, $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $make().await;
                $crate::checks::$name(&harness).await;
            }
        )+
    };
}
