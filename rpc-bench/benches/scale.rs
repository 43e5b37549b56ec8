//! Scale, measured from outside, on each store (etcd, ZooKeeper, Redis) in one run, each
//! against its real server started by the test harness on loopback:
//!
//! 1. **Connections**: a consumer in its own process (this binary run again as a child)
//!    watches 1,000 services of 2 nodes each; its TCP connections to the store port are
//!    counted from outside (`/proc/<pid>/fd` and `/proc/net/tcp`).
//! 2. **Graceful deregistration -> listener**: `Registry::unregister` in this process until
//!    the watch of a consumer child yields the removal, timed with the system clock both
//!    processes share; two children at once (one watching 1 service, one watching 1,000),
//!    the same deregistrations timed for both.
//! 3. **Registration**: `--nodes` nodes (default 100,000) over `--node-services` services
//!    (100), `--in-flight` (64) registrations in flight, through one `Registry`, against the
//!    store's raw client doing the equivalent write at the same concurrency (etcd: a put with
//!    a lease, on one lease and spread over 16, and without a lease; ZooKeeper: an ephemeral
//!    create; Redis: a `SET`).
//! 4. **Consumer memory**: a consumer child discovers the `--node-services` services holding
//!    the registered nodes; the bytes it holds live after they are all cached, minus before,
//!    counted by a counting global allocator in the child, per node (and its RSS growth read
//!    from outside in `/proc/<pid>/status`).
//!
//! Every registration run (ours, and each raw writer) gets a fresh server; a run stops taking
//! new writes after `--max-secs` (180) and reports the rate over the writes done. Figures and
//! their reading: `BENCHMARKS.md`, "Scale (rpc-bench)".
//!
//! `cargo bench -p rpc-bench --bench scale` (`-- --stores etcd,zookeeper,redis --nodes N
//! --node-services S --services W --samples N --in-flight F --max-secs S`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

#[path = "support/redis_scripts.rs"]
mod redis_scripts;
use futures::{StreamExt, TryStreamExt};
use registry_conformance::measure::percentile;
use registry_core::{ConnectOptions, Registry, RegistryOptions, ServiceMetaInfo};
use registry_test_support::{EtcdServer, RedisServer, ZkServer};
use rpc_runtime::factory::BackendFactory;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------
// Live heap bytes, counted only in a consumer child (the parent never turns it on).

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------------------

/// Scale on each store: consumer connections, deregistration latency with 1,000 watched
/// services, registration throughput against the raw client, consumer memory per node.
#[derive(Debug, Parser)]
struct Args {
    /// Stores to measure, in this order.
    #[arg(
        long,
        alias = "store",
        value_delimiter = ',',
        default_value = "etcd,zookeeper,redis"
    )]
    stores: Vec<String>,
    /// Nodes registered for the throughput and memory parts.
    #[arg(long, default_value_t = 100_000)]
    nodes: u32,
    /// Services the `--nodes` nodes are spread over.
    #[arg(long, default_value_t = 100)]
    node_services: u32,
    /// Services (2 nodes each) the big consumer watches for the connection and latency parts.
    #[arg(long, default_value_t = 1000)]
    services: u32,
    /// Deregistration samples per store.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Registrations (and raw writes) in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// A registration run stops taking new writes after this many seconds (the rate is over
    /// the writes done).
    #[arg(long, default_value_t = 180)]
    max_secs: u64,
    /// TTL (s) of the raw etcd client's leases (no keep-alives: long enough for a capped run).
    #[arg(long, default_value_t = 3600)]
    raw_lease_ttl: i64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Set in a consumer child: `backend|address|mode|count|expected nodes`.
const CHILD_ENV: &str = "RPC_BENCH_SCALE_CONSUMER";
const PROBE: &str = "probe";

fn options() -> RegistryOptions {
    RegistryOptions::default()
}

async fn client(backend: &str, address: &str) -> Registry {
    let options = options();
    let store = BackendFactory::global()
        .connect(
            backend,
            ConnectOptions::for_registry(address, &options.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{backend}: {}", registry_core::error_chain(&e)));
    Registry::new(store, options).unwrap()
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.write_all(b"\n").unwrap();
    out.flush().unwrap();
}

fn scale_key(i: u32) -> String {
    format!("scale{i}:1.0")
}

fn mass_service(i: u32) -> String {
    format!("mass{i}")
}

/// The node `i` of `nodes` spread over `services` services (unique address per service).
fn mass_node(i: u32, services: u32) -> ServiceMetaInfo {
    let port = 10_000 + i / services;
    ServiceMetaInfo::new(
        mass_service(i % services),
        "127.0.0.1",
        u16::try_from(port).expect("too many nodes per service"),
    )
}

// ---------------------------------------------------------------------------------------
// The consumer child.

fn child_main(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [backend, address, mode, count, expected] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let count: u32 = count.parse().unwrap();
    let expected: usize = expected.parse().unwrap();
    // The parent closes our stdin (or dies): leave.
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let registry = client(backend, address).await;
        // Connected; warm the allocator's and the runtime's own structures first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        COUNTING.store(true, Ordering::SeqCst);
        let before = LIVE.load(Ordering::SeqCst);
        match mode {
            "watch" => {
                // `count` services watched: the probe first, then `count - 1` of the 2-node ones.
                let mut probe = registry.watch(&format!("{PROBE}:1.0")).await.unwrap();
                futures::stream::iter(0..count.saturating_sub(1))
                    .map(|i| {
                        let registry = &registry;
                        async move { registry.discover(&scale_key(i)).await.map(|n| n.len()) }
                    })
                    .buffer_unordered(64)
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap();
                let nodes: usize = registry
                    .cached_services()
                    .iter()
                    .map(|k| registry.cached(k).map_or(0, |n| n.len()))
                    .sum();
                let live = LIVE.load(Ordering::SeqCst) - before;
                say(&format!("ready {live} {nodes}"));
                while let Some(change) = probe.next().await {
                    let at = unix_nanos();
                    let present = change.nodes.iter().any(|n| n.service_port == 2);
                    let removed = change.diff.removed.iter().any(|n| n.service_port == 2);
                    say(&format!(
                        "ev {at} {} {}",
                        u8::from(present),
                        u8::from(removed)
                    ));
                }
            }
            "memory" => {
                futures::stream::iter(0..count)
                    .map(|i| {
                        let registry = &registry;
                        async move {
                            registry
                                .discover(&format!("{}:1.0", mass_service(i)))
                                .await
                                .map(|n| n.len())
                        }
                    })
                    .buffer_unordered(8)
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap();
                let started = Instant::now();
                let nodes = loop {
                    let nodes: usize = (0..count)
                        .map(|i| {
                            registry
                                .cached(&format!("{}:1.0", mass_service(i)))
                                .map_or(0, |n| n.len())
                        })
                        .sum();
                    if nodes >= expected || started.elapsed() > Duration::from_secs(60) {
                        break nodes;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                // Let listing buffers and tasks wind down.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let live = LIVE.load(Ordering::SeqCst) - before;
                say(&format!("ready {live} {nodes}"));
                std::future::pending::<()>().await;
            }
            other => panic!("unknown mode {other}"),
        }
    });
}

/// A consumer child and its stdout lines.
struct Consumer {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Consumer {
    fn spawn(backend: &str, address: &str, mode: &str, count: u32, expected: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(
                CHILD_ENV,
                format!("{backend}|{address}|{mode}|{count}|{expected}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Consumer { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(120), self.lines.recv())
            .await
            .expect("consumer child silent for 120 s")
            .expect("consumer child ended")
    }

    /// Waits for `ready LIVE NODES`.
    async fn ready(&mut self) -> (isize, usize) {
        loop {
            let line = self.line().await;
            let mut words = line.split(' ');
            if words.next() == Some("ready") {
                let live = words.next().unwrap().parse().unwrap();
                let nodes = words.next().unwrap().parse().unwrap();
                return (live, nodes);
            }
        }
    }

    /// Waits for a probe change where `want(present, removed)`; returns its time (ns).
    async fn event(&mut self, want: impl Fn(bool, bool) -> bool) -> u128 {
        loop {
            let line = self.line().await;
            let words: Vec<&str> = line.split(' ').collect();
            if let ["ev", at, present, removed] = words[..] {
                if want(present == "1", removed == "1") {
                    return at.parse().unwrap();
                }
            }
        }
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCP connections of process `pid` to `port` on the peer side, counted from outside.
fn store_connections(pid: u32, port: u16) -> usize {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let remote_port = cols[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 01: established.
            if remote_port == Some(port) && cols[3] == "01" && inodes.contains(cols[9]) {
                count += 1;
            }
        }
    }
    count
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

// ---------------------------------------------------------------------------------------
// The parent: what is measured per store.

#[derive(Debug, Default)]
struct Row {
    store: String,
    connections_1: usize,
    connections_many: usize,
    watch_live_per_service: f64,
    dereg_1: (Duration, Duration),
    dereg_many: (Duration, Duration),
    ours: Rate,
    raw: Vec<(String, Rate)>,
    memory_nodes: usize,
    memory_live: isize,
    memory_rss: u64,
    memory_connections: usize,
}

/// A registration run: overall rate and the rate of its first and last tenth.
#[derive(Debug, Default, Clone)]
struct Rate {
    /// Writes done (fewer than asked when the run hit `--max-secs`).
    count: u32,
    total: f64,
    first_tenth: f64,
    last_tenth: f64,
}

impl Rate {
    fn show(&self) -> String {
        format!(
            "{:.0}/s (first tenth {:.0}/s, last tenth {:.0}/s; {} writes)",
            self.total, self.first_tenth, self.last_tenth, self.count
        )
    }
}

/// Runs `write(i)` for `i` in `0..args.nodes`, `args.in_flight` at a time, timing the whole
/// and each tenth; no new write starts after `args.max_secs`.
async fn timed<F, Fut, E>(args: &Args, write: F) -> Rate
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Debug,
{
    let (n, in_flight, cap) = (
        args.nodes,
        args.in_flight,
        Duration::from_secs(args.max_secs),
    );
    let tenth = (n / 10).max(1);
    let started = Instant::now();
    let mut marks = Vec::new();
    let mut done = 0u32;
    let mut writes = futures::stream::iter(0..n)
        .take_while(|_| std::future::ready(started.elapsed() < cap))
        .map(&write)
        .buffered(in_flight);
    while let Some(result) = writes.next().await {
        result.unwrap();
        done += 1;
        if done % tenth == 0 {
            marks.push(started.elapsed());
        }
    }
    let total = started.elapsed();
    let per_sec = |count: u32, d: Duration| f64::from(count) / d.as_secs_f64();
    let first = marks.first().copied().unwrap_or(total);
    let last = if marks.len() >= 2 {
        marks[marks.len() - 1] - marks[marks.len() - 2]
    } else {
        total
    };
    Rate {
        count: done,
        total: per_sec(done, total),
        first_tenth: per_sec(tenth, first),
        last_tenth: per_sec(tenth, last),
    }
}

async fn connections_and_latency(
    row: &mut Row,
    backend: &str,
    address: &str,
    port: u16,
    args: &Args,
) {
    let provider = client(backend, address).await;
    // `services` services x 2 nodes (the probe service is one of the watched ones).
    futures::stream::iter(0..args.services.saturating_sub(1) * 2)
        .map(|i| {
            let provider = &provider;
            async move {
                let port = u16::try_from(1 + i % 2).unwrap();
                provider
                    .register(ServiceMetaInfo::new(
                        format!("scale{}", i / 2),
                        "127.0.0.1",
                        port,
                    ))
                    .await
            }
        })
        .buffer_unordered(args.in_flight)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    provider
        .register(ServiceMetaInfo::new(PROBE, "127.0.0.1", 1))
        .await
        .unwrap();
    let mut one = Consumer::spawn(backend, address, "watch", 1, 0);
    let mut many = Consumer::spawn(backend, address, "watch", args.services, 0);
    one.ready().await;
    let (live, nodes) = many.ready().await;
    row.watch_live_per_service = live as f64 / f64::from(args.services);
    row.connections_1 = store_connections(one.pid(), port);
    row.connections_many = store_connections(many.pid(), port);
    eprintln!(
        "{backend}: consumer watching {} services ({nodes} nodes): {} connections to the store; 1 service: {}",
        args.services, row.connections_many, row.connections_1
    );
    let node = ServiceMetaInfo::new(PROBE, "127.0.0.1", 2);
    let (mut t1, mut tm) = (Vec::new(), Vec::new());
    for _ in 0..args.samples {
        provider.register(node.clone()).await.unwrap();
        one.event(|present, _| present).await;
        many.event(|present, _| present).await;
        let started = unix_nanos();
        provider.unregister(&node).await.unwrap();
        let a = one.event(|_, removed| removed).await;
        let b = many.event(|_, removed| removed).await;
        let ns = |t: u128| Duration::from_nanos(u64::try_from(t.saturating_sub(started)).unwrap());
        t1.push(ns(a));
        tm.push(ns(b));
    }
    one.finish();
    many.finish();
    t1.sort();
    tm.sort();
    row.dereg_1 = (percentile(&t1, 0.5), percentile(&t1, 0.99));
    row.dereg_many = (percentile(&tm, 0.5), percentile(&tm, 0.99));
    provider.shutdown().await.unwrap();
}

async fn registration_and_memory(
    row: &mut Row,
    backend: &str,
    address: &str,
    port: u16,
    args: &Args,
) {
    let provider = client(backend, address).await;
    let services = args.node_services;
    row.ours = timed(args, |i| {
        let provider = &provider;
        async move { provider.register(mass_node(i, services)).await.map(drop) }
    })
    .await;
    eprintln!("{backend}: ours {}", row.ours.show());
    let mut consumer = Consumer::spawn(
        backend,
        address,
        "memory",
        services,
        row.ours.count as usize,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_before = rss_bytes(consumer.pid());
    let (live, nodes) = consumer.ready().await;
    row.memory_rss = rss_bytes(consumer.pid()).saturating_sub(rss_before);
    row.memory_live = live;
    row.memory_nodes = nodes;
    row.memory_connections = store_connections(consumer.pid(), port);
    consumer.finish();
    eprintln!(
        "{backend}: consumer of {nodes} nodes: {:.0} B/node live",
        live as f64 / nodes.max(1) as f64
    );
    provider.shutdown().await.unwrap();
}

/// The value a raw write stores: the JSON our registration writes for the same node.
fn raw_value(i: u32, services: u32) -> Vec<u8> {
    let mut node = mass_node(i, services);
    node.register_time = Some(SystemTime::now());
    serde_json::to_vec(&node).unwrap()
}

fn raw_key(i: u32, services: u32) -> String {
    format!(
        "/raw/{}:1.0/127.0.0.1:{}",
        mass_service(i % services),
        10_000 + i / services
    )
}

async fn raw_etcd(fresh: impl Fn() -> Store, args: &Args) -> Vec<(String, Rate)> {
    use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
    let services = args.node_services;
    let mut rates = Vec::new();
    // (leases, as a transaction like ours), each on a fresh server.
    for (leases, txn) in [(1usize, true), (1, false), (16, false), (0, false)] {
        let server = fresh();
        let client = Client::connect([server.address.as_str()], None)
            .await
            .unwrap();
        let mut ids = Vec::new();
        // Long enough for a capped run without keep-alives.
        for _ in 0..leases {
            ids.push(
                client
                    .clone()
                    .lease_grant(args.raw_lease_ttl, None)
                    .await
                    .unwrap()
                    .id(),
            );
        }
        let ids = &ids;
        let rate = timed(args, |i| {
            let mut c = client.clone();
            async move {
                let options = (!ids.is_empty())
                    .then(|| PutOptions::new().with_lease(ids[i as usize % ids.len()]));
                let (key, value) = (raw_key(i, services), raw_value(i, services));
                if txn {
                    // Our registration's write: put if no lease holds the key yet.
                    let put = Txn::new()
                        .when([Compare::lease(key.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.as_str(), value, options)]);
                    c.txn(put).await.map(drop)
                } else {
                    c.put(key, value, options).await.map(drop)
                }
            }
        })
        .await;
        let name = match (leases, txn) {
            (0, _) => "put without a lease".to_owned(),
            (1, false) => "put with a lease".to_owned(),
            (1, true) => "txn put with a lease (ours' write)".to_owned(),
            (n, _) => format!("put with a lease, over {n} leases"),
        };
        eprintln!("etcd raw {name}: {}", rate.show());
        rates.push((name, rate));
        drop(server);
    }
    rates
}

/// Raw creates of ephemeral nodes; with `watching`, the writer's session also holds a
/// persistent recursive watch over them, as a registering provider's does (it watches the
/// services it registers), so the server sends it one notification per create.
async fn raw_zookeeper(address: &str, args: &Args, watching: bool) -> Vec<(String, Rate)> {
    use zookeeper_client as zk;
    let client = zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(address)
        .await
        .unwrap();
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    let services = args.node_services;
    let _ = client.create("/raw", b"", &persistent).await;
    for s in 0..services {
        let _ = client
            .create(&format!("/raw/{}:1.0", mass_service(s)), b"", &persistent)
            .await;
    }
    let drain = if watching {
        let mut watcher = client
            .watch("/raw", zk::AddWatchMode::PersistentRecursive)
            .await
            .unwrap();
        Some(tokio::spawn(async move {
            while watcher.changed().await.event_type != zk::EventType::Session {}
        }))
    } else {
        None
    };
    let rate = timed(args, |i| {
        let client = &client;
        let ephemeral = &ephemeral;
        async move {
            let (key, value) = (raw_key(i, services), raw_value(i, services));
            client.create(&key, &value, ephemeral).await.map(drop)
        }
    })
    .await;
    let name = if watching {
        "create ephemeral, the writer watching its nodes (as a provider does)"
    } else {
        "create ephemeral"
    };
    eprintln!("zookeeper raw {name}: {}", rate.show());
    if let Some(drain) = drain {
        drain.abort();
    }
    // Closing the session deletes the ephemeral nodes.
    drop(client);
    vec![(name.to_owned(), rate)]
}

async fn raw_redis(address: &str, args: &Args) -> Vec<(String, Rate)> {
    let client = redis::Client::open(address).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let services = args.node_services;
    let rate = timed(args, |i| {
        let mut c = connection.clone();
        async move {
            redis::cmd("SET")
                .arg(raw_key(i, services))
                .arg(raw_value(i, services))
                .query_async::<()>(&mut c)
                .await
        }
    })
    .await;
    eprintln!("redis raw SET: {}", rate.show());
    // The least a watchable write needs: the value, a change-stream entry, an index entry.
    let script = redis::Script::new(
        "redis.call('SET', KEYS[1], ARGV[1]) \
         redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'put', 'key', KEYS[1], 'value', ARGV[1]) \
         redis.call('ZADD', KEYS[3], 0, KEYS[1])",
    );
    let script = &script;
    let minimal = timed(args, |i| {
        let mut c = connection.clone();
        async move {
            script
                .key(raw_key(i, services))
                .key("raw:changes")
                .key("raw:index")
                .arg(raw_value(i, services))
                .invoke_async::<()>(&mut c)
                .await
        }
    })
    .await;
    eprintln!("redis raw script SET+XADD+ZADD: {}", minimal.show());
    // Our own write, through the raw client: the registry's put script with the same keys'
    // shape, one lease, this server's replication id (as our client passes it).
    let put = &redis_scripts::put();
    let replid = &redis_scripts::replid(&mut connection.clone()).await;
    let same = timed(args, |i| {
        let mut c = connection.clone();
        async move {
            let mut put = put.prepare_invoke();
            redis_scripts::meta_keys(&mut put, "raw:changes");
            put.key(raw_key(i, services))
                .arg(raw_value(i, services))
                .arg(30_000)
                .arg(100_000)
                .arg("raw-1")
                .arg("raw-")
                .arg(replid)
                .invoke_async::<(redis::Value, String, String)>(&mut c)
                .await
                .map(|(_, status, _)| assert_eq!(status, "ok"))
        }
    })
    .await;
    eprintln!("redis raw client, our put script: {}", same.show());
    let mut c = connection.clone();
    for chunk in (0..args.nodes).collect::<Vec<_>>().chunks(1000) {
        let mut del = redis::cmd("DEL");
        for &i in chunk {
            del.arg(raw_key(i, services));
        }
        del.query_async::<()>(&mut c).await.unwrap();
    }
    redis::cmd("DEL")
        .arg("raw:changes")
        .arg("raw:index")
        .arg("raw:revision")
        .arg("raw:leases")
        .arg("raw:owners")
        .arg("rpc-registry:lease:raw-1")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    // Ours' write first: the summary compares with it (as etcd's with its transaction).
    vec![
        ("our put script (ours' write)".to_owned(), same),
        ("SET".to_owned(), rate),
        ("script: SET + XADD + ZADD".to_owned(), minimal),
    ]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A store server of the harness, and how a registry reaches it.
struct Store {
    _server: Box<dyn std::any::Any>,
    address: String,
    port: u16,
}

impl Store {
    fn start(store: &str) -> Self {
        match store {
            "etcd" => {
                let server = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
                let (address, port) = (server.endpoint(), server.port());
                Store {
                    _server: Box::new(server),
                    address,
                    port,
                }
            }
            "zookeeper" => {
                // Sized for the benchmark: 100,000 nodes do not fit the tests' 64 MiB heap
                // (registrations failed at about 88,000). tickTime 2 s: sessions up to 40 s.
                let server =
                    ZkServer::start_with_heap(2000, 1024).unwrap_or_else(|e| panic!("{e}"));
                let (address, port) = (server.connect_string(), server.port());
                Store {
                    _server: Box::new(server),
                    address,
                    port,
                }
            }
            "redis" => {
                let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
                let (address, port) = (server.url(), server.port());
                Store {
                    _server: Box::new(server),
                    address,
                    port,
                }
            }
            other => panic!("unknown store {other} (etcd, zookeeper, redis)"),
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    for store in &args.stores {
        let mut row = Row {
            store: store.clone(),
            ..Row::default()
        };
        let started = Instant::now();
        // Every registration run on a fresh server: etcd 3.4 stays slow for lease-attached
        // writes after a lease with many keys was revoked, so a run must not inherit the last.
        let fresh = || Store::start(store);
        runtime.block_on(async {
            let server = fresh();
            connections_and_latency(&mut row, store, &server.address, server.port, &args).await;
            drop(server);
            let server = fresh();
            registration_and_memory(&mut row, store, &server.address, server.port, &args).await;
            drop(server);
            row.raw = match store.as_str() {
                "etcd" => raw_etcd(fresh, &args).await,
                "zookeeper" => {
                    let mut rates = raw_zookeeper(&fresh().address, &args, false).await;
                    rates.extend(raw_zookeeper(&fresh().address, &args, true).await);
                    rates
                }
                _ => raw_redis(&fresh().address, &args).await,
            };
        });
        eprintln!("{store}: done in {:.0} s", started.elapsed().as_secs_f64());
        rows.push(row);
    }
    report(&args, &rows);
}

fn report(args: &Args, rows: &[Row]) {
    println!(
        "{} services x 2 nodes watched by one consumer child; {} deregistrations timed for a child watching 1 service and one watching {} at once",
        args.services, args.samples, args.services
    );
    println!(
        "registration: {} nodes over {} services, {} in flight, one client",
        args.nodes, args.node_services, args.in_flight
    );
    println!();
    println!(
        "| store | consumer connections, 1 / {w} watched | dereg -> listener p50 / p99, 1 watched | p50 / p99, {w} watched | p99 ratio | registration, ours | raw, ours' write | ours / raw | ours / the fastest raw write | consumer memory per node (live heap; RSS) |",
        w = args.services
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let raw = &row.raw[0].1;
        let (fastest_name, fastest) = row
            .raw
            .iter()
            .max_by(|a, b| a.1.total.total_cmp(&b.1.total))
            .map(|(n, r)| (n.as_str(), r.total))
            .unwrap_or(("none", f64::NAN));
        let nodes = row.memory_nodes.max(1) as f64;
        println!(
            "| {} | {} / {} | {} / {} | {} / {} | {:.2} | {:.0}/s | {:.0}/s ({}) | {:.2} | {:.2} ({}) | {:.0} B; {:.0} B ({} nodes, {} conn.) |",
            row.store,
            row.connections_1,
            row.connections_many,
            ms(row.dereg_1.0),
            ms(row.dereg_1.1),
            ms(row.dereg_many.0),
            ms(row.dereg_many.1),
            row.dereg_many.1.as_secs_f64() / row.dereg_1.1.as_secs_f64(),
            row.ours.total,
            raw.total,
            row.raw[0].0,
            row.ours.total / raw.total,
            row.ours.total / fastest,
            fastest_name,
            row.memory_live as f64 / nodes,
            row.memory_rss as f64 / nodes,
            row.memory_nodes,
            row.memory_connections,
        );
    }
    println!();
    println!("Registration rates, first and last tenth of the run:");
    println!();
    println!("| store | writer | overall | first tenth | last tenth |");
    println!("|---|---|---:|---:|---:|");
    for row in rows {
        let all = std::iter::once(("ours (Registry::register)".to_owned(), row.ours.clone()))
            .chain(row.raw.iter().map(|(n, r)| (format!("raw {n}"), r.clone())));
        for (name, rate) in all {
            println!(
                "| {} | {name} | {:.0}/s | {:.0}/s | {:.0}/s |",
                row.store, rate.total, rate.first_tenth, rate.last_tenth
            );
        }
    }
    println!();
    for row in rows {
        println!(
            "{}: a consumer watching {} services of 2 nodes holds {:.0} B live per watched service",
            row.store, args.services, row.watch_live_per_service
        );
    }
}
