//! The Redis backend under faults of a real server: killed and restarted empty, paused beyond
//! the TTL, junk, authentication, and the heartbeat's cost counted by Redis itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use registry_conformance::{addresses, default_options, init_tracing, svc, svc_addresses};
use registry_core::{BackendError, ConnectOptions};
use registry_redis::RedisBackend;
use registry_test_support::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_back_after_a_restart_without_data() {
    let mut redis = support::start();
    let options = default_options();
    let back_within = options.heartbeat_interval + Duration::from_secs(2);
    redis.restart_without_data(options, back_within).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_beyond_the_ttl_converges_to_the_truth() {
    let mut redis = support::start();
    redis
        .pause_beyond_ttl(default_options(), Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn wrong_credentials_are_a_clear_error_at_startup() {
    init_tracing();
    let server =
        RedisServer::start_with(&["--requirepass", "s3cret"]).unwrap_or_else(|e| panic!("{e}"));
    let with = |password: Option<&str>| ConnectOptions {
        address: server.url(),
        password: password.map(str::to_owned),
        timeout: Duration::from_secs(2),
        ttl: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    for bad in [Some("wrong"), None] {
        let err = RedisBackend::connect(&with(bad)).await.unwrap_err();
        assert!(
            matches!(err, BackendError::Auth { .. }),
            "{bad:?}: {}",
            registry_core::error_chain(&err)
        );
        assert!(err
            .to_string()
            .contains("rpc.registryConfig.username/password"));
    }
    let backend = RedisBackend::connect(&with(Some("s3cret"))).await.unwrap();
    let registry =
        registry_core::Registry::new(std::sync::Arc::new(backend), default_options()).unwrap();
    registry.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&registry, "svc:1.0").await, svc_addresses(&[1]));
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let port = registry_test_support::free_port();
    let err = RedisBackend::connect(&ConnectOptions {
        address: format!("127.0.0.1:{port}"),
        timeout: Duration::from_secs(2),
        ..ConnectOptions::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, BackendError::Connect { .. }), "{err}");
}

fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = server.command("INFO commandstats").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_cost_one_script_call_whatever_the_node_count() {
    let server = support::start();
    let options = default_options();
    let mut per_window = Vec::new();
    for n in [1u16, 100] {
        let provider = server.registry(options.clone()).await;
        for port in 0..n {
            provider.register(svc(10_000 + port)).await.unwrap();
        }
        tokio::time::sleep(options.heartbeat_interval / 2).await;
        let before = evalsha_calls(&server);
        tokio::time::sleep(options.heartbeat_interval * 6).await;
        per_window.push(evalsha_calls(&server) - before);
        provider.shutdown().await.unwrap();
    }
    println!(
        "script calls over 6 heartbeats: 1 node {}, 100 nodes {}",
        per_window[0], per_window[1]
    );
    // 6 keep-alives, plus the provider client's reaping (its registry watches its own
    // services): one call per TTL/10 = 200 ms for the whole client, 15 in 3 s.
    assert!((6..=24).contains(&per_window[0]), "{per_window:?}");
    assert!(per_window[0].abs_diff(per_window[1]) <= 2, "{per_window:?}");
}
