//! Cold start while the store is down: a consumer that kept a disk snapshot starts, serves the
//! nodes it knew (stale), and once the store is back its view replaces the snapshot's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use registry_conformance::{default_options, eventually, init_tracing, svc, svc_addresses};
use registry_core::backend::LazyBackend;
use registry_core::{Backend, EmptyProtection, Registry, RegistryOptions};
use registry_etcd::EtcdBackend;
use registry_test_support::EtcdServer;

/// A consumer connecting lazily (it must start while etcd is down), with a snapshot in `dir`.
fn consumer(endpoint: &str, options: &RegistryOptions, dir: &std::path::Path) -> Registry {
    let options = options
        .clone()
        .with_snapshot_dir(dir)
        .with_empty_protection(EmptyProtection::OnResync);
    let connect = registry_core::ConnectOptions::for_registry(endpoint, &options);
    let backend = LazyBackend::new("etcd", move || {
        let connect = connect.clone();
        async move { Ok(Arc::new(EtcdBackend::connect(&connect).await?) as Arc<dyn Backend>) }
    });
    Registry::new(Arc::new(backend), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_during_an_outage_serves_its_snapshot_until_the_store_is_back() {
    init_tracing();
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let options = default_options().with_timeout(Duration::from_secs(1));
    let target = support::target(&endpoint);
    let stays = target.registry(options.clone()).await;
    stays.register(svc(1)).await.unwrap();
    let goes = target.registry(options.clone()).await;
    goes.register(svc(2)).await.unwrap();

    // A first consumer sees both and keeps them on disk.
    let first = consumer(&endpoint, &options, dir.path());
    eventually(
        Duration::from_secs(5),
        "the first consumer sees both",
        || async { first.discover("svc:1.0").await.is_ok_and(|n| n.len() == 2) },
    )
    .await;
    first.shutdown().await.unwrap();
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() >= 1,
        "a snapshot file was written"
    );

    // etcd goes away; the second provider dies meanwhile (its node will not come back).
    etcd.kill();
    drop(goes);
    let fresh = consumer(&endpoint, &options, dir.path());
    let nodes = fresh.discover("svc:1.0").await.unwrap();
    assert!(nodes.is_stale(), "served from the snapshot, marked stale");
    let mut ports: Vec<u16> = nodes.iter().map(|n| n.service_port).collect();
    ports.sort_unstable();
    assert_eq!(ports, [1, 2]);

    // etcd comes back without its data: the live provider registers again, the store's view
    // replaces the snapshot, and the node that died is gone.
    etcd.restart_wiped().unwrap_or_else(|e| panic!("{e}"));
    eventually(
        Duration::from_secs(15),
        "the store's view replaces the snapshot",
        || async {
            fresh.cached("svc:1.0").is_some_and(|n| {
                !n.is_stale()
                    && n.iter().map(|n| n.address()).collect::<Vec<_>>() == svc_addresses(&[1])
            })
        },
    )
    .await;
    for r in [stays, fresh] {
        r.shutdown().await.unwrap();
    }
}
