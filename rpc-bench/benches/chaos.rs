//! Every fault scenario of each store's high-availability setup, measured from outside while
//! RPC calls flow, for `RELIABILITY.md`: time until every node is back in the store, time a
//! consumer served stale nodes, calls failed during the fault (the consumer's tolerant
//! strategy is `failOver`), nodes lost at the end (must be 0); and a convergence run under
//! random faults. Prints Markdown tables.
//!
//! `make chaos`, or `cargo bench -p rpc-bench --bench chaos -- [--store etcd|zookeeper|redis]
//! [--converge-secs S]`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng as _;
use registry_conformance::{
    converge_under_faults, default_options, survive, ConvergeReport, ConvergeRun, HaReport, Target,
};
use registry_core::RegistryOptions;
use registry_test_support::{EtcdCluster, RedisSentinel, Server, ZkEnsemble};
use rpc_bench::{EchoClient, EchoImpl, EchoServer, Message};
use rpc_runtime::config::{RpcConfig, TolerantStrategyKind};
use rpc_runtime::consumer::{Consumer, ConsumerOptions};
use rpc_runtime::fault::TolerantStrategy;
use rpc_runtime::provider::{Provider, RunningProvider};

/// Fault scenarios on each store's HA setup.
#[derive(Debug, Parser)]
struct Args {
    /// Only this store (etcd, zookeeper, redis); all by default.
    #[arg(long)]
    store: Option<String>,
    /// Seconds of the convergence run under random faults, per store.
    #[arg(long, default_value_t = 30)]
    converge_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// RPC calls flowing to two providers registered in the store under test.
struct Load {
    providers: Vec<RunningProvider>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    callers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(target: &Target, options: &RegistryOptions) -> Self {
        let mut providers = Vec::new();
        for _ in 0..2 {
            let registry = target.registry(options.clone()).await;
            providers.push(
                Provider::new(RpcConfig::default().with_server_port(0))
                    .with_registry(registry)
                    .with_service(EchoServer::new(EchoImpl))
                    .start()
                    .await
                    .unwrap(),
            );
        }
        let consumer = Consumer::new(
            target.registry(options.clone()).await,
            ConsumerOptions::default()
                .with_tolerant(TolerantStrategy::from(TolerantStrategyKind::FailOver))
                .with_timeout(Duration::from_secs(2)),
        );
        let client = EchoClient::new(consumer);
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let callers = (0..8)
            .map(|_| {
                let (client, stop, ok, failed) =
                    (client.clone(), stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let message = Message {
                            text: "chaos".into(),
                            n: 1,
                        };
                        match client.echo(message).await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load {
            providers,
            stop,
            ok,
            failed,
            callers,
        }
    }

    /// Stops the calls; returns (ok, failed).
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.callers {
            c.await.unwrap();
        }
        for p in self.providers {
            let _ = p.shutdown().await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// One row of the reliability table.
struct Row {
    store: &'static str,
    scenario: &'static str,
    report: HaReport,
    calls_ok: u64,
    calls_failed: u64,
}

fn print_rows(rows: &[Row]) {
    println!("| store | scenario | nodes back after | consumer stale for | fewest nodes served | calls ok / failed | nodes lost |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} s | {} of {} | {} / {} | {} |",
            r.store,
            r.scenario,
            if r.report.back_after == Duration::MAX {
                // The store answers no one until the fault is healed (no quorum).
                "after the heal".to_owned()
            } else {
                format!("{:.2} s", r.report.back_after.as_secs_f64())
            },
            r.report.stale_for.as_secs_f64(),
            r.report.consumer_min,
            r.report.nodes,
            r.calls_ok,
            r.calls_failed,
            r.report.lost_at_end,
        );
    }
}

fn print_converge(store: &str, report: &ConvergeReport) {
    println!(
        "| {store} | {} | {} | {} | {} | {:.2} s |",
        report.operations,
        report.failed_operations,
        report.faults,
        report.wanted,
        report.converged_after.as_secs_f64()
    );
}

/// A scenario: a fault (run on a blocking thread) and how it is healed.
type Fault = Box<dyn FnOnce() + Send>;

async fn scenario(
    store: &'static str,
    name: &'static str,
    target: &Target,
    options: RegistryOptions,
    recovery: Duration,
    inject: Fault,
    heal: Fault,
) -> Row {
    let load = Load::start(target, &options).await;
    // Calls flow for a moment before the fault.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = survive(target, options, 3, inject, recovery, heal).await;
    let (calls_ok, calls_failed) = load.finish().await;
    eprintln!("{store} / {name}: {report:?}, calls {calls_ok} ok {calls_failed} failed");
    Row {
        store,
        scenario: name,
        report,
        calls_ok,
        calls_failed,
    }
}

/// One of the 3 members of `setup` SIGKILLed or SIGSTOPped at random; returns the heal (a
/// restart or a resume), for a convergence run.
fn random_member_fault<C, M>(setup: &Arc<Mutex<C>>, member: fn(&mut C, usize) -> &mut M) -> Fault
where
    C: Send + 'static,
    M: std::ops::DerefMut<Target = Server> + 'static,
{
    let index = rand::rng().random_range(0..3);
    let pause = rand::rng().random_bool(0.5);
    {
        let mut s = setup.lock().unwrap();
        let server: &mut Server = member(&mut s, index);
        if pause {
            server.pause();
        } else {
            server.kill();
        }
    }
    let setup = Arc::clone(setup);
    Box::new(move || {
        let mut s = setup.lock().unwrap();
        let server: &mut Server = member(&mut s, index);
        if pause {
            server.resume();
        } else {
            server.restart().unwrap();
        }
    })
}

fn etcd_target(address: &str) -> Target {
    Target::new(address, |options| async move {
        registry_etcd::EtcdBackend::connect(&options).await
    })
}

async fn etcd(converge_secs: u64) -> (Vec<Row>, ConvergeReport) {
    let options = default_options();
    let recovery = options.ttl * 2 + Duration::from_secs(3);
    let mut rows = Vec::new();
    for (name, leader, pause) in [
        ("leader SIGKILL", true, false),
        ("follower SIGKILL", false, false),
        ("the clients' member SIGSTOP beyond the TTL", false, true),
    ] {
        let cluster = Arc::new(Mutex::new(EtcdCluster::start().unwrap()));
        let target = etcd_target(&cluster.lock().unwrap().endpoints());
        let victim = {
            let c = cluster.lock().unwrap();
            let l = c.leader_index().unwrap();
            if pause {
                0
            } else if leader {
                l
            } else {
                (l + 1) % 3
            }
        };
        let (c1, c2) = (cluster.clone(), cluster.clone());
        let paused_at = Arc::new(Mutex::new(Instant::now()));
        let (p1, p2) = (paused_at.clone(), paused_at);
        let pause_for = options.ttl + options.ttl / 2;
        let inject: Fault = Box::new(move || {
            let mut c = c1.lock().unwrap();
            if pause {
                c.member_mut(victim).pause();
                *p1.lock().unwrap() = Instant::now();
            } else {
                c.member_mut(victim).kill();
            }
        });
        let heal: Fault = Box::new(move || {
            if pause {
                let since = *p2.lock().unwrap();
                std::thread::sleep(pause_for.saturating_sub(since.elapsed()));
                c2.lock().unwrap().member_mut(victim).resume();
            } else {
                c2.lock().unwrap().member_mut(victim).restart().unwrap();
            }
        });
        rows.push(
            scenario(
                "etcd (3 members)",
                name,
                &target,
                options.clone().with_timeout(Duration::from_secs(3)),
                recovery,
                inject,
                heal,
            )
            .await,
        );
    }
    let cluster = Arc::new(Mutex::new(EtcdCluster::start().unwrap()));
    let target = etcd_target(&cluster.lock().unwrap().endpoints());
    let run = ConvergeRun {
        clients: 4,
        consumers: 2,
        run_for: Duration::from_secs(converge_secs),
        fault_every: Duration::from_secs(2),
        converge_within: options.ttl * 3 + Duration::from_secs(10),
    };
    let converge = converge_under_faults(&target, options, run, move |_| {
        random_member_fault(&cluster, EtcdCluster::member_mut)
    })
    .await;
    (rows, converge)
}

fn zk_target(address: &str) -> Target {
    Target::new(address, |options| async move {
        registry_zookeeper::ZkBackend::connect(&options).await
    })
}

/// What happens to one ZooKeeper scenario's servers.
#[derive(Clone, Copy)]
enum ZkFault {
    KillLeader,
    KillFollower,
    /// The leader and a follower down for twice the session timeout.
    MajorityDown,
    /// The leader SIGSTOPped for 1.5 session timeouts.
    PauseLeader,
}

async fn zookeeper(converge_secs: u64) -> (Vec<Row>, ConvergeReport) {
    let options = default_options();
    let recovery = options.ttl * 5 + Duration::from_secs(5);
    let mut rows = Vec::new();
    for (name, fault) in [
        ("leader SIGKILL", ZkFault::KillLeader),
        ("follower SIGKILL", ZkFault::KillFollower),
        (
            "leader SIGSTOP beyond the session timeout",
            ZkFault::PauseLeader,
        ),
        (
            "2 of 3 down beyond the session timeout",
            ZkFault::MajorityDown,
        ),
    ] {
        let ensemble = Arc::new(Mutex::new(ZkEnsemble::start().unwrap()));
        let target = zk_target(&ensemble.lock().unwrap().connect_string());
        let leader = ensemble.lock().unwrap().leader_index().unwrap();
        let victims: Vec<usize> = match fault {
            ZkFault::KillLeader | ZkFault::PauseLeader => vec![leader],
            ZkFault::KillFollower => vec![(leader + 1) % 3],
            ZkFault::MajorityDown => vec![leader, (leader + 1) % 3],
        };
        let (e1, e2) = (ensemble.clone(), ensemble.clone());
        let (v1, v2) = (victims.clone(), victims);
        let down_for = options.ttl + options.ttl / 2;
        let inject: Fault = Box::new(move || {
            let mut e = e1.lock().unwrap();
            for &v in &v1 {
                match fault {
                    ZkFault::PauseLeader => e.member_mut(v).pause(),
                    _ => e.member_mut(v).kill(),
                }
            }
        });
        let heal: Fault = Box::new(move || {
            if matches!(fault, ZkFault::PauseLeader | ZkFault::MajorityDown) {
                std::thread::sleep(down_for);
            }
            let mut e = e2.lock().unwrap();
            for &v in &v2 {
                match fault {
                    ZkFault::PauseLeader => e.member_mut(v).resume(),
                    _ => e.member_mut(v).restart().unwrap(),
                }
            }
        });
        rows.push(
            scenario(
                "ZooKeeper (3 servers)",
                name,
                &target,
                options.clone(),
                recovery,
                inject,
                heal,
            )
            .await,
        );
    }
    let ensemble = Arc::new(Mutex::new(ZkEnsemble::start().unwrap()));
    let target = zk_target(&ensemble.lock().unwrap().connect_string());
    let run = ConvergeRun {
        clients: 4,
        consumers: 2,
        run_for: Duration::from_secs(converge_secs),
        fault_every: Duration::from_secs(2),
        converge_within: options.ttl * 5 + Duration::from_secs(10),
    };
    let converge = converge_under_faults(&target, options, run, move |_| {
        random_member_fault(&ensemble, ZkEnsemble::member_mut)
    })
    .await;
    (rows, converge)
}

fn redis_target(address: &str) -> Target {
    Target::new(address, |options| async move {
        registry_redis::RedisBackend::connect(&options).await
    })
}

/// What happens to one Redis scenario's servers.
#[derive(Clone, Copy)]
enum RedisFault {
    /// The primary SIGKILLed; the Sentinels promote the replica; the old primary comes back
    /// as a replica.
    KillPrimary,
    /// The replica SIGKILLed and restarted: no failover.
    KillReplica,
    /// The primary SIGSTOPped until the Sentinels promoted the replica and 1.5 TTLs passed,
    /// then resumed (the Sentinels turn it into a replica).
    PausePrimary,
}

/// Inflicts `fault` on `setup`; returns what the heal needs (the victim's index).
fn redis_inject(setup: &Mutex<RedisSentinel>, fault: RedisFault) -> usize {
    let mut s = setup.lock().unwrap();
    let primary = s.wait_for_primary(None, Duration::from_secs(10)).unwrap();
    let victim = match fault {
        RedisFault::KillReplica => 1 - primary,
        _ => primary,
    };
    match fault {
        RedisFault::PausePrimary => s.node_mut(victim).pause(),
        _ => s.node_mut(victim).kill(),
    }
    if !matches!(fault, RedisFault::KillReplica) {
        s.wait_for_primary(Some(victim), Duration::from_secs(30))
            .unwrap();
    }
    victim
}

fn redis_heal(setup: &Mutex<RedisSentinel>, fault: RedisFault, victim: usize) {
    let mut s = setup.lock().unwrap();
    match fault {
        RedisFault::PausePrimary => s.node_mut(victim).resume(),
        _ => s.restart_as_replica(victim).unwrap(),
    }
}

async fn redis(converge_secs: u64) -> (Vec<Row>, ConvergeReport) {
    let options = default_options();
    // The Sentinels take about 2 s to promote the replica; then a heartbeat or a retry.
    let recovery = options.ttl * 2 + Duration::from_secs(4);
    let mut rows = Vec::new();
    for (name, fault) in [
        ("primary SIGKILL (failover)", RedisFault::KillPrimary),
        ("replica SIGKILL", RedisFault::KillReplica),
        (
            "primary SIGSTOP beyond the TTL (failover, old primary resumed)",
            RedisFault::PausePrimary,
        ),
    ] {
        let setup = Arc::new(Mutex::new(RedisSentinel::start().unwrap()));
        let target = redis_target(&setup.lock().unwrap().address());
        let victim = Arc::new(Mutex::new(0));
        let (s1, s2, v1, v2) = (setup.clone(), setup.clone(), victim.clone(), victim);
        let pause_for = options.ttl + options.ttl / 2;
        let inject: Fault = Box::new(move || {
            *v1.lock().unwrap() = redis_inject(&s1, fault);
        });
        let heal: Fault = Box::new(move || {
            if matches!(fault, RedisFault::PausePrimary) {
                std::thread::sleep(pause_for);
            }
            redis_heal(&s2, fault, *v2.lock().unwrap());
        });
        rows.push(
            scenario(
                "Redis (primary + replica + 3 Sentinels)",
                name,
                &target,
                options.clone(),
                recovery,
                inject,
                heal,
            )
            .await,
        );
        let s = setup.lock().unwrap();
        for i in 0..2 {
            eprintln!("  Redis node {i} at the end: role {:?}", s.node(i).role());
        }
    }
    let setup = Arc::new(Mutex::new(RedisSentinel::start().unwrap()));
    let target = redis_target(&setup.lock().unwrap().address());
    let run = ConvergeRun {
        clients: 4,
        consumers: 2,
        run_for: Duration::from_secs(converge_secs),
        // A failover takes seconds: one fault every 8 s.
        fault_every: Duration::from_secs(8),
        converge_within: options.ttl * 3 + Duration::from_secs(10),
    };
    let converge = converge_under_faults(&target, options, run, move |_| {
        let fault = if rand::rng().random_bool(0.5) {
            RedisFault::KillPrimary
        } else {
            RedisFault::KillReplica
        };
        let victim = redis_inject(&setup, fault);
        let setup = setup.clone();
        Box::new(move || redis_heal(&setup, fault, victim))
    })
    .await;
    (rows, converge)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let wants = |store: &str| args.store.as_deref().is_none_or(|s| s == store);
    let mut rows = Vec::new();
    let mut converged = Vec::new();
    if wants("etcd") {
        let (r, c) = etcd(args.converge_secs).await;
        rows.extend(r);
        converged.push(("etcd (3 members)", c));
    }
    if wants("zookeeper") {
        let (r, c) = zookeeper(args.converge_secs).await;
        rows.extend(r);
        converged.push(("ZooKeeper (3 servers)", c));
    }
    if wants("redis") {
        let (r, c) = redis(args.converge_secs).await;
        rows.extend(r);
        converged.push(("Redis (primary + replica + 3 Sentinels)", c));
    }
    println!();
    print_rows(&rows);
    println!();
    println!("| store | operations | refused at the time | faults | nodes wanted at the end | converged after the last fault |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (store, report) in &converged {
        print_converge(store, report);
    }
}
