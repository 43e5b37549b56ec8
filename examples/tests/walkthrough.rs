//! The original notes' walkthrough, scripted, on a real etcd (and on ZooKeeper and Redis): a provider starts, a consumer
//! calls three times (1.5 s apart instead of 10 s), the provider is taken down before the
//! third round, the watch removes it from the consumer's cache, and the third call fails with
//! the no-provider error. Each step is asserted from the programs' own output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use registry_test_support::{free_port, EtcdServer, RedisServer, ZkServer};

fn spawn(bin: &str, dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "registry_core=info,rpc_runtime=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(what) {
                    return line;
                }
            }
            Err(_) => panic!("no line with {what:?}; output so far: {seen:#?}"),
        }
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    err
}

#[test]
fn on_etcd_provider_consumer_and_the_watch_taking_the_provider_out() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    walkthrough("etcd", &etcd.endpoint(), &|| {
        let out = etcd.etcdctl(&["get", "--prefix", "/rpc/UserService:1.0/"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    });
}

#[test]
fn on_zookeeper_provider_consumer_and_the_watch_taking_the_provider_out() {
    let zk = ZkServer::start_with_tick(200).unwrap_or_else(|e| panic!("{e}"));
    let address = zk.connect_string();
    walkthrough("zookeeper", &address, &|| {
        // The store's own view, through a plain ZooKeeper session.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = zookeeper_client::Client::connect(&address).await.unwrap();
            let dir = "/rpc/UserService:1.0";
            let Ok(children) = client.list_children(dir).await else {
                return String::new();
            };
            let mut out = String::new();
            for child in children {
                if let Ok((data, _)) = client.get_data(&format!("{dir}/{child}")).await {
                    out.push_str(&String::from_utf8_lossy(&data));
                }
            }
            out
        })
    });
}

#[test]
fn on_redis_provider_consumer_and_the_watch_taking_the_provider_out() {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    walkthrough("redis", &redis.url(), &|| {
        let index = redis
            .command("ZRANGE rpc-registry:index 0 -1")
            .unwrap_or_default();
        match index
            .lines()
            .find(|l| l.starts_with("/rpc/UserService:1.0/"))
        {
            Some(key) => redis.command(&format!("GET {key}")).unwrap_or_default(),
            None => String::new(),
        }
    });
}

/// The story on `registry` at `address`; `stored` reads the service's nodes from the store
/// with the store's own tool.
fn walkthrough(registry: &str, address: &str, stored: &dyn Fn() -> String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("rpc.toml"),
        format!(
            "[rpc]\nserverHost = \"127.0.0.1\"\nserverPort = {port}\ntolerantStrategy = \"failOver\"\n\
             [rpc.registryConfig]\nregistry = \"{registry}\"\naddress = \"{address}\"\nttl = 6\nheartbeatInterval = 2\n",
        ),
    )
    .unwrap();

    // 1. The provider starts and registers.
    let (mut provider, provider_out) = spawn(env!("CARGO_BIN_EXE_provider"), dir.path(), &[]);
    let mut provider_seen = Vec::new();
    let line = wait_for(&provider_out, &mut provider_seen, "serving on");
    assert!(
        line.contains(&format!("UserService:1.0 serving on 127.0.0.1:{port}"))
            && line.contains(&format!("{registry} registry")),
        "{line}"
    );
    let in_store = stored();
    assert!(
        in_store.contains(&format!("\"servicePort\":{port}")),
        "{in_store}"
    );

    // 2. The consumer calls three rounds, 1.5 s apart.
    let (mut consumer, consumer_out) = spawn(
        env!("CARGO_BIN_EXE_consumer"),
        dir.path(),
        &["--calls", "3", "--interval-ms", "1500"],
    );
    let mut seen = Vec::new();
    let node = format!("served by 127.0.0.1:{port}");
    let first = wait_for(&consumer_out, &mut seen, "round 1: getUser");
    assert!(
        first.contains(&node) && first.contains("nodes from the registry"),
        "{first}"
    );
    let line = wait_for(&consumer_out, &mut seen, "round 1: getNumber");
    assert!(
        line.contains("-> 1") && line.contains("nodes from the cache"),
        "{line}"
    );
    let line = wait_for(&consumer_out, &mut seen, "round 2: getUser");
    assert!(
        line.contains(&node) && line.contains("nodes from the cache"),
        "{line}"
    );
    wait_for(&consumer_out, &mut seen, "round 2: getNumber");

    // 3. The provider goes down before the third round: it deregisters and exits 0.
    let ok = Command::new("kill")
        .args(["-TERM", &provider.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for(&provider_out, &mut provider_seen, "provider: stopped");
    assert!(provider.wait().unwrap().success());
    assert!(
        !stored().contains("servicePort"),
        "deregistered from {registry}"
    );

    // 4. The third round fails with the no-provider error, and the consumer exits non-zero.
    let line = wait_for(&consumer_out, &mut seen, "round 3: getUser");
    assert!(
        line.contains(&format!(
            "failed: no provider for service UserService:1.0 (registry: {registry})"
        )),
        "{line}"
    );
    let status = consumer.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    // The watch took the node out, not a failed connection: nothing was evicted.
    let log = stderr_of(&mut consumer);
    assert!(!log.contains("evicted"), "{log}");
    assert!(!seen.iter().any(|l| l.contains("round 3: getNumber")));
}
