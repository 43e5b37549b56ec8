//! The backend conformance suite: the behaviour every backend must show, written once.
//!
//! A backend's test file implements [`Harness`] (how to make a registry client on a store, and
//! how to touch the store behind the registry's back) and expands [`conformance_tests!`](crate::conformance_tests!) with an async function that builds the harness:
//!
//! ```ignore
//! async fn harness() -> MyHarness { ... }
//! registry_core::conformance_tests!(harness);
//! ```
//!
//! Every test works under its own random root, so tests may share one server.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rand::Rng as _;

use crate::{
    EmptyProtection, Origin, Registry, RegistryError, RegistryOptions, ServiceChange,
    ServiceMetaInfo,
};

/// How a backend's tests plug into the suite.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new registry client on the store under test, as a separate process would have.
    async fn client(&self, options: RegistryOptions) -> Registry;
    /// Deletes `key` directly in the store, behind every registry's back.
    async fn delete_raw(&self, key: &str);
    /// Writes `value` at `key` directly in the store, without liveness.
    async fn put_raw(&self, key: &str, value: &[u8]);
    /// TTL and heartbeat interval the suite uses (small, so expiry tests are quick).
    fn timing(&self) -> (Duration, Duration) {
        (Duration::from_secs(2), Duration::from_millis(500))
    }
}

/// Options with the harness timing under a fresh random root.
pub fn options(h: &dyn Harness) -> RegistryOptions {
    let (ttl, heartbeat) = h.timing();
    options_with(ttl, heartbeat)
}

/// Options with the suite's default timing (TTL 2 s, heartbeat 500 ms) under a fresh random
/// root: for a backend's own fault tests.
pub fn default_options() -> RegistryOptions {
    options_with(Duration::from_secs(2), Duration::from_millis(500))
}

fn options_with(ttl: Duration, heartbeat: Duration) -> RegistryOptions {
    let root = format!("/conformance-{:016x}/", rand::rng().random::<u64>());
    RegistryOptions::default()
        .with_root(&root)
        .with_ttl(ttl)
        .with_heartbeat_interval(heartbeat)
        .with_timeout(Duration::from_secs(5))
        .with_retry(Duration::from_millis(50), Duration::from_millis(500))
        .with_relist_cooldown(Duration::from_millis(100))
        .with_empty_protection(EmptyProtection::Off)
}

/// Polls `check` every 20 ms until it is true; panics with `what` after `limit`.
///
/// Time is Tokio's: under `tokio::time::pause()` the limit and the returned duration are in
/// paused time (the real clock otherwise).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The addresses a registry serves for `service_key` (empty on no provider).
pub async fn addresses(registry: &Registry, service_key: &str) -> Vec<String> {
    match registry.discover(service_key).await {
        Ok(nodes) => {
            let mut a: Vec<String> = nodes.iter().map(|n| n.address()).collect();
            a.sort();
            a
        }
        Err(RegistryError::NoProvider { .. }) => Vec::new(),
        Err(e) => panic!("discover {service_key} failed: {e}"),
    }
}

/// A listener that records every change.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<ServiceChange>>>);

impl Recorder {
    pub fn listener(&self) -> impl Fn(&ServiceChange) + Send + Sync + 'static {
        let log = self.0.clone();
        move |c: &ServiceChange| log.lock().unwrap().push(c.clone())
    }
    pub fn changes(&self) -> Vec<ServiceChange> {
        self.0.lock().unwrap().clone()
    }
    pub fn removed(&self) -> Vec<String> {
        self.changes()
            .iter()
            .flat_map(|c| c.diff.removed.iter().map(|n| n.address()))
            .collect()
    }
    pub fn current(&self) -> Vec<String> {
        let changes = self.changes();
        let mut a: Vec<String> = changes
            .last()
            .map(|c| c.nodes.iter().map(|n| n.address()).collect())
            .unwrap_or_default();
        a.sort();
        a
    }
}

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
        let nodes = inspector.inspect(Some("dup:1.0")).await.unwrap();
        assert!(nodes.len() <= 1, "{nodes:?}");
        nodes.first().and_then(|n| n.node.register_time)
    };
    // Distinct registration times tell whose value the store holds.
    tokio::time::sleep(Duration::from_millis(5)).await;
    match second.register(node("dup", 7801)).await {
        Err(RegistryError::Store {
            source: crate::BackendError::Held { .. },
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
            one_owner_per_node
        );
    };
    (@each $make:path, $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $make().await;
                $crate::conformance::$name(&harness).await;
            }
        )+
    };
}

// ---- fault scenarios: each backend's test supplies the server and the fault ----

/// A fault a backend's test inflicts on its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then start again on the same address without its data.
    KillAndRestartEmpty,
    /// SIGSTOP.
    Pause,
    /// SIGCONT.
    Resume,
}

/// Makes a new registry client (as another process would) on the store under test.
pub type Connect<'a> = &'a (dyn Fn(RegistryOptions) -> std::pin::Pin<Box<dyn Future<Output = Registry> + Send>>
         + Sync);

/// Node `port` of service `svc:1.0` on 127.0.0.1 (the fault scenarios' service).
pub fn svc(port: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new("svc", "127.0.0.1", port)
}

/// The sorted addresses of `svc` nodes on `ports`, as [`addresses`] returns them.
pub fn svc_addresses(ports: &[u16]) -> Vec<String> {
    let mut a: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    a.sort();
    a
}

/// The server dies and comes back empty: every node is in the store again within
/// `back_within` of the restart, a watcher in another client sees them come back (whatever
/// it saw go, it sees return) and keeps receiving changes, and a consumer converges.
pub async fn restart_without_data(
    connect: Connect<'_>,
    inject: &mut dyn FnMut(Fault),
    options: RegistryOptions,
    back_within: Duration,
) {
    let provider = connect(options.clone()).await;
    let watcher = connect(options.clone().with_empty_protection(EmptyProtection::Off)).await;
    let consumer = connect(
        options
            .clone()
            .with_empty_protection(EmptyProtection::OnResync),
    )
    .await;
    for port in [1, 2, 3] {
        provider.register(svc(port)).await.unwrap();
    }
    let rec = Recorder::default();
    let _sub = watcher.subscribe("svc:1.0", rec.listener()).await.unwrap();
    eventually(Duration::from_secs(5), "watcher sees 3 nodes", || async {
        rec.current().len() == 3
    })
    .await;
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 3);

    inject(Fault::KillAndRestartEmpty);
    let restarted = Instant::now();
    let fresh = connect(options.clone()).await;
    eventually(back_within, "all nodes back in the store", || async {
        fresh
            .inspect(Some("svc:1.0"))
            .await
            .is_ok_and(|n| n.len() == 3)
    })
    .await;
    println!("nodes back {:?} after the restart", restarted.elapsed());
    // Whether the watcher relisted before or after the provider put the nodes back is a race;
    // either way every loss it saw is undone.
    eventually(
        Duration::from_secs(10),
        "watcher converges to the 3 nodes",
        || async {
            let added: usize = rec.changes().iter().map(|c| c.diff.added.len()).sum();
            rec.current() == svc_addresses(&[1, 2, 3]) && added == 3 + rec.removed().len()
        },
    )
    .await;
    // It watches the new server's history: a node added now arrives.
    provider.register(svc(4)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "watcher sees a node added after the restart",
        || async { rec.current() == svc_addresses(&[1, 2, 3, 4]) },
    )
    .await;
    eventually(Duration::from_secs(10), "consumer converged", || async {
        consumer
            .cached("svc:1.0")
            .is_some_and(|n| n.len() == 4 && !n.is_stale())
    })
    .await;
}

/// The server is paused for longer than the TTL: the consumer's cache keeps serving during the
/// pause; after it, the nodes are registered (within `converge_within`), the cache equals the
/// store, and heartbeats keep them there.
pub async fn pause_beyond_ttl(
    connect: Connect<'_>,
    inject: &mut dyn FnMut(Fault),
    options: RegistryOptions,
    converge_within: Duration,
) {
    let provider = connect(options.clone()).await;
    let consumer = connect(
        options
            .clone()
            .with_empty_protection(EmptyProtection::OnResync),
    )
    .await;
    for port in [1, 2] {
        provider.register(svc(port)).await.unwrap();
    }
    assert_eq!(addresses(&consumer, "svc:1.0").await.len(), 2);

    inject(Fault::Pause);
    tokio::time::sleep(options.ttl + options.heartbeat_interval * 2).await;
    assert_eq!(
        addresses(&consumer, "svc:1.0").await.len(),
        2,
        "the cache serves during the outage"
    );
    inject(Fault::Resume);

    let fresh = connect(options.clone()).await;
    eventually(converge_within, "nodes registered in the store", || async {
        fresh
            .inspect(Some("svc:1.0"))
            .await
            .is_ok_and(|n| n.len() == 2)
    })
    .await;
    eventually(
        converge_within,
        "consumer cache equals the store",
        || async {
            consumer.cached("svc:1.0").is_some_and(|n| !n.is_stale())
                && addresses(&consumer, "svc:1.0").await == svc_addresses(&[1, 2])
        },
    )
    .await;
    // Heartbeats keep going after the pause.
    tokio::time::sleep(options.ttl * 2).await;
    assert_eq!(fresh.inspect(Some("svc:1.0")).await.unwrap().len(), 2);
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        svc_addresses(&[1, 2])
    );
}

/// Logs of a backend's tests: `RUST_LOG` (default `warn`) to the test's captured output.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Measurements the benchmark binaries share (figures go to `BENCHMARKS.md`, not to asserts).
pub mod measure {
    use std::time::{Duration, Instant};

    use futures::{StreamExt, TryStreamExt};
    use tokio::sync::mpsc;

    use crate::{Registry, ServiceChange, ServiceMetaInfo};

    /// The `p` quantile (0..=1) of sorted samples.
    pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    /// Times graceful deregistrations: `provider` unregisters a node, until a listener in
    /// `consumer` is called with its removal. One node stays registered throughout, so the
    /// list never empties (empty protection is not what is timed).
    pub struct Deregistration {
        provider: Registry,
        consumer: Registry,
        changes: mpsc::UnboundedReceiver<(Instant, ServiceChange)>,
        _subscription: crate::Subscription,
    }

    impl Deregistration {
        /// Registers the node that stays and subscribes the consumer.
        pub async fn new(provider: Registry, consumer: Registry) -> Self {
            provider
                .register(ServiceMetaInfo::new("bench", "127.0.0.1", 1))
                .await
                .unwrap();
            let (tx, changes) = mpsc::unbounded_channel();
            let subscription = consumer
                .subscribe("bench:1.0", move |c: &ServiceChange| {
                    let _ = tx.send((Instant::now(), c.clone()));
                })
                .await
                .unwrap();
            Deregistration {
                provider,
                consumer,
                changes,
                _subscription: subscription,
            }
        }

        /// One sample: register, wait until the consumer has the node, then time its removal.
        pub async fn sample(&mut self) -> Duration {
            let node = ServiceMetaInfo::new("bench", "127.0.0.1", 2);
            self.provider.register(node.clone()).await.unwrap();
            while let Some((_, c)) = self.changes.recv().await {
                if c.nodes.iter().any(|n| n.service_port == 2) {
                    break;
                }
            }
            let started = Instant::now();
            self.provider.unregister(&node).await.unwrap();
            while let Some((at, c)) = self.changes.recv().await {
                if c.diff.removed.iter().any(|n| n.service_port == 2) {
                    return at - started;
                }
            }
            panic!("the subscription ended");
        }

        /// Shuts both clients down.
        pub async fn finish(self) {
            self.provider.shutdown().await.unwrap();
            self.consumer.shutdown().await.unwrap();
        }
    }

    /// Registers `nodes` nodes over `services` services (64 in flight) with `provider` while
    /// `consumer` already watches every service; returns the time until every registration
    /// was acknowledged and the time until the consumer's cache held them all.
    pub async fn mass_registration(
        provider: &Registry,
        consumer: &Registry,
        services: u16,
        nodes: u16,
    ) -> (Duration, Duration) {
        for s in 0..services {
            consumer.discover(&format!("mass{s}:1.0")).await.ok();
        }
        let started = Instant::now();
        futures::stream::iter(0..nodes)
            .map(|i| async move {
                provider
                    .register(ServiceMetaInfo::new(
                        format!("mass{}", i % services),
                        "127.0.0.1",
                        20_000 + i,
                    ))
                    .await
            })
            .buffer_unordered(64)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let registered = started.elapsed();
        loop {
            let seen: usize = (0..services)
                .map(|s| {
                    consumer
                        .cached(&format!("mass{s}:1.0"))
                        .map_or(0, |n| n.len())
                })
                .sum();
            if seen == usize::from(nodes) {
                return (registered, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
