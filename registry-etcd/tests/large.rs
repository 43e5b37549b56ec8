//! More than 4 MiB under a prefix, on a real etcd: values of 1.4 MB (etcd accepts up to
//! 1.5 MiB by default) under one service, 20,000 ordinary nodes under the root, and one watch
//! response above 4 MiB (a transaction of four 1.4 MB nodes on an etcd with a raised request
//! limit). Before paging and the raised decode limit, each of these broke listing or watching
//! with "decoded message length too large".

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use etcd_client::{GetOptions, Txn, TxnOp, WatchOptions};
use futures::StreamExt as _;
use registry_conformance::{
    addresses, default_options, eventually, init_tracing, svc, svc_addresses, Recorder,
};
use registry_core::{KeySpace, ServiceMetaInfo};
use registry_etcd::EtcdSettings;
use registry_test_support::{metric_sum, EtcdServer};

/// A value etcd accepts with its default `--max-request-bytes` (1.5 MiB).
const BIG: usize = 1_400_000;
/// tonic's default decode limit, which the listings and watches hit.
const TONIC_DEFAULT_LIMIT: usize = 4 * 1024 * 1024;

fn big_node(port: u16) -> ServiceMetaInfo {
    svc(port).with_metadata("blob", "x".repeat(BIG))
}

fn json(node: &ServiceMetaInfo) -> Vec<u8> {
    serde_json::to_vec(node).unwrap()
}

fn is_too_large(error: &etcd_client::Error) -> bool {
    error
        .to_string()
        .contains("decoded message length too large")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_values_of_1_4_mb_under_a_service_leave_its_discovery_working() {
    let etcd = support::start();
    let options = default_options();
    let root = options.keys.root().to_owned();
    let mut raw = support::raw(&etcd.endpoint()).await;
    // Two junk values and one well-formed node with big metadata, 1.4 MB each.
    for port in [9001, 9002] {
        raw.put(
            format!("{root}svc:1.0/127.0.0.1:{port}"),
            vec![b'j'; BIG],
            None,
        )
        .await
        .unwrap();
    }
    let big = big_node(9003);
    raw.put(options.keys.node_path(&big), json(&big), None)
        .await
        .unwrap();
    // What the issue saw: one read of the prefix is above tonic's default limit.
    let prefix = options.keys.service_prefix("svc:1.0");
    let err = raw
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap_err();
    assert!(is_too_large(&err), "{err}");

    let provider = etcd.registry(options.clone()).await;
    provider.register(svc(1)).await.unwrap();
    let consumer = etcd.registry(options.clone()).await;
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        svc_addresses(&[1, 9003]),
        "the normal node and the big well-formed one; the junk is skipped"
    );
    let nodes = consumer.discover("svc:1.0").await.unwrap();
    let blob = nodes
        .iter()
        .find(|n| n.service_port == 9003)
        .and_then(|n| n.metadata.get("blob").map(String::len));
    assert_eq!(blob, Some(BIG));
    assert_eq!(consumer.inspect(Some("svc:1.0")).await.unwrap().len(), 2);
    // Even a client that decodes no more than tonic's default reads it, in smaller pages.
    let small = support::target_with(
        &etcd.endpoint(),
        EtcdSettings::default().with_max_decoding_message_size(TONIC_DEFAULT_LIMIT),
    )
    .registry(options.clone())
    .await;
    assert_eq!(
        addresses(&small, "svc:1.0").await,
        svc_addresses(&[1, 9003])
    );
    for r in [provider, consumer, small] {
        r.shutdown().await.unwrap();
    }
}

/// Writes `n` small nodes of 100 services under `keys`, in transactions of 128 puts (etcd's
/// default `--max-txn-ops`), several at once.
async fn write_nodes(address: &str, keys: &KeySpace, n: u32) {
    let client = support::raw(address).await;
    let batches: Vec<Vec<u32>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(128)
        .map(<[u32]>::to_vec)
        .collect();
    futures::stream::iter(batches)
        .map(|batch| {
            let mut client = client.clone();
            let ops: Vec<TxnOp> = batch
                .iter()
                .map(|i| {
                    let node = ServiceMetaInfo::new(
                        format!("service-{}", i % 100),
                        format!("10.0.{}.{}", i / 250, i % 250),
                        8000 + (i % 1000) as u16,
                    );
                    TxnOp::put(keys.node_path(&node), json(&node), None)
                })
                .collect();
            async move { client.txn(Txn::new().and_then(ops)).await.unwrap() }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_root_listing_and_watch_of_20000_nodes_work() {
    let etcd = support::start();
    let options = default_options().with_timeout(Duration::from_secs(30));
    write_nodes(&etcd.endpoint(), &options.keys, 20_000).await;
    let mut raw = support::raw(&etcd.endpoint()).await;
    let err = raw
        .get(options.keys.root(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap_err();
    assert!(
        is_too_large(&err),
        "one read of the root is too large: {err}"
    );

    let consumer = etcd.registry(options.clone()).await;
    // `registryctl list`
    let listed = consumer.inspect(None).await.unwrap();
    assert_eq!(listed.len(), 20_000);
    // `registryctl watch`: the whole root listed, then watched from the listing's revision.
    let rec = Recorder::default();
    let _sub = consumer.subscribe_all(rec.listener()).await.unwrap();
    eventually(Duration::from_secs(30), "every node seen", || async {
        rec.current().len() == 20_000
    })
    .await;
    let provider = etcd.registry(options).await;
    provider.register(svc(1)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the node registered afterwards seen",
        || async { rec.current().len() == 20_001 },
    )
    .await;
    for r in [provider, consumer] {
        r.shutdown().await.unwrap();
    }
}

/// Range requests etcd has answered.
fn ranges(etcd: &EtcdServer) -> f64 {
    metric_sum(
        &etcd.metrics(),
        "grpc_server_handled_total",
        "grpc_method=\"Range\"",
    )
}

/// A provider and a consumer watch `svc:1.0`, then one transaction writes four 1.4 MB nodes
/// there (one revision, one 5.6 MB watch response: etcd fragments a watch response only above
/// its request limit, raised here to 8 MiB). The consumer ends up with them, both clients stop
/// listing (no relist loop), a node registered afterwards reaches the consumer, and the
/// provider's own node deleted behind its back is put back.
async fn an_oversized_revision_is_survived(settings: EtcdSettings) {
    init_tracing();
    let etcd = EtcdServer::start_with(&["--max-request-bytes", "8388608"])
        .unwrap_or_else(|e| panic!("{e}"));
    let options = default_options();
    let target = support::target_with(&etcd.endpoint(), settings);
    let provider = target.registry(options.clone()).await;
    provider.register(svc(1)).await.unwrap();
    let consumer = target.registry(options.clone()).await;
    let rec = Recorder::default();
    let _sub = consumer.subscribe("svc:1.0", rec.listener()).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "consumer sees the provider",
        || async { rec.current() == svc_addresses(&[1]) },
    )
    .await;
    // Let the provider's own watch confirm its write, so a later deletion is repaired.
    tokio::time::sleep(options.heartbeat_interval).await;

    let mut raw = support::raw(&etcd.endpoint()).await;
    // A client with tonic's default limit, watching since before, cannot receive the revision.
    let prefix = options.keys.service_prefix("svc:1.0");
    let mut raw_watch = raw
        .watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let big: Vec<ServiceMetaInfo> = (9001..=9004).map(big_node).collect();
    let ops: Vec<TxnOp> = big
        .iter()
        .map(|n| TxnOp::put(options.keys.node_path(n), json(n), None))
        .collect();
    raw.txn(Txn::new().and_then(ops)).await.unwrap();
    let raw_error = loop {
        match raw_watch.message().await {
            Ok(Some(_)) => continue, // the "created" answer
            Ok(None) => panic!("raw watch ended"),
            Err(e) => break e,
        }
    };
    assert!(is_too_large(&raw_error), "{raw_error}");

    let everyone = svc_addresses(&[1, 9001, 9002, 9003, 9004]);
    eventually(
        Duration::from_secs(15),
        "consumer sees the four big nodes",
        || async { rec.current() == everyone },
    )
    .await;
    // Nothing is written after the transaction: both clients must come to rest, not list
    // again and again (each relist of this service reads 5.6 MB).
    eventually(
        Duration::from_secs(20),
        "no listing for a whole second",
        || async {
            let before = ranges(&etcd);
            tokio::time::sleep(Duration::from_secs(1)).await;
            ranges(&etcd) == before
        },
    )
    .await;

    provider.register(svc(2)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "consumer sees the node registered afterwards",
        || async { rec.current() == svc_addresses(&[1, 2, 9001, 9002, 9003, 9004]) },
    )
    .await;

    let own = options.keys.node_path(&svc(1));
    raw.delete(own.as_str(), None).await.unwrap();
    // Nobody but the provider writes this key: seeing it again proves the provider put it back.
    eventually(
        options.heartbeat_interval * 2 + Duration::from_secs(5),
        "the provider's own node is back in the store",
        || {
            let mut raw = raw.clone();
            let own = own.clone();
            async move { raw.get(own, None).await.is_ok_and(|r| r.kvs().len() == 1) }
        },
    )
    .await;
    eventually(Duration::from_secs(10), "consumer converged", || async {
        rec.current() == svc_addresses(&[1, 2, 9001, 9002, 9003, 9004])
    })
    .await;
    for r in [provider, consumer] {
        r.shutdown().await.unwrap();
    }
}

/// With the default decode limit (64 MiB) the 5.6 MB watch response is simply received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_response_above_4_mib_is_received() {
    an_oversized_revision_is_survived(EtcdSettings::default()).await;
}

/// With a decode limit of 4 MiB the response cannot be received: the watch reports the history
/// lost, the core relists (in pages small enough) and watches on past the revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_response_above_the_decode_limit_is_skipped_by_relisting() {
    an_oversized_revision_is_survived(
        EtcdSettings::default().with_max_decoding_message_size(TONIC_DEFAULT_LIMIT),
    )
    .await;
}
