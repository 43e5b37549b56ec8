//! Any server registered: the `axum_service` example (an axum HTTP app registered with
//! `Registry::register_guard`) on a real etcd, as a real process. On SIGTERM it is
//! deregistered first, still answers while consumers notice (the grace), then stops.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use registry_test_support::{http_get, EtcdServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_service_is_deregistered_before_it_stops() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum_service"))
        .args(["--name", "hello-http", "--grace-ms", "1000"])
        .current_dir(dir.path())
        .env("RPC_REGISTRY_CONFIG_REGISTRY", "etcd")
        .env("RPC_REGISTRY_CONFIG_ADDRESS", etcd.endpoint())
        .env("RPC_SERVER_HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("axum_service printed READY").unwrap();
        if let Some(port) = line.strip_prefix("READY ") {
            break port.trim().parse().unwrap();
        }
    };
    let output = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let config = rpc_runtime::config::RpcConfig::default()
        .with_registry("etcd")
        .with_address(etcd.endpoint());
    let consumer = rpc_config::connect::connect_registry(&config.registry_config)
        .await
        .unwrap();
    let nodes = consumer.discover("hello-http:1.0").await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].service_port, port);
    assert_eq!(nodes[0].metadata["protocol"], "http");
    let answer = http_get(port, "/").unwrap();
    assert!(answer.contains(&format!("hello from {port}")), "{answer}");

    // SIGTERM: consumers see the node go while the server still answers, then it stops.
    let signalled = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    while consumer
        .cached("hello-http:1.0")
        .is_some_and(|nodes| !nodes.is_empty())
    {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "never deregistered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deregistered = signalled.elapsed();
    let answer = http_get(port, "/").expect("still serving during the grace");
    assert!(answer.contains("hello from"), "{answer}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "stopped after the grace"
    );
    assert!(http_get(port, "/").is_none(), "stopped");
    let output = output.join().unwrap();
    assert_eq!(
        output.last().map(String::as_str),
        Some("STOPPED"),
        "{output:?}"
    );
    println!("axum_service deregistered {deregistered:?} after SIGTERM, stopped after the grace");
    consumer.shutdown().await.unwrap();
}
