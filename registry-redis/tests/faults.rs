//! The Redis backend under faults of a real server: killed and restarted empty or from an
//! older snapshot, paused beyond the TTL, authentication, and the heartbeat's cost counted by
//! Redis itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use registry_conformance::{
    addresses, default_options, eventually, init_tracing, svc, svc_addresses, BackendUnderTest,
    Recorder,
};
use registry_core::{BackendError, ConnectOptions, EmptyProtection};
use registry_redis::RedisBackend;
use registry_test_support::RedisServer;

/// A Redis whose clients count their watches' relists.
fn counted_server() -> (BackendUnderTest<RedisServer>, Arc<AtomicUsize>) {
    init_tracing();
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let relists = Arc::new(AtomicUsize::new(0));
    let target = support::counting_target(&server.url(), &relists);
    (BackendUnderTest::new(server, target), relists)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_back_after_a_restart_without_data() {
    let (mut redis, relists) = counted_server();
    let options = default_options();
    let back_within = options.heartbeat_interval + Duration::from_secs(2);
    redis.restart_without_data(options, back_within).await;
    let relisted = relists.load(Ordering::Relaxed);
    println!("watch relists after the restart without data: {relisted}");
    assert!(relisted > 0, "the loss is detected");
}

/// The server comes back from an older snapshot: the writes made after it are lost, as they
/// are when a replica is promoted before it received them. The revisions go back, then line
/// up again with other changes; the clients tell by the restarted server's new replication
/// id: watches relist, and the registrar puts back the node the store lost and deletes again
/// the one the store brought back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_lost_by_a_restart_from_an_older_snapshot_are_repaired() {
    let (mut redis, relists) = counted_server();
    let options = default_options();
    let provider = redis.registry(options.clone()).await;
    let consumer = redis
        .registry(
            options
                .clone()
                .with_empty_protection(EmptyProtection::OnResync),
        )
        .await;
    for port in [1, 2] {
        provider.register(svc(port)).await.unwrap();
    }
    let rec = Recorder::default();
    let _sub = consumer.subscribe("svc:1.0", rec.listener()).await.unwrap();
    let sees = |ports: &'static [u16]| {
        let rec = &rec;
        move || async move { rec.current() == svc_addresses(ports) }
    };
    eventually(
        Duration::from_secs(5),
        "the consumer sees 1, 2",
        sees(&[1, 2]),
    )
    .await;
    assert!(redis.command("SAVE").unwrap().starts_with("+OK"));
    provider.register(svc(3)).await.unwrap();
    provider.unregister(&svc(2)).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the consumer sees 1, 3",
        sees(&[1, 3]),
    )
    .await;
    let before = redis
        .command("GET rpc-registry:revision")
        .unwrap_or_default();

    tokio::task::block_in_place(|| redis.restart().unwrap_or_else(|e| panic!("{e}")));
    let restarted = Instant::now();
    let after = redis
        .command("GET rpc-registry:revision")
        .unwrap_or_default();
    println!(
        "revision before the restart {:?}, after {:?}",
        before.lines().last(),
        after.lines().last()
    );
    let fresh = redis.registry(options.clone()).await;
    let repaired = eventually(
        Duration::from_secs(5),
        "the store holds 1 and 3",
        || async {
            addresses(&fresh, "svc:1.0").await == svc_addresses(&[1, 3])
                && fresh
                    .inspect(Some("svc:1.0"))
                    .await
                    .is_ok_and(|n| n.len() == 2)
        },
    )
    .await;
    eventually(Duration::from_secs(5), "the consumer converges", || async {
        rec.current() == svc_addresses(&[1, 3])
            && consumer.cached("svc:1.0").is_some_and(|n| !n.is_stale())
    })
    .await;
    // The watches go on on the new history.
    provider.register(svc(4)).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the consumer sees 1, 3, 4",
        sees(&[1, 3, 4]),
    )
    .await;
    let relisted = relists.load(Ordering::Relaxed);
    println!(
        "lost writes repaired {repaired:?} after the restart ({:?} in all); watch relists: \
         {relisted}",
        restarted.elapsed()
    );
    assert!(relisted > 0, "the loss is detected");
    for registry in [provider, consumer, fresh] {
        registry.shutdown().await.unwrap();
    }
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

/// Commands Redis ran over `beats` heartbeats of a provider holding `nodes` nodes (after the
/// registration settled), per heartbeat; and how long registering took per node.
async fn commands_per_beat(
    server: &registry_conformance::BackendUnderTest<RedisServer>,
    nodes: u16,
    beats: u32,
) -> (f64, BTreeMap<String, f64>, Duration) {
    let options = default_options();
    let url = server.url();
    let provider = server.registry(options.clone()).await;
    let started = Instant::now();
    futures::stream::iter(0..nodes)
        .map(|port| {
            let provider = &provider;
            async move { provider.register(svc(10_000 + port)).await.unwrap() }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let per_node = started.elapsed() / u32::from(nodes);
    // Two beats to settle: the first one after the registration reads the new node keys
    // once, for client tracking.
    tokio::time::sleep(options.heartbeat_interval * 2 + options.heartbeat_interval / 2).await;
    let before = support::command_calls(&url).await;
    tokio::time::sleep(options.heartbeat_interval * beats).await;
    let after = support::command_calls(&url).await;
    provider.shutdown().await.unwrap();
    let by_command: BTreeMap<String, f64> = after
        .iter()
        .map(|(name, calls)| {
            let delta = calls - before.get(name).copied().unwrap_or(0);
            (name.clone(), delta as f64 / f64::from(beats))
        })
        .filter(|(_, per_beat)| *per_beat > 0.0)
        .collect();
    (by_command.values().sum(), by_command, per_node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_costs_redis_the_same_few_commands_for_1_and_1000_nodes() {
    let server = support::start();
    let beats = 6;
    let (one, one_by_command, _) = commands_per_beat(&server, 1, beats).await;
    let (many, many_by_command, per_node) = commands_per_beat(&server, 1000, beats).await;
    println!("commands Redis ran per heartbeat (over {beats} beats, scripts' commands included):");
    println!("  1 node:      {one:.1} {one_by_command:?}");
    println!("  1,000 nodes: {many:.1} {many_by_command:?}");
    println!("  registering 1,000 nodes, 64 in flight: {per_node:?} per node");
    // Per heartbeat: the keep-alive (EVALSHA + TIME, SCARD, GET of the history, ZSCORE,
    // ZADD), plus the provider's own watch: about 2.5 blocking XREADs and 2.5 reaps (11
    // commands each, one per TTL/10 = 200 ms) per 500 ms beat. Nothing depends on the node
    // count; a beat or a reap more or less in a window moves the figure by at most ~2 per beat.
    assert!(one < 60.0, "{one_by_command:?}");
    assert!(
        (one - many).abs() <= 5.0,
        "1 node {one:.1}, 1,000 nodes {many:.1}"
    );
    // The lease's node count is asked once per beat, whatever the node count.
    for by_command in [&one_by_command, &many_by_command] {
        let scard = by_command.get("scard").copied().unwrap_or(0.0);
        assert!((0.5..=1.5).contains(&scard), "{by_command:?}");
    }
}
