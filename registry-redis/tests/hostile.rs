//! Hostile input in the registry's bookkeeping keys, written with plain Redis commands: a
//! stray change-stream entry with a huge id, a lost or junk revision counter, a bookkeeping
//! key of the wrong type. Writes go on (the counter is re-based) or are refused whole, and
//! watchers converge after at most a relist or two instead of relisting forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use registry_conformance::{addresses, default_options, eventually, svc, svc_addresses, Recorder};
use registry_core::{error_chain, BackendError, Liveness};
use support::counted;

/// Runs one command (arguments split on spaces) and returns its reply.
async fn redis<T: redis::FromRedisValue>(url: &str, command: &str) -> T {
    let mut conn = support::raw(url).await;
    let mut words = command.split(' ');
    let mut cmd = redis::cmd(words.next().unwrap());
    for word in words {
        cmd.arg(word);
    }
    cmd.query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"))
}

async fn counter(url: &str) -> Option<String> {
    redis(url, "GET rpc-registry:revision").await
}

/// What the store holds for a node: the key, its index entry, its owner (a lease) and its
/// place in that lease's node set.
async fn node_state(url: &str, key: &str) -> [bool; 4] {
    let owner = redis::<Option<String>>(url, &format!("HGET rpc-registry:owners {key}")).await;
    let attached = match &owner {
        Some(lease) => {
            redis::<bool>(url, &format!("SISMEMBER rpc-registry:lease:{lease} {key}")).await
        }
        None => false,
    };
    [
        redis::<bool>(url, &format!("EXISTS {key}")).await,
        redis::<Option<f64>>(url, &format!("ZSCORE rpc-registry:index {key}"))
            .await
            .is_some(),
        owner.is_some(),
        attached,
    ]
}

const ALL: [bool; 4] = [true; 4];
const NONE: [bool; 4] = [false; 4];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_entry_with_a_huge_id_neither_fails_writes_nor_makes_watchers_relist_forever() {
    // Writes go on above it: the counter is re-based to 1000000001.
    stray_entry("1000000000-1", 1, |_| 1_000_000_001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_entry_with_the_largest_id_restarts_the_stream_and_watchers_converge() {
    // No revision fits above it: the stream restarts, revisions go on from the counter, and
    // a watch that read the stray entry sees the revision go back (a second relist).
    let max = u64::MAX;
    stray_entry(&format!("{max}-{max}"), 2, |before| before + 1).await;
}

/// A provider registers and deregisters after a stray entry `id` was added to the change
/// stream (the counter then is `counter(before)`), a consumer's watch sees both, and each
/// client's watch relists at most `relists` times, none after converging.
async fn stray_entry(id: &str, relists: usize, counter_after: fn(u64) -> u64) {
    let server = support::start();
    let url = server.url();
    let options = default_options();
    let (provider, provider_relists) = counted(&url, options.clone()).await;
    let (consumer, consumer_relists) = counted(&url, options.clone()).await;
    provider.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&consumer, "svc:1.0").await, svc_addresses(&[1]));
    let recorder = Recorder::default();
    let _sub = consumer
        .subscribe("svc:1.0", recorder.listener())
        .await
        .unwrap();

    let before: u64 = counter(&url).await.unwrap().parse().unwrap();
    let reply: String = redis(&url, &format!("XADD rpc-registry:changes {id} op x")).await;
    assert_eq!(reply, id);
    // The watches read it (a reaping period is 200 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;

    provider.register(svc(2)).await.unwrap();
    assert_eq!(counter(&url).await, Some(counter_after(before).to_string()));
    // The cache, and the listener on its own task, see node 2 come and go.
    let sees = |ports: &'static [u16]| {
        let (consumer, recorder) = (&consumer, &recorder);
        move || async move {
            addresses(consumer, "svc:1.0").await == svc_addresses(ports)
                && recorder.current() == svc_addresses(ports)
        }
    };
    eventually(Duration::from_secs(5), "node 2 arrives", sees(&[1, 2])).await;
    provider.unregister(&svc(2)).await.unwrap();
    eventually(Duration::from_secs(5), "node 2 goes", sees(&[1])).await;
    let added: Vec<String> = recorder
        .changes()
        .iter()
        .flat_map(|c| c.diff.added.iter().map(|n| n.address()))
        .collect();
    assert!(added.contains(&"127.0.0.1:2".to_owned()), "{added:?}");
    assert!(recorder.removed().contains(&"127.0.0.1:2".to_owned()));

    // No watch keeps relisting.
    let count = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    let converged = (count(&provider_relists), count(&consumer_relists));
    assert!(
        converged.0 <= relists && converged.1 <= relists,
        "{converged:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    provider.register(svc(3)).await.unwrap();
    let took = eventually(Duration::from_secs(2), "node 3 arrives", || async {
        addresses(&consumer, "svc:1.0").await == svc_addresses(&[1, 3])
    })
    .await;
    println!("node 3 arrived after {took:?}; relists {converged:?}");
    assert_eq!(
        (count(&provider_relists), count(&consumer_relists)),
        converged,
        "relisted again after converging"
    );

    // A graceful stop deregisters.
    provider.shutdown().await.unwrap();
    eventually(Duration::from_secs(5), "the consumer sees none", || async {
        addresses(&consumer, "svc:1.0").await.is_empty()
    })
    .await;
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_revision_counter_is_rebased_and_watchers_converge() {
    let server = support::start();
    let url = server.url();
    let options = default_options();
    let (provider, provider_relists) = counted(&url, options.clone()).await;
    let (consumer, consumer_relists) = counted(&url, options.clone()).await;
    provider.register(svc(1)).await.unwrap();
    provider.register(svc(2)).await.unwrap();
    assert_eq!(
        addresses(&consumer, "svc:1.0").await,
        svc_addresses(&[1, 2])
    );
    let before: u64 = counter(&url).await.unwrap().parse().unwrap();

    let _: i64 = redis(&url, "DEL rpc-registry:revision").await;
    // Several reaping periods: the store's revision is the stream's, so nothing went back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let relists = || {
        (
            provider_relists.load(Ordering::Relaxed),
            consumer_relists.load(Ordering::Relaxed),
        )
    };
    assert_eq!(relists(), (0, 0));
    // A client that lists now starts from the stream's revision.
    let late = support::target(&url).registry(options.clone()).await;
    assert_eq!(addresses(&late, "svc:1.0").await, svc_addresses(&[1, 2]));

    provider.register(svc(3)).await.unwrap();
    // Re-based right after the stream's last entry: the revisions go on without a gap.
    assert_eq!(counter(&url).await, Some((before + 1).to_string()));
    provider.unregister(&svc(1)).await.unwrap();
    for registry in [&consumer, &late] {
        eventually(Duration::from_secs(5), "watchers converge", || async {
            addresses(registry, "svc:1.0").await == svc_addresses(&[2, 3])
        })
        .await;
    }
    assert_eq!(relists(), (0, 0));
    for registry in [provider, consumer, late] {
        registry.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_write_the_store_refuses_leaves_nothing_half_applied() {
    let server = support::start();
    let url = server.url();
    let options = default_options();
    let backend = server.target().backend(&options).await;
    let key = format!("{}svc:1.0/127.0.0.1:1", options.keys.root());
    let ttl = Duration::from_secs(2);
    backend
        .put("/elsewhere/svc:1.0/127.0.0.1:9", b"x", ttl)
        .await
        .unwrap();
    let revision = counter(&url).await;

    // The change stream's key holds a string: writes are refused before they write anything.
    let _: () = redis(&url, "DEL rpc-registry:changes").await;
    let _: () = redis(&url, "SET rpc-registry:changes junk").await;
    let err = backend.put(&key, b"v1", ttl).await.unwrap_err();
    assert!(matches!(err, BackendError::Request { .. }), "{err}");
    let chain = error_chain(&err);
    assert!(
        chain.contains("rpc-registry:changes holds a string"),
        "{chain}"
    );
    assert_eq!(node_state(&url, &key).await, NONE);
    assert_eq!(counter(&url).await, revision);

    let _: () = redis(&url, "DEL rpc-registry:changes").await;
    // The same for each bookkeeping key a put reads before its first write.
    for bookkeeping in [
        "rpc-registry:owners",
        "rpc-registry:index",
        "rpc-registry:leases",
    ] {
        let _: () = redis(&url, &format!("RENAME {bookkeeping} aside")).await;
        let _: () = redis(&url, &format!("SET {bookkeeping} junk")).await;
        let err = backend.put(&key, b"v1", ttl).await.unwrap_err();
        let chain = error_chain(&err);
        assert!(
            chain.contains(&format!("{bookkeeping} holds a string")),
            "{chain}"
        );
        let _: () = redis(&url, &format!("RENAME aside {bookkeeping}")).await;
        assert_eq!(node_state(&url, &key).await, NONE, "{bookkeeping}");
        assert_eq!(counter(&url).await, revision, "{bookkeeping}");
    }
    backend.put(&key, b"v1", ttl).await.unwrap();
    assert_eq!(node_state(&url, &key).await, ALL);

    // A refused delete or close keeps the node whole.
    let _: () = redis(&url, "SET rpc-registry:changes junk").await;
    backend.delete(&key).await.unwrap_err();
    backend.close(std::slice::from_ref(&key)).await.unwrap_err();
    assert_eq!(node_state(&url, &key).await, ALL);
    let _: () = redis(&url, "DEL rpc-registry:changes").await;

    // A node key deleted behind the registry's back (a bare DEL records nothing): the
    // heartbeat reports it missing, told by client tracking, and the put records it again.
    backend.put(&key, b"v1", ttl).await.unwrap();
    let keys = std::slice::from_ref(&key);
    assert_eq!(
        backend.keep_alive(keys, ttl).await.unwrap(),
        Liveness::Alive { missing: vec![] }
    );
    let _: i64 = redis(&url, &format!("DEL {key}")).await;
    let deleted = std::time::Instant::now();
    loop {
        // The invalidation is pushed on the tracking connection: a beat or two later.
        match backend.keep_alive(keys, ttl).await.unwrap() {
            Liveness::Alive { missing } if missing == keys => break,
            Liveness::Alive { missing } if missing.is_empty() => {}
            other => panic!("{other:?}"),
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(3),
            "never reported missing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node_state(&url, &key).await, [false, true, true, true]);
    backend.put(&key, b"v1", ttl).await.unwrap();
    assert_eq!(node_state(&url, &key).await, ALL);
    let recorded: Vec<(String, Vec<(String, String)>)> =
        redis(&url, "XRANGE rpc-registry:changes - +").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].1[0], ("op".into(), "put".into()));

    // An indexed key of another type is skipped by a listing, not an error.
    backend.put(&key, b"v2", ttl).await.unwrap();
    let junk = format!("{}svc:1.0/127.0.0.1:7", options.keys.root());
    let _: i64 = redis(&url, &format!("ZADD rpc-registry:index 0 {junk}")).await;
    let _: i64 = redis(&url, &format!("HSET {junk} a b")).await;
    let listing = backend.list(options.keys.root()).await.unwrap();
    let keys: Vec<&str> = listing.entries.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, [key.as_str()]);
}

#[tokio::test]
async fn writes_go_on_whatever_the_stream_and_the_counter_hold() {
    let server = support::start();
    let url = server.url();
    let options = default_options();
    let backend = server.target().backend(&options).await;
    let key = format!("{}svc:1.0/127.0.0.1:1", options.keys.root());
    let ttl = Duration::from_secs(2);
    let url = &url;
    // A counter that holds junk before the stream has any entry.
    let _: () = redis(url, "SET rpc-registry:revision junk").await;
    let last_id = || async {
        let top: Vec<(String, Vec<(String, String)>)> =
            redis(url, "XREVRANGE rpc-registry:changes + - COUNT 1").await;
        top[0].0.clone()
    };
    let mut value = 0;
    let mut put = || {
        value += 1;
        let (backend, key) = (&backend, &key);
        async move {
            backend
                .put(key, format!("v{value}").as_bytes(), ttl)
                .await
                .unwrap();
            assert_eq!(node_state(url, key).await, ALL);
        }
    };
    put().await;
    assert_eq!(counter(url).await.as_deref(), Some("1"));

    // A stray entry above the counter.
    let _: String = redis(url, "XADD rpc-registry:changes 1000000000-1 op x").await;
    put().await;
    assert_eq!(counter(url).await.as_deref(), Some("1000000001"));
    assert_eq!(last_id().await, "1000000001-1");

    // A stray entry deleted again: the stream still refuses ids up to it.
    let _: String = redis(url, "XADD rpc-registry:changes 2000000000-7 op x").await;
    let _: i64 = redis(url, "XDEL rpc-registry:changes 2000000000-7").await;
    put().await;
    assert_eq!(counter(url).await.as_deref(), Some("2000000001"));

    // A counter that holds junk, or another type.
    let _: () = redis(url, "SET rpc-registry:revision 12abc").await;
    put().await;
    assert_eq!(counter(url).await.as_deref(), Some("2000000002"));
    let _: () = redis(url, "DEL rpc-registry:revision").await;
    let _: i64 = redis(url, "HSET rpc-registry:revision a b").await;
    put().await;
    assert_eq!(counter(url).await.as_deref(), Some("2000000003"));

    // The largest id a stream can hold: nothing fits above it, the stream restarts.
    let max = u64::MAX;
    let _: String = redis(url, &format!("XADD rpc-registry:changes {max}-{max} op x")).await;
    backend.delete(&key).await.unwrap();
    assert_eq!(node_state(url, &key).await, NONE);
    assert_eq!(counter(url).await.as_deref(), Some("2000000004"));
    assert_eq!(last_id().await, "2000000004-1");
    assert_eq!(redis::<u64>(url, "XLEN rpc-registry:changes").await, 1);
    put().await;
    assert_eq!(last_id().await, "2000000005-1");
}
