//! The three store backends side by side, each against its real server started by the test
//! harness on loopback, through the same factory the runtime uses:
//!
//! 1. graceful deregistration -> a watcher in another client sees the removal (p50, p99),
//!    against the store's raw client doing the least that carries the same news, samples
//!    interleaved in the same run: etcd-client delete -> another client's watch event;
//!    zookeeper-client delete of an ephemeral node -> another session's persistent recursive
//!    watch event; Redis `XADD` -> `XREAD BLOCK` on another connection;
//!    Ours is also split where the store acknowledges the delete: what follows (store event
//!    -> our watch -> cache -> listener) is the notification path alone, while the part
//!    before is the delete itself, which is an owner-checked delete (etcd: a transaction
//!    comparing the lease; ZooKeeper: a delete at the version the writer's own create left,
//!    the node's owner read first only when that is not known; Redis: one script) where the
//!    raw client deletes blindly. Two more raw samples join each
//!    round: the raw client making our owner-checked write, and making it from a client that
//!    also watches the keys it writes, as our provider watches its own service (the store
//!    then does the same work for both: the owner check and one more watcher to notify);
//! 2. time to register 2,000 nodes (20 services x 100, 64 in flight) and see all of them in
//!    a consumer's cache.
//!
//! `cargo bench -p rpc-bench --bench backends` (`-- --samples N --stores etcd,zookeeper,redis`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use clap::Parser;

#[path = "support/redis_scripts.rs"]
mod redis_scripts;
#[path = "support/stores.rs"]
mod stores;
use registry_conformance::measure::{self, percentile, Deregistration};
use stores::{client, Stores};

/// The store backends side by side, each against its real server on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Deregistration samples per store.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Only these stores (comma-separated: etcd, zookeeper, redis).
    #[arg(long, value_delimiter = ',')]
    stores: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the raw client writes in one sample.
#[derive(Clone, Copy)]
enum Write {
    /// The least that carries the news (the baseline).
    Plain,
    /// Our owner-checked write.
    Ours,
    /// Our owner-checked write, by a writer that also watches the keys it writes (as our
    /// provider watches its own service): the same work for the store as ours.
    OursWatched,
}

impl Write {
    /// The key (Redis: the stream) this kind of sample writes to.
    fn key(self) -> &'static str {
        match self {
            Write::Plain | Write::Ours => RAW_KEY,
            Write::OursWatched => OWN_KEY,
        }
    }
}

/// The store's raw client: the least that carries a removal from one client to another, or
/// our owner-checked write, with or without the writer watching its own keys.
#[allow(clippy::large_enum_variant)] // one per store, never moved around
enum Raw {
    Etcd {
        writer: etcd_client::Client,
        /// The other client's watch, read in a task of its own: the kinds of the events of
        /// each response, stamped on arrival.
        news: News<Vec<etcd_client::EventType>>,
        _watcher: etcd_client::Client,
        lease: i64,
        /// The writer's watch of its own keys (under `OWN_PREFIX`), drained.
        _own: DropGuard,
    },
    Zk {
        writer: zookeeper_client::Client,
        /// The other session's watch, read in a task of its own.
        news: News<zookeeper_client::EventType>,
        _watching: zookeeper_client::Client,
        _own: DropGuard,
    },
    Redis {
        writer: redis::aio::MultiplexedConnection,
        read: tokio::sync::mpsc::UnboundedReceiver<Instant>,
        /// News of the stream our scripts write to (`SAME_STREAM`).
        read_same: tokio::sync::mpsc::UnboundedReceiver<Instant>,
        /// News of `OWN_STREAM`, which the writer's client also reads (on a connection of its
        /// own, as ours does).
        read_own: tokio::sync::mpsc::UnboundedReceiver<Instant>,
        _own: tokio::sync::mpsc::UnboundedReceiver<Instant>,
        put: redis::Script,
        delete: redis::Script,
        replid: String,
    },
}

/// The stream the raw client's runs of our scripts write to.
const SAME_STREAM: &str = "rawbench:same";
/// The same, for the writer that reads it too.
const OWN_STREAM: &str = "rawbench:own";

/// A watch read in a task of its own, each item stamped on arrival ([`measure::stamped`]).
type News<T> = tokio::sync::mpsc::UnboundedReceiver<(Instant, T)>;

/// When the first item `matches` arrived.
async fn first<T>(news: &mut News<T>, matches: impl Fn(&T) -> bool) -> Instant {
    loop {
        let (at, item) = news.recv().await.expect("watch open");
        if matches(&item) {
            return at;
        }
    }
}

/// Aborts a background task on drop.
struct DropGuard(tokio::task::JoinHandle<()>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads `stream` from its end on a connection of its own; each entry's arrival time goes to
/// the receiver.
async fn stream_reader(
    client: &redis::Client,
    stream: &'static str,
) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut reader = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let (tx, read) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut last = "$".to_owned();
        loop {
            let read: redis::RedisResult<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(0)
                .arg("STREAMS")
                .arg(stream)
                .arg(&last)
                .query_async(&mut reader)
                .await;
            // The server stops at the end of the run.
            let Ok(reply) = read else { return };
            let now = Instant::now();
            for key in reply.keys {
                for id in key.ids {
                    last = id.id;
                    if tx.send(now).is_err() {
                        return;
                    }
                }
            }
        }
    });
    read
}

const RAW_KEY: &str = "/rawbench/node";
/// Under the other client's watch too.
const OWN_PREFIX: &str = "/rawbench/own";
const OWN_KEY: &str = "/rawbench/own/node";

impl Raw {
    async fn connect(backend: &str, address: &str) -> Raw {
        match backend {
            "etcd" => {
                let writer = etcd_client::Client::connect([address], None).await.unwrap();
                let mut watcher = etcd_client::Client::connect([address], None).await.unwrap();
                let watch = watcher
                    .watch(
                        "/rawbench/",
                        Some(etcd_client::WatchOptions::new().with_prefix()),
                    )
                    .await
                    .unwrap();
                let lease = writer.clone().lease_grant(600, None).await.unwrap().id();
                let mut own = writer
                    .clone()
                    .watch(
                        OWN_PREFIX,
                        Some(etcd_client::WatchOptions::new().with_prefix()),
                    )
                    .await
                    .unwrap();
                let own =
                    tokio::spawn(async move { while let Ok(Some(_)) = own.message().await {} });
                // (The watch fails when the server stops at the end of the run.)
                let news = measure::stamped(futures::StreamExt::filter_map(watch, |response| {
                    std::future::ready(response.ok().map(|r| {
                        r.events()
                            .iter()
                            .map(|e| e.event_type())
                            .collect::<Vec<_>>()
                    }))
                }));
                Raw::Etcd {
                    writer,
                    news,
                    _watcher: watcher,
                    lease,
                    _own: DropGuard(own),
                }
            }
            "zookeeper" => {
                use zookeeper_client as zk;
                let writer = zk::Client::connect(address).await.unwrap();
                let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                match writer.create("/rawbench", b"", &open).await {
                    Ok(_) | Err(zk::Error::NodeExists) => {}
                    Err(e) => panic!("{e}"),
                }
                match writer.create(OWN_PREFIX, b"", &open).await {
                    Ok(_) | Err(zk::Error::NodeExists) => {}
                    Err(e) => panic!("{e}"),
                }
                let watching = zk::Client::connect(address).await.unwrap();
                let watcher = watching
                    .watch("/rawbench", zk::AddWatchMode::PersistentRecursive)
                    .await
                    .unwrap();
                // (Read no further after a terminal session state: `changed` would panic.)
                let news = measure::stamped(futures::stream::unfold(watcher, |mut w| async {
                    let event = w.changed().await;
                    (!event.session_state.is_terminated()).then_some((event.event_type, w))
                }));
                let mut own = writer
                    .watch(OWN_PREFIX, zk::AddWatchMode::PersistentRecursive)
                    .await
                    .unwrap();
                let own = tokio::spawn(async move {
                    while !own.changed().await.session_state.is_terminated() {}
                });
                Raw::Zk {
                    writer,
                    news,
                    _watching: watching,
                    _own: DropGuard(own),
                }
            }
            "redis" => {
                let client = redis::Client::open(address).unwrap();
                let mut writer = client.get_multiplexed_async_connection().await.unwrap();
                let read = stream_reader(&client, "rawbench").await;
                let read_same = stream_reader(&client, SAME_STREAM).await;
                let read_own = stream_reader(&client, OWN_STREAM).await;
                let own = stream_reader(&client, OWN_STREAM).await;
                let replid = redis_scripts::replid(&mut writer).await;
                // The readers block before the first sample.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Raw::Redis {
                    writer,
                    read,
                    read_same,
                    read_own,
                    _own: own,
                    put: redis_scripts::put(),
                    delete: redis_scripts::delete(),
                    replid,
                }
            }
            other => panic!("unknown store {other}"),
        }
    }

    /// One sample, from the write's start: until the store acknowledged it, and until the
    /// other client's news. Each waits [`measure::SETTLE`] after the creation was seen, as ours
    /// does.
    async fn sample(&mut self, write: Write) -> (Duration, Duration) {
        let same = !matches!(write, Write::Plain);
        let key = write.key();
        match self {
            Raw::Etcd {
                writer,
                news,
                lease,
                ..
            } => {
                use etcd_client::EventType;
                use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
                async fn wait(news: &mut News<Vec<EventType>>, kind: EventType) -> Instant {
                    first(news, |kinds| kinds.contains(&kind)).await
                }
                let options = same.then(|| PutOptions::new().with_lease(*lease));
                writer.put(key, "x", options).await.unwrap();
                wait(news, EventType::Put).await;
                tokio::time::sleep(measure::SETTLE).await;
                let started = Instant::now();
                if same {
                    // Ours: delete only while the key is bound to this client's lease.
                    let txn = Txn::new()
                        .when([Compare::lease(key, CompareOp::Equal, *lease)])
                        .and_then([TxnOp::delete(key, None)]);
                    writer.txn(txn).await.unwrap();
                } else {
                    writer.delete(key, None).await.unwrap();
                }
                let acknowledged = started.elapsed();
                let seen = wait(news, EventType::Delete).await;
                (acknowledged, seen.saturating_duration_since(started))
            }
            Raw::Zk { writer, news, .. } => {
                use zookeeper_client as zk;
                async fn wait(news: &mut News<zk::EventType>, kind: zk::EventType) -> Instant {
                    first(news, |k| *k == kind).await
                }
                let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
                let (created, _) = writer.create(key, b"x", &ephemeral).await.unwrap();
                wait(news, zk::EventType::NodeCreated).await;
                tokio::time::sleep(measure::SETTLE).await;
                let started = Instant::now();
                if same {
                    // Ours: the node this session created, deleted at the version its
                    // create left.
                    writer.delete(key, Some(created.version)).await.unwrap();
                } else {
                    writer.delete(key, None).await.unwrap();
                }
                let acknowledged = started.elapsed();
                let seen = wait(news, zk::EventType::NodeDeleted).await;
                (acknowledged, seen.saturating_duration_since(started))
            }
            Raw::Redis {
                writer,
                read_same,
                read_own,
                put,
                delete,
                replid,
                ..
            } if same => {
                // Ours: the put script, then (timed) the owner-checked delete script.
                let (stream, read_same) = match write {
                    Write::OursWatched => (OWN_STREAM, read_own),
                    _ => (SAME_STREAM, read_same),
                };
                let mut invocation = put.prepare_invoke();
                redis_scripts::meta_keys(&mut invocation, stream);
                let _: redis::Value = invocation
                    .key(key)
                    .arg("x")
                    .arg(60_000)
                    .arg(1000)
                    .arg("raw-1")
                    .arg("raw-")
                    .arg(&*replid)
                    .invoke_async(writer)
                    .await
                    .unwrap();
                read_same.recv().await.expect("reader alive");
                tokio::time::sleep(measure::SETTLE).await;
                let started = Instant::now();
                let mut invocation = delete.prepare_invoke();
                redis_scripts::meta_keys(&mut invocation, stream);
                let _: redis::Value = invocation
                    .key(key)
                    .arg(1000)
                    .arg("raw-1")
                    .arg("raw-")
                    .arg("0")
                    .arg(60_000)
                    .arg(&*replid)
                    .invoke_async(writer)
                    .await
                    .unwrap();
                let acknowledged = started.elapsed();
                let seen = read_same.recv().await.expect("reader alive");
                (acknowledged, seen.saturating_duration_since(started))
            }
            Raw::Redis { writer, read, .. } => {
                let started = Instant::now();
                let _: String = redis::cmd("XADD")
                    .arg("rawbench")
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(1000)
                    .arg("*")
                    .arg("op")
                    .arg("del")
                    .arg("key")
                    .arg(RAW_KEY)
                    .query_async(writer)
                    .await
                    .unwrap();
                let acknowledged = started.elapsed();
                let seen = read.recv().await.expect("reader alive");
                (acknowledged, seen.saturating_duration_since(started))
            }
        }
    }
}

/// p50 and p99.
type Pcts = (Duration, Duration);

fn pcts(mut samples: Vec<Duration>) -> Pcts {
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// The percentiles of one store's deregistration samples.
struct Dereg {
    /// Ours, end to end.
    ours: Pcts,
    /// Ours, until the store acknowledged the delete.
    ours_ack: Pcts,
    /// Ours, from the store's acknowledgement to the listener.
    notified: Pcts,
    /// The raw client, end to end.
    raw: Pcts,
    /// The raw client, until the store acknowledged the write.
    raw_ack: Pcts,
    /// The raw client, from the store's acknowledgement to the other client's news.
    raw_notified: Pcts,
    /// The raw client making our owner-checked write, end to end.
    same: Pcts,
    /// The same, until the store acknowledged it.
    same_ack: Pcts,
    /// Our write by a raw writer that watches its own keys, end to end.
    watched: Pcts,
    /// The same, until the store acknowledged it.
    watched_ack: Pcts,
}

/// Ours and raw, samples interleaved, each split at the store's acknowledgement.
async fn deregistration(backend: &str, address: &str, samples: usize) -> Dereg {
    let mut probe = Deregistration::new(
        client(backend, address).await,
        client(backend, address).await,
    )
    .await;
    let mut raw_probe = Raw::connect(backend, address).await;
    let mut ours = Vec::with_capacity(samples);
    let mut ours_ack = Vec::with_capacity(samples);
    let mut notified = Vec::with_capacity(samples);
    let mut raw = Vec::with_capacity(samples);
    let mut raw_ack = Vec::with_capacity(samples);
    let mut raw_notified = Vec::with_capacity(samples);
    let mut same = Vec::with_capacity(samples);
    let mut same_ack = Vec::with_capacity(samples);
    let mut watched = Vec::with_capacity(samples);
    let mut watched_ack = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (acknowledged, seen) = probe.sample_parts().await;
        ours.push(seen);
        ours_ack.push(acknowledged);
        notified.push(seen.saturating_sub(acknowledged));
        let (acknowledged, seen) = raw_probe.sample(Write::Ours).await;
        same.push(seen);
        same_ack.push(acknowledged);
        let (acknowledged, seen) = raw_probe.sample(Write::OursWatched).await;
        watched.push(seen);
        watched_ack.push(acknowledged);
        let (acknowledged, seen) = raw_probe.sample(Write::Plain).await;
        raw.push(seen);
        raw_ack.push(acknowledged);
        // (The watcher may have the news before the writer has the store's answer.)
        raw_notified.push(seen.saturating_sub(acknowledged));
    }
    probe.finish().await;
    Dereg {
        ours: pcts(ours),
        ours_ack: pcts(ours_ack),
        notified: pcts(notified),
        raw: pcts(raw),
        raw_ack: pcts(raw_ack),
        raw_notified: pcts(raw_notified),
        same: pcts(same),
        same_ack: pcts(same_ack),
        watched: pcts(watched),
        watched_ack: pcts(watched_ack),
    }
}

async fn mass(backend: &str, address: &str) -> (Duration, Duration) {
    let provider = client(backend, address).await;
    let consumer = client(backend, address).await;
    let times = measure::mass_registration(&provider, &consumer, 20, 2000).await;
    provider.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    times
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args = Args::parse();
    let samples = args.samples;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let servers = Stores::start();
    let stores = servers.addresses();
    let mut rows = Vec::new();
    runtime.block_on(async {
        for (backend, address) in &stores {
            if !args.stores.is_empty() && !args.stores.iter().any(|s| s == backend) {
                continue;
            }
            let dereg = deregistration(backend, address, samples).await;
            let (registered, seen) = mass(backend, address).await;
            eprintln!("{backend}: done");
            rows.push((backend, dereg, registered, seen));
        }
    });
    println!(
        "deregistration -> watcher in another client: {samples} samples per store, ours and the raw client's interleaved"
    );
    println!(
        "2,000 nodes: 20 services x 100, 64 registrations in flight, consumer already watching"
    );
    println!();
    println!(
        "| store | dereg -> watcher p50 | p99 | raw client p50 | raw p99 | overhead p50 | overhead p99 | ours, store ack -> listener p50 | p99 | 2,000 registered | all in the consumer's cache |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    let over = |a: Duration, b: Duration| {
        let d = a.as_secs_f64() - b.as_secs_f64();
        format!("{:+.0} µs", d * 1e6)
    };
    for (backend, d, registered, seen) in &rows {
        let ((o50, o99), (n50, n99), (r50, r99)) = (d.ours, d.notified, d.raw);
        println!(
            "| {backend} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            us(o50),
            us(o99),
            us(r50),
            us(r99),
            over(o50, r50),
            over(o99, r99),
            us(n50),
            us(n99),
            ms(*registered),
            ms(*seen)
        );
    }
    println!();
    println!("Each split at the store's acknowledgement of the write, p50 / p99:");
    println!();
    println!(
        "| store | ours: start -> ack | raw: start -> ack | ours: ack -> listener | raw: ack -> watcher |"
    );
    println!("|---|---:|---:|---:|---:|");
    let both = |(a, b): Pcts| format!("{} / {}", us(a), us(b));
    for (backend, d, _, _) in &rows {
        println!(
            "| {backend} | {} | {} | {} | {} |",
            both(d.ours_ack),
            both(d.raw_ack),
            both(d.notified),
            both(d.raw_notified)
        );
    }
    for (title, name, other) in [
        (
            "Against the raw client making our owner-checked write (etcd: a transaction comparing the lease; ZooKeeper: a delete at the version its create left; Redis: our delete script and our stream)",
            "raw, our write",
            (|d: &Dereg| (d.same, d.same_ack)) as fn(&Dereg) -> (Pcts, Pcts),
        ),
        (
            "Against the raw client making our write with a writer that also watches the keys it writes, as our provider watches its own service (the same work for the store as ours)",
            "raw, our write, watched",
            |d: &Dereg| (d.watched, d.watched_ack),
        ),
    ] {
        println!();
        println!("{title}, p50 / p99:");
        println!();
        println!("| store | ours | {name} | overhead | ours: start -> ack | {name}: start -> ack |");
        println!("|---|---:|---:|---:|---:|---:|");
        for (backend, d, _, _) in &rows {
            let ((o50, o99), ((s50, s99), other_ack)) = (d.ours, other(d));
            println!(
                "| {backend} | {} | {} | {} / {} | {} | {} |",
                both(d.ours),
                both((s50, s99)),
                over(o50, s50),
                over(o99, s99),
                both(d.ours_ack),
                both(other_ack)
            );
        }
    }
}
