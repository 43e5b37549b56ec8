//! What a whole listing costs, read from etcd's `/metrics` and from the logs: `inspect` (what
//! `registryctl list` runs) asks for TTLs once per lease, not once per node, and junk under
//! the root makes one warning per listing, not one per junk key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt as _;
use registry_conformance::{default_options, svc};
use registry_test_support::{metric_sum, EtcdServer};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Counts the warnings whose message mentions skipped entries.
#[derive(Clone, Default)]
struct SkipWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SkipWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 |= format!("{value:?}").contains("skipped");
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

const NODES: u16 = 1_000;
const JUNK: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_asks_ttls_per_lease_and_warns_once_for_its_junk() {
    let warnings = SkipWarnings::default();
    tracing_subscriber::registry()
        .with(warnings.clone())
        .with(tracing_subscriber::EnvFilter::new("warn"))
        .try_init()
        .expect("the only subscriber of this test binary");
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let options = default_options();
    let root = options.keys.root().to_owned();
    let provider = support::target(&etcd.endpoint())
        .registry(options.clone())
        .await;
    futures::stream::iter(0..NODES)
        .map(|i| provider.register(svc(10_000 + i)))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let mut raw = support::raw(&etcd.endpoint()).await;
    for chunk in (0..JUNK).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|i| etcd_client::TxnOp::put(format!("{root}svc:1.0/junk{i}"), "not json", None))
            .collect();
        raw.txn(etcd_client::Txn::new().and_then(ops))
            .await
            .unwrap();
    }
    let time_to_live = || {
        metric_sum(
            &etcd.metrics(),
            "grpc_server_handled_total",
            "grpc_method=\"LeaseTimeToLive\"",
        )
    };
    let tool = support::target(&etcd.endpoint())
        .registry(options.clone())
        .await;
    let warned_before = warnings.0.load(Ordering::Relaxed);
    let asked_before = time_to_live();
    let nodes = tool.inspect(None).await.unwrap();
    assert_eq!(nodes.len(), usize::from(NODES));
    assert!(nodes.iter().all(|n| n.ttl_remaining.is_some()));
    let asked = time_to_live() - asked_before;
    // Heartbeats of the provider read its lease's keys meanwhile (one request per beat); the
    // listing itself asks once, for the one lease.
    assert!(
        asked <= 4.0,
        "{asked} TimeToLive requests to list {NODES} nodes of one lease"
    );
    let warned = warnings.0.load(Ordering::Relaxed) - warned_before;
    assert_eq!(warned, 1, "one warning for {JUNK} junk keys in one listing");
    provider.shutdown().await.unwrap();
}
