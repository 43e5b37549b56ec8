//! `registryctl` as a user runs it: exit codes and messages. (Against a real etcd in
//! `registryctl_etcd.rs`.)

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
        &["register", "svc-without-version", "127.0.0.1:1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("name:version"), "{}", text(&out));
    let out = registryctl(dir.path(), &["register", "svc:1.0", "no-port"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = registryctl(dir.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn health_and_list_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let out = registryctl(dir.path(), &["health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ok: memory registry"), "{}", text(&out));
    let out = registryctl(dir.path(), &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("(no nodes)"), "{}", text(&out));
    let out = registryctl(dir.path(), &["list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty());
}
