//! The console's JSON API and event stream, on the memory backend and on a real etcd: what
//! the pages and scripts see (services, nodes with TTLs, overview), live changes after a
//! snapshot, the actions behind the admin token (401 without it, 403 when read-only), and
//! bad input refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use registry_conformance::{eventually, init_tracing};
use registry_console::{AdminToken, Console, ConsoleOptions};
use registry_core::{
    ConnectOptions, MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo,
};
use registry_etcd::EtcdBackend;
use registry_test_support::EtcdServer;
use support::{act, change_has, get, node, Events, WITHIN};

const TOKEN: &str = "console-test-token-0123456789";
const SERVICE: &str = "users:1.0";

fn options() -> RegistryOptions {
    RegistryOptions::default()
        .with_ttl(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_secs(1))
}

fn console_options(token: Option<&str>) -> ConsoleOptions {
    ConsoleOptions::default()
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_store_address("test")
        .with_sample_interval(Duration::from_millis(200))
        .with_admin_token(token.and_then(AdminToken::new))
}

/// The whole story, over registries made by `registry` (all on one store).
async fn api_story<F, Fut>(kind: &str, registry: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Registry>,
{
    let provider = registry().await;
    let a = ServiceMetaInfo::new("users", "127.0.0.1", 7001).with_metadata("zone", "eu-1");
    provider.register(a.clone()).await.unwrap();
    let console = Console::start(registry().await, console_options(Some(TOKEN)))
        .await
        .unwrap();
    let at = console.local_addr();

    // The services list, the service with its node and TTL, the overview.
    eventually(WITHIN, "the service is listed", || async {
        let services = get(at, "/api/services").await.json();
        services["services"].as_array().unwrap().iter().any(|s| {
            s["key"] == SERVICE && s["nodes"] == 1 && s["enabled"] == 1 && s["healthy"] == 1
        })
    })
    .await;
    assert_eq!(
        get(at, "/api/services?q=USE").await.json()["services"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(at, "/api/services?q=nothing").await.json()["services"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let detail = get(at, &format!("/api/services/{SERVICE}")).await.json();
    assert_eq!(detail["name"], "users");
    assert_eq!(detail["version"], "1.0");
    assert_eq!(detail["group"], "default");
    let n = &detail["nodes"][0];
    assert_eq!(n["address"], "127.0.0.1:7001");
    assert_eq!(n["metadata"]["zone"], "eu-1");
    assert_eq!(n["weight"], 1);
    assert!(n["registerTime"].as_u64().is_some(), "{n}");
    let left = n["expiresAt"].as_u64().unwrap() as i64 - detail["now"].as_u64().unwrap() as i64;
    assert!(left > 0 && left <= 6000, "TTL left {left} ms ({kind})");
    let overview = get(at, "/api/overview").await.json();
    assert_eq!(overview["store"]["kind"], kind);
    assert_eq!(overview["store"]["address"], "test");
    assert_eq!(overview["services"], 1);
    assert_eq!(overview["nodes"], 1);
    assert_eq!(overview["actions"], true);
    eventually(WITHIN, "the store is reported healthy", || async {
        get(at, "/api/overview").await.json()["health"]["ok"] == true
    })
    .await;

    // The stream: a snapshot, then the changes as they happen, with the TTLs read.
    let mut events = Events::open(at).await;
    let (name, snapshot) = events.next().await;
    assert_eq!(name, "snapshot");
    assert_eq!(
        snapshot["services"][0]["nodes"][0]["address"],
        "127.0.0.1:7001"
    );
    let b = ServiceMetaInfo::new("users", "127.0.0.1", 7002);
    provider.register(b.clone()).await.unwrap();
    let added = events
        .until("change", |d| {
            change_has(d, SERVICE, "added", "127.0.0.1:7002")
        })
        .await;
    assert!(added["change"]["seq"].as_u64().unwrap() > snapshot["seq"].as_u64().unwrap());
    assert_eq!(added["log"][0]["kind"], "added");
    events
        .until("ttl", |d| {
            !d["expires"][SERVICE]["127.0.0.1:7002"].is_null()
        })
        .await;
    provider.unregister(&b).await.unwrap();
    events
        .until("change", |d| {
            change_has(d, SERVICE, "removed", "127.0.0.1:7002")
        })
        .await;
    // A page that reconnects starts over with a snapshot that holds what it missed.
    let (name, again) = Events::open(at).await.next().await;
    assert_eq!(name, "snapshot");
    assert_eq!(again["services"][0]["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(
        again["log"].as_array().unwrap().len(),
        2,
        "{}",
        again["log"]
    );

    // Actions: 401 without the token or with another one, then done with it.
    let node_a = "127.0.0.1:7001";
    let refused = act(at, SERVICE, node_a, "disable", None, "").await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let wrong = act(at, SERVICE, node_a, "disable", Some("not-the-token"), "").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(node(at, SERVICE, node_a).await.unwrap()["enabled"], true);
    let done = act(at, SERVICE, node_a, "disable", Some(TOKEN), "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["override"]["enabled"], false);
    events
        .until("change", |d| change_has(d, SERVICE, "updated", node_a))
        .await;
    assert_eq!(node(at, SERVICE, node_a).await.unwrap()["enabled"], false);
    let services = get(at, "/api/services").await.json();
    assert_eq!(services["services"][0]["enabled"], 0);
    let log = get(at, &format!("/api/services/{SERVICE}")).await.json()["log"].clone();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"] == "disabled"),
        "{log}"
    );

    let weight = act(
        at,
        SERVICE,
        node_a,
        "weight",
        Some(TOKEN),
        r#"{"weight": 5}"#,
    )
    .await;
    assert_eq!(weight.status, 200, "{}", weight.body);
    eventually(WITHIN, "the weight shows", || async {
        node(at, SERVICE, node_a)
            .await
            .is_some_and(|n| n["weight"] == 5)
    })
    .await;
    let bad = act(
        at,
        SERVICE,
        node_a,
        "weight",
        Some(TOKEN),
        r#"{"weight": 0}"#,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        act(
            at,
            SERVICE,
            node_a,
            "weight",
            Some(TOKEN),
            r#"{"weight": null}"#
        )
        .await
        .status,
        200
    );
    assert_eq!(
        act(at, SERVICE, node_a, "enable", Some(TOKEN), "")
            .await
            .status,
        200
    );
    eventually(WITHIN, "enabled again with its own weight", || async {
        node(at, SERVICE, node_a)
            .await
            .is_some_and(|n| n["enabled"] == true && n["weight"] == 1)
    })
    .await;

    // Deregister the node of an owner that died (no heartbeat, not yet expired): it goes.
    // (A live owner would register its node again within a heartbeat.)
    let dead = registry().await;
    let c = ServiceMetaInfo::new("users", "127.0.0.1", 7003);
    dead.register(c).await.unwrap();
    drop(dead);
    let node_c = "127.0.0.1:7003";
    events
        .until("change", |d| change_has(d, SERVICE, "added", node_c))
        .await;
    let gone = act(at, SERVICE, node_c, "deregister", Some(TOKEN), "").await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    events
        .until("change", |d| change_has(d, SERVICE, "removed", node_c))
        .await;
    assert!(node(at, SERVICE, node_c).await.is_none());

    // Bad input and unknown things.
    assert_eq!(
        act(at, SERVICE, "127.0.0.1:9", "deregister", Some(TOKEN), "")
            .await
            .status,
        404
    );
    assert_eq!(
        act(at, SERVICE, node_a, "explode", Some(TOKEN), "")
            .await
            .status,
        404
    );
    assert_eq!(
        act(at, "users", node_a, "disable", Some(TOKEN), "")
            .await
            .status,
        400
    );
    assert_eq!(
        act(at, SERVICE, "nohost", "disable", Some(TOKEN), "")
            .await
            .status,
        400
    );
    assert_eq!(get(at, "/api/services/nothing:1.0").await.status, 404);
    assert_eq!(get(at, "/api/nothing").await.status, 404);
    // A page of another site whose name was rebound to 127.0.0.1 names its own host.
    let rebound = support::request(
        at,
        "GET",
        "/api/services",
        &[("Host", "evil.example:80")],
        "",
    )
    .await;
    assert_eq!(rebound.status, 421, "{}", rebound.body);

    // A console without a token is read-only: 403 whatever is presented.
    let read_only = Console::start(registry().await, console_options(None))
        .await
        .unwrap();
    let ro = read_only.local_addr();
    assert_eq!(get(ro, "/api/overview").await.json()["actions"], false);
    let refused = act(ro, SERVICE, node_a, "disable", Some(TOKEN), "").await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    read_only.stop().await.unwrap();
    console.stop().await.unwrap();
    provider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_on_memory() {
    init_tracing();
    let store = MemoryStore::new();
    api_story("memory", || {
        let store = store.clone();
        async move { Registry::new(Arc::new(MemoryBackend::new(store)), options()).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_on_etcd() {
    init_tracing();
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    api_story("etcd", || {
        let connect = ConnectOptions::for_registry(endpoint.clone(), &options());
        async move {
            let backend = EtcdBackend::connect(&connect).await.unwrap();
            Registry::new(Arc::new(backend), options()).unwrap()
        }
    })
    .await;
}
