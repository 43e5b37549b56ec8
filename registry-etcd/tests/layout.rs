//! The layout a Java client of the original framework reads: under a service's prefix only
//! nodes, each value with the framework's camelCase fields at the top level, even when an
//! administrator overrides a node (the record lives beside the services).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use etcd_client::GetOptions;
use registry_conformance::{default_options, svc};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_reader_of_a_service_prefix_sees_only_nodes_even_with_overrides() {
    let under_test = support::start();
    let endpoint = under_test.target().address().to_owned();
    let options = default_options();
    let provider = under_test.registry(options.clone()).await;
    let admin = under_test.registry(options).await;
    let node = provider.register(svc(1)).await.unwrap();
    admin
        .set_override(&node.service_key(), &node.address(), |o| {
            o.enabled = Some(false);
            o.weight = Some(5);
        })
        .await
        .unwrap();
    let mut raw = support::raw(&endpoint).await;
    let space = &admin.options().keys;
    let prefix = space.service_prefix(&node.service_key());
    let listed = raw
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let keys: Vec<&str> = listed
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [format!("{prefix}{}", node.address())],
        "only the node"
    );
    let value: Value = serde_json::from_slice(listed.kvs()[0].value()).unwrap();
    for field in [
        "serviceName",
        "serviceVersion",
        "serviceHost",
        "servicePort",
        "serviceGroup",
    ] {
        assert!(!value[field].is_null(), "{field} missing from {value}");
    }
    // The record is beside the services, and consumers apply it.
    let record = raw
        .get(space.overrides_path(&node.service_key()), None)
        .await
        .unwrap();
    assert_eq!(record.kvs().len(), 1);
    let nodes = admin.discover(&node.service_key()).await.unwrap();
    assert!(!nodes[0].enabled);
    assert_eq!(nodes[0].weight, 5);
    provider.shutdown().await.unwrap();
    admin.shutdown().await.unwrap();
}
