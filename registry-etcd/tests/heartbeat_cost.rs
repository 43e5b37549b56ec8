//! What a heartbeat costs etcd, read from etcd's own `/metrics`: registering N nodes costs N
//! puts and one lease grant; in steady state a beat is one lease renewal and no put, for any N.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use registry_conformance::BackendUnderTest;
use registry_core::{RegistryOptions, ServiceMetaInfo};
use registry_test_support::{metric_sum, EtcdServer};

struct Counters {
    puts: f64,
    grants: f64,
    renewals: f64,
}

fn counters(etcd: &EtcdServer) -> Counters {
    let m = etcd.metrics();
    Counters {
        puts: metric_sum(&m, "etcd_mvcc_put_total", ""),
        grants: metric_sum(
            &m,
            "grpc_server_handled_total",
            "grpc_method=\"LeaseGrant\"",
        ),
        renewals: metric_sum(&m, "etcd_debugging_lease_renewed_total", ""),
    }
}

/// Registers `n` nodes, then watches three heartbeats; returns (puts, grants) to register and
/// (puts, renewals) during the steady-state window.
async fn measure(etcd: &BackendUnderTest<EtcdServer>, n: u16) -> ((f64, f64), (f64, f64)) {
    let options = RegistryOptions::default()
        .with_root(&format!("/cost-{n}/"))
        .with_ttl(Duration::from_secs(3))
        .with_heartbeat_interval(Duration::from_secs(1));
    let before = counters(etcd);
    let registry = etcd.registry(options).await;
    for i in 0..n {
        registry
            .register(ServiceMetaInfo::new("cost", "127.0.0.1", 10_000 + i))
            .await
            .unwrap();
    }
    let registered = counters(etcd);
    // Let the watch of our own service settle, then measure a window of ~3 beats.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = counters(etcd);
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let end = counters(etcd);
    registry.shutdown().await.unwrap();
    (
        (
            registered.puts - before.puts,
            registered.grants - before.grants,
        ),
        (end.puts - start.puts, end.renewals - start.renewals),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_cost_one_renewal_and_no_put_whatever_the_node_count() {
    let etcd = support::start();
    assert!(
        etcd.metrics()
            .contains("etcd_debugging_lease_renewed_total"),
        "metric present"
    );
    let ((puts_1, grants_1), (steady_puts_1, renewals_1)) = measure(&etcd, 1).await;
    let ((puts_100, grants_100), (steady_puts_100, renewals_100)) = measure(&etcd, 100).await;
    println!("1 node: register {puts_1} puts / {grants_1} grants; steady {steady_puts_1} puts, {renewals_1} renewals");
    println!("100 nodes: register {puts_100} puts / {grants_100} grants; steady {steady_puts_100} puts, {renewals_100} renewals");
    assert_eq!((puts_1, grants_1), (1.0, 1.0));
    assert_eq!((puts_100, grants_100), (100.0, 1.0));
    assert_eq!(steady_puts_1, 0.0, "no put in steady state");
    assert_eq!(steady_puts_100, 0.0, "no put in steady state");
    assert!(
        (2.0..=5.0).contains(&renewals_1),
        "about one renewal per beat: {renewals_1}"
    );
    assert!(
        (renewals_100 - renewals_1).abs() <= 1.0,
        "renewals do not grow with nodes: {renewals_1} vs {renewals_100}"
    );
}
