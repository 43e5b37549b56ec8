//! `registryctl` as a user runs it: exit codes and messages. (Against real stores in
//! `stores.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn registryctl(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_registryctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run registryctl")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn unknown_backend_exits_2_listing_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = registryctl(dir.path(), &["--registry", "zookeper", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("unknown registry `zookeper`"), "{msg}");
    assert!(msg.contains("memory"), "{msg}");
}

#[test]
fn malformed_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rpc.toml"),
        "[rpc.registryConfig]\nregistry = \"memory\"\nttl = \"soon\"\n",
    )
    .unwrap();
    let out = registryctl(dir.path(), &["health"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("rpc.registryConfig.ttl"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = registryctl(
        dir.path(),
        &[
            "--registry",
            "memory",
            "register",
            "svc-without-version",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("name:version"), "{}", text(&out));
    let out = registryctl(
        dir.path(),
        &["--registry", "memory", "register", "svc:1.0", "no-port"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = registryctl(dir.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn health_and_list_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let out = registryctl(dir.path(), &["--registry", "memory", "health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ok: memory registry"), "{}", text(&out));
    let out = registryctl(dir.path(), &["--registry", "memory", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("(no nodes)"), "{}", text(&out));
    let out = registryctl(dir.path(), &["--registry", "memory", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn no_shared_registry_configured_exits_2_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    // No file at all, then an empty file: the memory registry would be a private empty store.
    for file in [None, Some("")] {
        if let Some(text) = file {
            std::fs::write(dir.path().join("rpc.toml"), text).unwrap();
        }
        let out = registryctl(dir.path(), &["list"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("no shared registry configured"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn huge_tiny_and_negative_ttls_exit_2_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for ttl in ["1e20", "1e300", "0.001", "0"] {
        let out = registryctl(
            dir.path(),
            &[
                "--registry",
                "memory",
                "register",
                "svc:1.0",
                "127.0.0.1:1",
                "--ttl",
                ttl,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "--ttl {ttl}: {}", text(&out));
        assert!(text(&out).contains("--ttl must be from"), "{}", text(&out));
    }
    for (var, value) in [
        ("RPC_REGISTRY_CONFIG_TTL", "1e300"),
        ("RPC_REGISTRY_CONFIG_TIMEOUT", "1e300"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_registryctl"))
            .args(["--registry", "memory", "health"])
            .current_dir(dir.path())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {}", text(&out));
    }
}

#[test]
fn bad_addresses_are_configuration_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (registry, address) in [
        ("etcd", ",,,"),
        ("etcd", "ftp://127.0.0.1:1"),
        ("etcd", "http://127.0.0.1:1,https://127.0.0.1:2"),
        ("redis", "not a url at all://"),
    ] {
        let out = registryctl(
            dir.path(),
            &["--registry", registry, "--address", address, "health"],
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{registry} {address}: {}",
            text(&out)
        );
    }
}

#[test]
fn passwords_in_addresses_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let port = registry_test_support::free_port();
    let address = format!("redis://:hunter2@127.0.0.1:{port}");
    let out = registryctl(
        dir.path(),
        &["--registry", "redis", "--address", &address, "health"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
    assert!(text(&out).contains(":***@"), "{}", text(&out));
}
