//! `make console-demo` serves the console over the demo's memory store: the page and the
//! services the demo registered, with their nodes and TTLs; read-only without a token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn console_demo_serves_the_demo_store() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_console_demo"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("REGISTRY_CONSOLE_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run console_demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains(&format!("console at http://127.0.0.1:{port}/")),
        "{first}"
    );
    assert!(lines.next().unwrap().unwrap().contains("read-only"));

    assert!(get(port, "/").contains("<title>Registry console</title>"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let services = loop {
        let services = get(port, "/api/services");
        if services.contains("payment-service:1.0") || Instant::now() > deadline {
            break services;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for key in [
        "user-service:1.0",
        "order-service:2.0:canary",
        "payment-service:1.0",
    ] {
        assert!(services.contains(key), "{key} missing: {services}");
    }
    let users = get(port, "/api/services/user-service:1.0");
    assert!(
        users.contains("127.0.0.1:9003") && users.contains("\"expiresAt\":1"),
        "{users}"
    );
    let overview = get(port, "/api/overview");
    assert!(
        overview.contains(r#""kind":"memory""#) && overview.contains(r#""actions":false"#),
        "{overview}"
    );

    let _ = child.kill();
    let _ = child.wait();
}
