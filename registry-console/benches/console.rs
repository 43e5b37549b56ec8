//! The console in headless Chromium (over WebDriver) with 1,000 services and 10,000 nodes:
//! the services page's first paint, and the time from a store event to the page that shows
//! it. Quoted in BENCHMARKS.md.
//!
//! ```sh
//! cargo bench -p registry-console --bench console            # memory and etcd
//! cargo bench -p registry-console --bench console -- memory  # one store
//! ```
//!
//! First paint: from the navigation's start to the frame after the services table holds
//! every service (the page marks it; `performance.now()`), page loaded anew each round.
//! Event latency: from just before `Registry::register` of a new node (a store write, so
//! the store event is after it) to the page having received the change and drawn it
//! (`performance.timeOrigin + performance.now()`, corrected by the measured offset between
//! the page's clock and this process's), one event at a time, on the open services page
//! (the worst case: the whole 1,000-row table is drawn again).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, ClientBuilder};
use futures::StreamExt as _;
use registry_console::{Console, ConsoleOptions};
use registry_core::{
    ConnectOptions, MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo,
};
use registry_test_support::{ChromeDriver, EtcdServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// The console's registry, for the diagnostics of a change that does not arrive.
static DIAG_REGISTRY: std::sync::Mutex<Option<Registry>> = std::sync::Mutex::new(None);
const SERVICES: u16 = 1_000;
const NODES_PER_SERVICE: u16 = 10;
const PAINT_ROUNDS: usize = 10;
const EVENTS: usize = 100;

fn options() -> RegistryOptions {
    RegistryOptions::default()
        .with_ttl(Duration::from_secs(60))
        .with_heartbeat_interval(Duration::from_secs(20))
        .with_timeout(Duration::from_secs(10))
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

async fn browser(driver: &ChromeDriver) -> Client {
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": driver.browser(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
        }
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}\n{}", driver.log_tail()))
}

async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap()
}

/// Polls `script` until it returns something else than null.
async fn until(client: &Client, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = js(client, script).await;
        if !v.is_null() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {script}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "  {name}: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (n={})",
        percentile(&values, 0.5),
        percentile(&values, 0.9),
        values[values.len() - 1],
        values.len()
    );
}

/// `GET /api/events` over a plain socket (HTTP/1.0: the stream comes unframed).
async fn raw_events(address: std::net::SocketAddr) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /api/events HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut stream = BufReader::with_capacity(1 << 20, stream);
    // The snapshot first: a change made before the server subscribed this client is in it,
    // not in a later change event.
    let mut line = String::new();
    let mut in_snapshot = false;
    loop {
        line.clear();
        assert!(
            stream.read_line(&mut line).await.unwrap() > 0,
            "the stream ended"
        );
        if line.starts_with("event:") {
            in_snapshot = line.trim_end() == "event: snapshot";
        } else if in_snapshot && line.starts_with("data:") {
            return stream;
        }
    }
}

/// Reads lines until the next `change` event has been read whole (at most 20 s).
async fn next_change(
    stream: &mut BufReader<TcpStream>,
    console: std::net::SocketAddr,
    phase: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut in_change = false;
    let mut line = String::new();
    loop {
        line.clear();
        let Ok(read) = tokio::time::timeout_at(deadline, stream.read_line(&mut line)).await else {
            let mut s = TcpStream::connect(console).await.unwrap();
            s.write_all(b"GET /api/overview HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer)
                .await
                .unwrap();
            let registry = DIAG_REGISTRY.lock().unwrap().clone().unwrap();
            let cached = registry.cached("").map(|n| n.len());
            let mut fresh = registry.watch_all().await.unwrap();
            let now = fresh.next().await.map(|c| c.nodes.len());
            let store = registry.inspect(None).await.map(|n| n.len());
            panic!("no change event within 20 s ({phase}); overview: {answer}\nconsole registry root entry: {cached:?} nodes; a new watch_all: {now:?}; in the store: {store:?}");
        };
        let read = read.unwrap();
        assert!(read > 0, "the stream ended");
        if line.starts_with("event:") {
            in_change = line.trim_end() == "event: change";
        } else if in_change && line.starts_with("data:") {
            return;
        }
    }
}

async fn run(kind: &str, driver: &ChromeDriver, make: impl Fn() -> Registry) {
    println!(
        "== {kind}: {SERVICES} services, {} nodes",
        SERVICES * NODES_PER_SERVICE
    );
    let provider = make();
    let start = Instant::now();
    for s in 0..SERVICES {
        for n in 0..NODES_PER_SERVICE {
            let node = ServiceMetaInfo::new(format!("service-{s:04}"), "10.0.0.1", 10_000 + n)
                .with_metadata("zone", "eu-1");
            provider.register(node).await.unwrap();
        }
    }
    println!("  registered in {:.1} s", start.elapsed().as_secs_f64());
    let console_registry = make();
    *DIAG_REGISTRY.lock().unwrap() = Some(console_registry.clone());
    let console = Console::start(
        console_registry.clone(),
        ConsoleOptions::default()
            .with_listen("127.0.0.1:0".parse().unwrap())
            .with_store_address(kind),
    )
    .await
    .unwrap();
    let client = browser(driver).await;

    // First paint, page loaded anew each round.
    let (mut painted, mut snapshot, mut fcp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=PAINT_ROUNDS {
        client
            .goto(&format!("{}?round={round}", console.url()))
            .await
            .unwrap();
        let paint = until(
            &client,
            "return window.consoleStats && window.consoleStats.firstPaint;",
        )
        .await;
        let rows = js(
            &client,
            "return document.querySelectorAll('#services tbody tr').length;",
        )
        .await;
        assert_eq!(rows, u64::from(SERVICES), "every service drawn");
        if round == 0 {
            continue; // warm-up: the browser's first start
        }
        painted.push(paint.as_f64().unwrap());
        snapshot.push(
            js(&client, "return window.consoleStats.snapshotAt;")
                .await
                .as_f64()
                .unwrap(),
        );
        let first = js(&client, "const p = performance.getEntriesByName('first-contentful-paint'); return p.length ? p[0].startTime : null;").await;
        if let Some(f) = first.as_f64() {
            fcp.push(f);
        }
    }
    let bytes = js(&client, "const e = performance.getEntriesByName(location.origin + '/api/events'); return e.length ? e[0].transferSize : null;").await;
    println!("  services page, {PAINT_ROUNDS} loads (from navigation start):");
    summary("first contentful paint (header)", fcp);
    summary("snapshot received", snapshot);
    summary("table of every service painted", painted);
    if !bytes.is_null() {
        println!("  (snapshot stream transfer size so far: {bytes} bytes)");
    }

    // The page's clock against ours: the offset with the shortest round trip.
    let mut best = (f64::MAX, 0.0);
    for _ in 0..20 {
        let before = epoch_ms();
        let page = js(
            &client,
            "return performance.timeOrigin + performance.now();",
        )
        .await
        .as_f64()
        .unwrap();
        let after = epoch_ms();
        if after - before < best.0 {
            best = (after - before, page - (before + after) / 2.0);
        }
    }
    let offset = best.1;
    println!(
        "  page clock offset {offset:+.2} ms (round trip {:.2} ms)",
        best.0
    );

    // Store event -> the root subscription's next item (the registry's part, no console).
    let watcher = make();
    let mut all = watcher.watch_all().await.unwrap();
    all.next().await.unwrap();
    let mut root = Vec::new();
    for i in 0..EVENTS {
        let node = ServiceMetaInfo::new(
            format!("service-{:04}", i % 997),
            "10.0.0.4",
            40_000 + i as u16,
        );
        let t0 = Instant::now();
        provider.register(node.clone()).await.unwrap();
        all.next().await.unwrap();
        root.push(t0.elapsed().as_secs_f64() * 1000.0);
        provider.unregister(&node).await.unwrap();
        all.next().await.unwrap();
    }
    drop(all);
    watcher.shutdown().await.unwrap();
    println!("  store event -> Registry::watch_all item (no console), {EVENTS} events:");
    summary("received", root);

    // Store event -> the event stream, read by a plain client (no browser): the server's part.
    let mut stream = raw_events(console.local_addr()).await;
    let mut server = Vec::new();
    for i in 0..EVENTS {
        let node = ServiceMetaInfo::new(
            format!("service-{:04}", i % 997),
            "10.0.0.3",
            30_000 + i as u16,
        );
        let t0 = Instant::now();
        provider.register(node.clone()).await.unwrap();
        next_change(&mut stream, console.local_addr(), &format!("register {i}")).await;
        server.push(t0.elapsed().as_secs_f64() * 1000.0);
        provider.unregister(&node).await.unwrap();
        next_change(
            &mut stream,
            console.local_addr(),
            &format!("unregister {i}"),
        )
        .await;
    }
    drop(stream);
    println!("  store event -> event stream (plain client), {EVENTS} events:");
    summary("received", server);

    // Store event -> page, one at a time.
    let (mut received, mut rendered) = (Vec::new(), Vec::new());
    let mut extra = Vec::new();
    for i in 0..EVENTS {
        let last = js(
            &client,
            "const c = window.consoleStats.changes; return c.length ? c[c.length - 1].seq : 0;",
        )
        .await;
        let last = last.as_u64().unwrap_or(0);
        let t0 = epoch_ms();
        if i % 2 == 0 {
            let node = ServiceMetaInfo::new(
                format!("service-{:04}", i % 997),
                "10.0.0.2",
                20_000 + i as u16,
            );
            provider.register(node.clone()).await.unwrap();
            extra.push(node);
        } else {
            let node = extra.pop().unwrap();
            provider.unregister(&node).await.unwrap();
        }
        let script = format!("const c = window.consoleStats.changes.filter((x) => x.seq > {last}); return c.length ? c[0] : null;");
        let change = until(&client, &script).await;
        received.push(change["received"].as_f64().unwrap() - offset - t0);
        rendered.push(change["rendered"].as_f64().unwrap() - offset - t0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  store event -> open services page, {EVENTS} events:");
    summary("received by the page", received);
    summary("drawn", rendered);

    let _ = client.close().await;
    console.stop().await.unwrap();
    provider.shutdown().await.unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    registry_conformance::init_tracing();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |kind: &str| which.is_empty() || which.iter().any(|w| w == kind);
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e}"));
    if wants("memory") {
        let store = MemoryStore::new();
        run("memory", &driver, || {
            Registry::new(Arc::new(MemoryBackend::new(store.clone())), options()).unwrap()
        })
        .await;
    }
    if wants("etcd") {
        let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
        // Each registry its own client (lease), as separate processes would have.
        let endpoint = etcd.endpoint();
        let handle = tokio::runtime::Handle::current();
        run("etcd", &driver, || {
            let connect = ConnectOptions::for_registry(endpoint.clone(), &options());
            let backend = tokio::task::block_in_place(|| {
                handle.block_on(registry_etcd::EtcdBackend::connect(&connect))
            })
            .unwrap();
            Registry::new(Arc::new(backend), options()).unwrap()
        })
        .await;
    }
}
