//! Junk written into the tree by any ZooKeeper client (the nodes are world-writable) must not
//! crash a process that lists the service, nor make its listing slow: a chain of znodes
//! thousands of levels deep under a service, and tens of thousands of junk children.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use registry_conformance::{addresses, default_options, eventually, svc, svc_addresses};
use registry_core::ServiceChange;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use zookeeper_client as zk;

/// Counts the "skipped znodes" warnings of the whole test binary.
#[derive(Clone, Default)]
struct JunkWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JunkWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 |= format!("{value:?}").contains("not registry nodes");
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if *event.metadata().level() == tracing::Level::WARN && message.0 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

const DEPTH: usize = 3_000;
const JUNK_CHILDREN: usize = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_chain_and_many_junk_children_neither_crash_nor_slow_a_listing() {
    let warnings = JunkWarnings::default();
    tracing_subscriber::registry()
        .with(warnings.clone())
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(tracing_subscriber::EnvFilter::new("warn"))
        .try_init()
        .expect("the only subscriber of this test binary");
    let zk = support::start();
    let address = zk.connect_string();
    let options = default_options();
    let root = options.keys.root().trim_end_matches('/').to_owned();
    let service = format!("{root}/svc:1.0");

    let raw = support::raw(&address).await;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    raw.mkdir(&service, &persistent).await.unwrap();
    // A chain `deep/d/d/...` DEPTH levels deep under the service.
    let mut chain = format!("{service}/deep");
    raw.create(&chain, b"junk", &persistent).await.unwrap();
    for _ in 1..DEPTH {
        chain.push_str("/d");
        raw.create(&chain, b"x", &persistent).await.unwrap();
    }
    // JUNK_CHILDREN junk siblings of the nodes, and a node-shaped znode deep in the chain.
    let service_ref = &service;
    let raw_ref = &raw;
    let persistent_ref = &persistent;
    futures::stream::iter(0..JUNK_CHILDREN)
        .map(|i| async move {
            raw_ref
                .create(&format!("{service_ref}/junk{i}"), b"", persistent_ref)
                .await
                .unwrap();
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
    raw.create(&format!("{chain}/127.0.0.1:9"), b"{}", &persistent)
        .await
        .unwrap();

    // A provider registers (it lists its own service), a consumer discovers it, a tool lists
    // and watches the whole root: none of them crashes, each listing stays within the
    // timeout.
    let options = options.with_timeout(Duration::from_secs(3));
    let provider = zk.registry(options.clone()).await;
    provider.register(svc(1)).await.unwrap();
    let consumer = zk.registry(options.clone()).await;
    let started = Instant::now();
    assert_eq!(addresses(&consumer, "svc:1.0").await, svc_addresses(&[1]));
    let listing = started.elapsed();
    assert!(listing < Duration::from_secs(3), "listing took {listing:?}");
    let tool = zk.registry(options.clone()).await;
    let all = tool.inspect(None).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let _sub = tool
        .subscribe_all(move |c: &ServiceChange| {
            log.lock()
                .unwrap()
                .extend(c.diff.added.iter().map(|n| n.address()))
        })
        .await
        .unwrap();

    // Listings warned once each (not once per junk znode).
    let after_listings = warnings.0.load(Ordering::Relaxed);
    assert!(
        (1..=12).contains(&after_listings),
        "{after_listings} junk warnings for a handful of listings"
    );

    // More junk through the watch, then a real node: the junk is ignored, the node arrives.
    chain.push_str("/d");
    raw.create(&chain, b"x", &persistent).await.unwrap();
    raw.create(&format!("{service}/junk-late"), b"", &persistent)
        .await
        .unwrap();
    provider.register(svc(2)).await.unwrap();
    eventually(Duration::from_secs(10), "the new node arrives", || async {
        addresses(&consumer, "svc:1.0").await == svc_addresses(&[1, 2])
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the root watch sees it",
        || async { seen.lock().unwrap().contains(&"127.0.0.1:2".to_owned()) },
    )
    .await;
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        svc_addresses(&[1, 2])
    );
    for r in [provider, consumer, tool] {
        r.shutdown().await.unwrap();
    }
}
