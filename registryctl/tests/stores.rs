//! `registryctl` against real stores (etcd, ZooKeeper and Redis, started by the harness): register in a
//! background process, list with TTLs, watch the story, SIGTERM deregisters, health.

#![cfg(all(feature = "etcd", feature = "zookeeper", feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use registry_test_support::{EtcdServer, RedisServer, ZkServer};
use serde_json::Value;

/// `(registry name, address)` of a store.
type Store<'a> = (&'a str, &'a str);

fn command(store: Store<'_>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registryctl"));
    cmd.args(["--registry", store.0, "--address", store.1])
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("RUST_LOG");
    cmd
}

fn run(store: Store<'_>, args: &[&str]) -> Output {
    command(store, args).output().expect("run registryctl")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A background `registryctl` whose stdout lines arrive on a channel as they are printed.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    fn spawn(store: Store<'_>, args: &[&str]) -> Self {
        let mut child = command(store, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn registryctl");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `within`) until `count` lines seen so far satisfy `pred`.
    fn wait_lines(&mut self, within: Duration, count: usize, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + within;
        while self.seen.iter().filter(|l| pred(l)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "timed out after {within:?}; output so far: {:#?}",
                    self.seen
                ),
            }
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Drain what it printed last.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "registryctl did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn etcd_register_list_watch_and_sigterm_deregisters() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    register_list_watch_and_sigterm_deregisters(("etcd", &etcd.endpoint()));
}

#[test]
fn zookeeper_register_list_watch_and_sigterm_deregisters() {
    let zk = ZkServer::start_with_tick(200).unwrap_or_else(|e| panic!("{e}"));
    register_list_watch_and_sigterm_deregisters(("zookeeper", &zk.connect_string()));
}

#[test]
fn redis_register_list_watch_and_sigterm_deregisters() {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    register_list_watch_and_sigterm_deregisters(("redis", &redis.url()));
}

fn register_list_watch_and_sigterm_deregisters(address: Store<'_>) {
    let mut watch = Background::spawn(address, &["watch", "--json"]);
    let mut provider = Background::spawn(
        address,
        &[
            "register",
            "users:1.0",
            "127.0.0.1:7001",
            "127.0.0.1:7002",
            "--ttl",
            "6",
            "--metadata",
            "zone=a",
        ],
    );
    provider.wait_lines(Duration::from_secs(10), 2, |l| l.starts_with("registered"));
    assert!(
        provider.seen[0].contains("heartbeat every 2s"),
        "--ttl 6 alone gives a 2 s heartbeat: {:?}",
        provider.seen
    );

    // list --json: one object per node with every field.
    let out = run(address, &["list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let nodes = json_lines(&out);
    assert_eq!(nodes.len(), 2, "{}", text(&out));
    for n in &nodes {
        assert_eq!(n["service"], "users:1.0");
        assert_eq!(n["version"], "1.0");
        assert_eq!(n["group"], "default");
        assert_eq!(n["metadata"]["zone"], "a");
        assert!(n["weight"].is_number());
        let at = n["registeredAt"].as_str().unwrap();
        humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{e}: {at}"));
        // ZooKeeper cannot tell a node's time left (liveness is the session's): null.
        match n["ttlRemainingMs"].as_u64() {
            Some(ttl) => assert!(ttl > 0 && ttl <= 6_000, "remaining TTL {ttl} ms"),
            None => assert!(
                address.0 == "zookeeper" && n["ttlRemainingMs"].is_null(),
                "{n}"
            ),
        }
    }
    let mut addrs: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    addrs.sort();
    assert_eq!(addrs, ["127.0.0.1:7001", "127.0.0.1:7002"]);

    // Human output: a header and aligned columns, TTL in seconds.
    let out = run(address, &["list", "users:1.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let human = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 3, "{human}");
    assert!(lines[0].starts_with("SERVICE"), "{human}");
    let column = |line: &str, word: &str| line.find(word).unwrap_or(usize::MAX);
    let node_col = column(lines[0], "NODE");
    assert_eq!(column(lines[1], "127.0.0.1:700"), node_col, "{human}");
    assert_eq!(column(lines[2], "127.0.0.1:700"), node_col, "{human}");
    assert!(
        lines[1].contains("zone=a")
            && lines[1].split_whitespace().any(|w| {
                (w.ends_with('s') && w.trim_end_matches('s').parse::<f64>().is_ok())
                    || (address.0 == "zookeeper" && w == "-")
            }),
        "TTL in seconds: {human}"
    );

    // watch --json: the current nodes as `added` (whether they were there before the watch
    // started or arrived after).
    let is_event = |event: &'static str| {
        move |l: &str| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["event"] == event && v["service"] == "users:1.0")
        }
    };
    watch.wait_lines(Duration::from_secs(10), 2, is_event("added"));

    // disable: out of traffic, shown by list and watch, kept over the owner's heartbeats;
    // enable: back.
    let out = run(address, &["disable", "users:1.0", "127.0.0.1:7001"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("disabled"), "{}", text(&out));
    watch.wait_lines(Duration::from_secs(10), 1, is_event("updated"));
    std::thread::sleep(Duration::from_secs(3));
    let enabled_of = |out: &Output| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = json_lines(out)
            .iter()
            .map(|n| {
                (
                    n["node"].as_str().unwrap().to_owned(),
                    n["enabled"].as_bool().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let out = run(address, &["list", "--json"]);
    assert_eq!(
        enabled_of(&out),
        [
            ("127.0.0.1:7001".into(), false),
            ("127.0.0.1:7002".into(), true)
        ],
        "{}",
        text(&out)
    );
    let human = String::from_utf8_lossy(&run(address, &["list"]).stdout).to_string();
    assert!(
        human
            .lines()
            .any(|l| l.contains("127.0.0.1:7001") && l.contains(" disabled ")),
        "{human}"
    );
    let out = run(address, &["enable", "users:1.0", "127.0.0.1:7001"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(address, &["list", "--json"]);
    assert!(enabled_of(&out).iter().all(|(_, e)| *e), "{}", text(&out));
    let out = run(address, &["weight", "users:1.0", "127.0.0.1:7001", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // SIGTERM: the provider deregisters and exits 0; the watcher sees both removals.
    let status = provider.terminate();
    assert_eq!(status.code(), Some(0), "{:?}", provider.seen);
    assert!(provider.seen.iter().any(|l| l.contains("deregistered")));
    watch.wait_lines(Duration::from_secs(5), 2, is_event("removed"));
    for line in watch.seen.iter() {
        let v: Value = serde_json::from_str(line).unwrap();
        let at = v["at"].as_str().unwrap();
        assert!(
            at.len() == "2026-01-01T00:00:00.000Z".len(),
            "RFC 3339 with milliseconds: {at}"
        );
        humantime::parse_rfc3339(at).unwrap();
        assert!(v["node"].as_str().unwrap().starts_with("127.0.0.1:700"));
    }
    let out = run(address, &["list", "--json"]);
    assert!(json_lines(&out).is_empty(), "{}", text(&out));
    assert_eq!(watch.terminate().code(), Some(0));
}

#[test]
fn health_is_0_when_etcd_answers_and_1_when_it_does_not() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let address = ("etcd", endpoint.as_str());
    let out = run(address, &["health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ok: etcd registry"), "{}", text(&out));

    etcd.kill();
    let mut cmd = command(address, &["health"]);
    cmd.env("RPC_REGISTRY_CONFIG_TIMEOUT", "500");
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).trim().is_empty());
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn unknown_backend_lists_etcd_among_the_known_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_registryctl"))
        .args(["--registry", "etc", "list"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(
        msg.contains("etcd")
            && msg.contains("memory")
            && msg.contains("redis")
            && msg.contains("zookeeper"),
        "{msg}"
    );
}

/// `registryctl watch | head -1`: once the reader is gone, the next change ends the watch
/// quietly (exit 0), instead of running forever.
#[test]
fn watch_ends_quietly_when_its_reader_goes() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let address = ("etcd", endpoint.as_str());
    let mut watch = command(address, &["watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = Background::spawn(address, &["register", "a:1.0", "127.0.0.1:7101"]);
    first.wait_lines(Duration::from_secs(10), 1, |l| l.starts_with("registered"));
    let mut stdout = BufReader::new(watch.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("added"), "{line}");
    drop(stdout); // `head -1` exits
    let mut second = Background::spawn(address, &["register", "a:1.0", "127.0.0.1:7102"]);
    second.wait_lines(Duration::from_secs(10), 1, |l| l.starts_with("registered"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "watch kept running after its reader left"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("registryctl:"), "quietly: {stderr}");
}

/// A store that answers but refuses this client's writes fails `health` (it used to pass):
/// etcd with authentication on and no credentials given. `register` says the registration is
/// pending with the cause, not "registered".
#[test]
fn health_and_register_tell_when_writes_are_refused() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    for args in [
        vec!["user", "add", "root", "--new-user-password=rootpw"],
        vec!["auth", "enable"],
    ] {
        let out = etcd.etcdctl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let endpoint = etcd.endpoint();
    let address = ("etcd", endpoint.as_str());
    let out = run(address, &["health"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("writing under the root"),
        "{}",
        text(&out)
    );

    let mut provider = Background::spawn(address, &["register", "users:1.0", "127.0.0.1:7001"]);
    provider.wait_lines(Duration::from_secs(10), 1, |l| {
        l.starts_with("registration pending")
    });
    assert!(
        !provider.seen.iter().any(|l| l.starts_with("registered")),
        "{:?}",
        provider.seen
    );
}

/// `register` shows where each registration stands as it changes: lost while the store is
/// gone for longer than the TTL, live again once it is back.
#[test]
fn register_prints_the_registration_state_as_it_changes() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let address = ("etcd", endpoint.as_str());
    let mut provider = Background::spawn(
        address,
        &["register", "users:1.0", "127.0.0.1:7001", "--ttl", "2"],
    );
    provider.wait_lines(Duration::from_secs(10), 1, |l| l.starts_with("registered"));
    etcd.kill();
    provider.wait_lines(Duration::from_secs(15), 1, |l| {
        l == "registration users:1.0 127.0.0.1:7001: lost"
    });
    etcd.restart_wiped().unwrap_or_else(|e| panic!("{e}"));
    provider.wait_lines(Duration::from_secs(15), 1, |l| {
        l == "registration users:1.0 127.0.0.1:7001: live"
    });
    let out = run(address, &["list", "--json"]);
    assert_eq!(json_lines(&out).len(), 1, "{}", text(&out));
}

/// `--metrics-listen`: the registry's metrics in Prometheus format, scraped over HTTP.
#[test]
fn metrics_are_served_in_prometheus_format() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let address = ("etcd", endpoint.as_str());
    let port = registry_test_support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut provider = Background::spawn(
        address,
        &[
            "register",
            "users:1.0",
            "127.0.0.1:7001",
            "--ttl",
            "2",
            "--metrics-listen",
            &listen,
        ],
    );
    provider.wait_lines(Duration::from_secs(10), 1, |l| l.starts_with("registered"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = registry_test_support::http_get(port, "/metrics").unwrap_or_default();
        if body.contains("registry_heartbeats_total") {
            break body;
        }
        assert!(Instant::now() < deadline, "no heartbeat metric in: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for expected in [
        "registry_registered_nodes{backend=\"etcd\"} 1",
        "registry_register_total{backend=\"etcd\",outcome=\"ok\"} 1",
        "registry_heartbeats_total{backend=\"etcd\",outcome=\"ok\"}",
    ] {
        assert!(
            body.contains(expected),
            "`{expected}` missing from:\n{body}"
        );
    }
}
