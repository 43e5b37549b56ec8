//! `make demo` keeps telling the whole story: runs the quickstart binary and checks each step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn quickstart_tells_the_whole_story() {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quickstart failed\n{stdout}\n{stderr}"
    );
    let steps = [
        "provider registered user-service:1.0 at 127.0.0.1:8081",
        "consumer lookup #1: 1 node(s) [127.0.0.1:8081] from the registry",
        "consumer lookup #2: 1 node(s) [127.0.0.1:8081] from the cache",
        "heartbeat renewed the lease",
        "provider shutting down gracefully",
        "watch: user-service:1.0 removed 127.0.0.1:8081",
        "consumer cache updated by the watch: 0 nodes",
        "next lookup failed as expected: no provider for service user-service:1.0 (registry: memory)",
    ];
    let mut from = 0;
    for step in steps {
        let at = stdout[from..]
            .find(step)
            .unwrap_or_else(|| panic!("missing step `{step}` (in order) in:\n{stdout}"));
        from += at + step.len();
    }
}
