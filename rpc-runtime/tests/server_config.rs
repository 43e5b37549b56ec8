//! `rpc.server.*` keys from files and the environment reach the server's options.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use rpc_runtime::config::{Format, RpcConfig};

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn server_limits_from_files_and_environment_reach_the_server_options() {
    use rpc_runtime::server::{ServerOptions, DEFAULT_IDLE_TIMEOUT};
    let toml = "[rpc.server]\nmaxConnections = 500\nidleTimeout = 90\nframeTimeout = \"2500ms\"\nmaxBufferedBytes = 67108864\n";
    let c = RpcConfig::from_str_with_format(toml, Format::Toml).unwrap();
    assert_eq!(c.server.max_connections, Some(500));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.server.frame_timeout, Duration::from_millis(2500));
    assert_eq!(c.server.max_buffered_bytes, 64 << 20);
    let options = ServerOptions::from_config(&c.server);
    assert_eq!(options.max_connections, 500);
    assert_eq!(options.idle_timeout, Duration::from_secs(90));
    assert_eq!(options.frame_timeout, Duration::from_millis(2500));
    assert_eq!(options.max_buffered_bytes, 64 << 20);

    // Unset: the connection limit follows the open-files limit.
    let defaults = RpcConfig::load_sources(None, &no_env).unwrap();
    assert_eq!(defaults.server.max_connections, None);
    assert_eq!(defaults.server.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        ServerOptions::from_config(&defaults.server).max_connections,
        ServerOptions::default().max_connections
    );

    let env: HashMap<&str, &str> = [
        ("RPC_SERVER_MAX_CONNECTIONS", "64"),
        ("RPC_SERVER_IDLE_TIMEOUT", "2m"),
        ("RPC_SERVER_FRAME_TIMEOUT", "5"),
        ("RPC_SERVER_MAX_BUFFERED_BYTES", "1048576"),
    ]
    .into_iter()
    .collect();
    let c = RpcConfig::load_sources(None, &|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
    assert_eq!(c.server.max_connections, Some(64));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(120));
    assert_eq!(c.server.frame_timeout, Duration::from_secs(5));
    assert_eq!(c.server.max_buffered_bytes, 1 << 20);
}
