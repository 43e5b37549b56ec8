//! `registryctl console` against a real etcd: it serves the nodes another `registryctl`
//! registered, refuses an action without the admin token (401) and does it with the token
//! from `REGISTRY_CONSOLE_TOKEN`, is read-only without one (403), and stops on SIGTERM.

#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use registry_test_support::{free_port, http_get, probe, EtcdServer};

const TOKEN: &str = "registryctl-console-test-token";

/// A background `registryctl`, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registryctl(endpoint: &str, args: &[&str], token: Option<&str>) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registryctl"));
    cmd.args(["--registry", "etcd", "--address", endpoint])
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("RUST_LOG")
        .env_remove("REGISTRY_CONSOLE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(token) = token {
        cmd.env("REGISTRY_CONSOLE_TOKEN", token);
    }
    Running(cmd.spawn().expect("spawn registryctl"))
}

/// Waits for the first stdout line that contains `text`.
fn wait_line(running: &mut Running, text: &str) -> String {
    let stdout = running.0.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(text) => return line,
            Some(Ok(_)) => {}
            other => panic!("registryctl ended before printing {text:?}: {other:?}"),
        }
    }
}

fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(port: u16, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\n\r\n");
    probe(port, request.as_bytes()).unwrap_or_default()
}

#[test]
fn console_serves_etcd_and_guards_its_actions() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let mut provider = registryctl(
        &endpoint,
        &["register", "users:1.0", "127.0.0.1:7301", "--ttl", "5"],
        None,
    );
    wait_line(&mut provider, "registered");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut console = registryctl(&endpoint, &["console", "--listen", &listen], Some(TOKEN));
    let started = wait_line(&mut console, "console at");
    assert!(
        started.contains(&format!("http://{listen}/")) && started.contains("admin token"),
        "{started}"
    );

    eventually("the console lists the node", || {
        http_get(port, "/api/services/users:1.0").is_some_and(|a| a.contains("127.0.0.1:7301"))
    });
    let overview = http_get(port, "/api/overview").unwrap();
    assert!(
        overview.contains(r#""kind":"etcd""#) && overview.contains(&endpoint),
        "{overview}"
    );
    let page = http_get(port, "/").unwrap();
    assert!(page.contains("<title>Registry console</title>"), "{page}");

    let action = "/api/services/users:1.0/nodes/127.0.0.1:7301/disable";
    let refused = post(port, action, None);
    assert!(
        refused.starts_with("HTTP/1.0 401") || refused.starts_with("HTTP/1.1 401"),
        "{refused}"
    );
    let done = post(port, action, Some(TOKEN));
    assert!(
        done.contains(" 200 ") && done.contains(r#""enabled":false"#),
        "{done}"
    );
    eventually("the node shows disabled", || {
        http_get(port, "/api/services/users:1.0").is_some_and(|a| a.contains(r#""enabled":false"#))
    });

    // Without a token: read-only.
    let ro_port = free_port();
    let ro_listen = format!("127.0.0.1:{ro_port}");
    let mut read_only = registryctl(&endpoint, &["console", "--listen", &ro_listen], None);
    assert!(wait_line(&mut read_only, "console at").contains("read-only"));
    let forbidden = post(
        ro_port,
        "/api/services/users:1.0/nodes/127.0.0.1:7301/enable",
        Some(TOKEN),
    );
    assert!(forbidden.contains(" 403 "), "{forbidden}");

    // SIGTERM stops it cleanly.
    let pid = console.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = console.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "registryctl console did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
