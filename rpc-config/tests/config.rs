//! Loading `RpcConfig` from every supported file format, environment overrides, and errors that
//! name the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rpc_config::config::{
    ConfigError, Format, LoadBalancerKind, RetryStrategyKind, RpcConfig, SerializerKind,
    TolerantStrategyKind,
};

const TOML: &str = r#"
[rpc]
name = "user-provider"
serverHost = "10.0.0.7"
serverPort = 8081
serializer = "bincode"
loadBalancer = "consistentHash"
retryStrategy = "fixedInterval"
tolerantStrategy = "failOver"

[rpc.registryConfig]
registry = "etcd"
address = "http://127.0.0.1:2379,http://127.0.0.1:22379"
username = "root"
password = "secret"
timeout = 1500
ttl = 20
heartbeatInterval = "5s"
root = "/services/"
"#;

const YAML: &str = r#"
rpc:
  name: user-provider
  serverHost: 10.0.0.7
  serverPort: 8081
  serializer: bincode
  loadBalancer: consistentHash
  retryStrategy: fixedInterval
  tolerantStrategy: failOver
  registryConfig:
    registry: etcd
    address: http://127.0.0.1:2379,http://127.0.0.1:22379
    username: root
    password: secret
    timeout: 1500ms
    ttl: 20s
    heartbeatInterval: 5
    root: /services/
"#;

const JSON: &str = r#"{"rpc": {
  "name": "user-provider", "serverHost": "10.0.0.7", "serverPort": 8081,
  "serializer": "bincode", "loadBalancer": "consistentHash",
  "retryStrategy": "fixedInterval", "tolerantStrategy": "failOver",
  "registryConfig": {"registry": "etcd",
    "address": "http://127.0.0.1:2379,http://127.0.0.1:22379",
    "username": "root", "password": "secret",
    "timeout": "1.5s", "ttl": 20, "heartbeatInterval": 5, "root": "/services/"}}}"#;

const PROPERTIES: &str = "\
# The original framework's application.properties
rpc.name=user-provider
rpc.serverHost=10.0.0.7
rpc.serverPort=8081
rpc.serializer=bincode
rpc.loadBalancer=consistentHash
rpc.retryStrategy=fixedInterval
rpc.tolerantStrategy=failOver
rpc.registryConfig.registry=etcd
rpc.registryConfig.address=http://127.0.0.1:2379,http://127.0.0.1:22379
rpc.registryConfig.username=root
rpc.registryConfig.password=secret
rpc.registryConfig.timeout=1500
rpc.registryConfig.ttl=20
rpc.registryConfig.heartbeatInterval=5
rpc.registryConfig.root=/services/
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn expected() -> RpcConfig {
    let mut c = RpcConfig::default()
        .with_registry("etcd")
        .with_address("http://127.0.0.1:2379,http://127.0.0.1:22379")
        .with_server_host("10.0.0.7")
        .with_server_port(8081);
    c.name = "user-provider".into();
    c.serializer = SerializerKind::Bincode;
    c.load_balancer = LoadBalancerKind::ConsistentHash;
    c.retry_strategy = RetryStrategyKind::FixedInterval;
    c.tolerant_strategy = TolerantStrategyKind::FailOver;
    let r = &mut c.registry_config;
    r.username = Some("root".into());
    r.password = Some("secret".into());
    r.timeout = Duration::from_millis(1500);
    r.ttl = Duration::from_secs(20);
    r.heartbeat_interval = Duration::from_secs(5);
    r.root = "/services/".into();
    c
}

#[test]
fn every_format_gives_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("rpc.toml", TOML),
        ("rpc.yaml", YAML),
        ("rpc.yml", YAML),
        ("rpc.json", JSON),
        ("application.properties", PROPERTIES),
    ] {
        let path = write(dir.path(), name, text);
        let config =
            RpcConfig::load_sources(Some(&path), &no_env).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config, expected(), "{name}");
    }
}

#[test]
fn defaults_follow_the_original_framework() {
    let c = RpcConfig::load_sources(None, &no_env).unwrap();
    assert_eq!(c, RpcConfig::default());
    assert_eq!(c.registry_config.registry, "memory");
    assert_eq!(c.registry_config.ttl, Duration::from_secs(30));
    assert_eq!(
        c.registry_config.heartbeat_interval,
        Duration::from_secs(10)
    );
    assert_eq!(c.registry_config.timeout, Duration::from_secs(10));
    assert_eq!(c.registry_config.root, "/rpc/");
    assert_eq!(
        (c.serializer.name(), c.load_balancer.name()),
        ("json", "roundRobin")
    );
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rpc.toml", TOML);
    let env: HashMap<&str, &str> = [
        ("RPC_SERVER_PORT", "9999"),
        ("RPC_REGISTRY_CONFIG_REGISTRY", "memory"),
        ("RPC_REGISTRY_CONFIG_TTL", "45"),
        ("RPC_REGISTRY_CONFIG_HEARTBEAT_INTERVAL", "15s"),
        ("RPC_REGISTRY_CONFIG_TIMEOUT", "250"),
    ]
    .into_iter()
    .collect();
    let c = RpcConfig::load_sources(Some(&path), &|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
    assert_eq!(c.server_port, 9999);
    assert_eq!(c.registry_config.registry, "memory");
    assert_eq!(c.registry_config.ttl, Duration::from_secs(45));
    assert_eq!(
        c.registry_config.heartbeat_interval,
        Duration::from_secs(15)
    );
    assert_eq!(c.registry_config.timeout, Duration::from_millis(250));
    // Untouched keys keep the file's values.
    assert_eq!(c.name, "user-provider");
}

#[test]
fn load_from_dir_takes_the_first_file_in_order_or_defaults() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        RpcConfig::load_from_dir(dir.path()).unwrap().server_port,
        8080
    );
    write(dir.path(), "application.properties", "rpc.serverPort=1\n");
    assert_eq!(RpcConfig::load_from_dir(dir.path()).unwrap().server_port, 1);
    write(dir.path(), "rpc.json", r#"{"rpc":{"serverPort":2}}"#);
    assert_eq!(RpcConfig::load_from_dir(dir.path()).unwrap().server_port, 2);
    write(dir.path(), "rpc.toml", "[rpc]\nserverPort = 3\n");
    assert_eq!(RpcConfig::load_from_dir(dir.path()).unwrap().server_port, 3);
}

fn error(text: &str, format: Format) -> ConfigError {
    RpcConfig::from_str_with_format(text, format).unwrap_err()
}

#[test]
fn bad_values_name_the_key_and_what_it_accepts() {
    let e = error("rpc.registryConfig.ttl=soon", Format::Properties).to_string();
    assert!(
        e.contains("`rpc.registryConfig.ttl`") && e.contains("`1500ms`"),
        "{e}"
    );

    let e = error("[rpc]\nloadBalancer = \"leastBusy\"\n", Format::Toml).to_string();
    assert!(e.contains("`rpc.loadBalancer`"), "{e}");
    assert!(e.contains("roundRobin, random, consistentHash"), "{e}");

    let e = error(
        "rpc.registryConfig.ttl=10\nrpc.registryConfig.heartbeatInterval=5",
        Format::Properties,
    )
    .to_string();
    assert!(
        e.contains("rpc.registryConfig.heartbeatInterval") && e.contains("rpc.registryConfig.ttl"),
        "{e}"
    );

    let e = error("rpc.serverPort=70000", Format::Properties).to_string();
    assert!(e.contains("`rpc.serverPort`"), "{e}");

    let e = error("rpc:\n  serializer: xml\n", Format::Yaml).to_string();
    assert!(e.contains("json, bincode"), "{e}");

    let e = error("rpc.registryConfig.timeout=0", Format::Properties).to_string();
    assert!(e.contains("`rpc.registryConfig.timeout`"), "{e}");
}

#[test]
fn broken_files_name_the_file_or_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "application.properties",
        "rpc.name=a\njust-a-word\n",
    );
    let e = RpcConfig::load_sources(Some(&path), &no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("application.properties:2"), "{e}");

    let path = write(dir.path(), "rpc.toml", "[rpc\nname=");
    let e = RpcConfig::load_sources(Some(&path), &no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rpc.toml"), "{e}");

    let path = write(dir.path(), "rpc.ini", "x");
    let e = RpcConfig::load_sources(Some(&path), &no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported config file"), "{e}");

    let e = RpcConfig::load_sources(Some(&dir.path().join("missing.toml")), &no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn bad_server_limits_name_the_key() {
    for (text, key) in [
        ("rpc.server.maxConnections=0", "`rpc.server.maxConnections`"),
        (
            "rpc.server.maxConnections=lots",
            "`rpc.server.maxConnections`",
        ),
        (
            "rpc.server.maxConnections=-5",
            "`rpc.server.maxConnections`",
        ),
        ("rpc.server.idleTimeout=0", "`rpc.server.idleTimeout`"),
        ("rpc.server.frameTimeout=soon", "`rpc.server.frameTimeout`"),
        (
            "rpc.server.maxBufferedBytes=64MiB",
            "`rpc.server.maxBufferedBytes`",
        ),
    ] {
        let e = error(text, Format::Properties).to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    let e = error("[rpc.server]\nmaxConnections = 1.5\n", Format::Toml).to_string();
    assert!(e.contains("`rpc.server.maxConnections`"), "{e}");
}

#[test]
fn huge_and_tiny_durations_are_errors_naming_the_key_never_a_panic() {
    for (text, key) in [
        ("rpc.registryConfig.ttl=1e300", "rpc.registryConfig.ttl"),
        (
            "rpc.registryConfig.timeout=1e300",
            "rpc.registryConfig.timeout",
        ),
        (
            "rpc.registryConfig.ttl=1.8e19\nrpc.registryConfig.heartbeatInterval=1e19",
            "rpc.registryConfig.ttl",
        ),
        (
            "rpc.registryConfig.heartbeatInterval=1e19",
            "rpc.registryConfig.heartbeatInterval",
        ),
        (
            "rpc.registryConfig.ttl=99999999999999999999h",
            "rpc.registryConfig.ttl",
        ),
        ("rpc.server.idleTimeout=1e300", "rpc.server.idleTimeout"),
        ("rpc.server.frameTimeout=inf", "rpc.server.frameTimeout"),
        ("rpc.registryConfig.ttl=0.001", "rpc.registryConfig.ttl"),
        (
            "rpc.registryConfig.ttl=30\nrpc.registryConfig.heartbeatInterval=0.001",
            "rpc.registryConfig.heartbeatInterval",
        ),
    ] {
        let err = RpcConfig::from_str_with_format(text, Format::Properties)
            .expect_err(text)
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
    }
    let tiny = RpcConfig::from_str_with_format("rpc.registryConfig.ttl=0.001", Format::Properties)
        .unwrap_err()
        .to_string();
    assert!(tiny.contains("from 100ms"), "{tiny}");
    // The same through the environment.
    let env: HashMap<&str, &str> = [("RPC_REGISTRY_CONFIG_TTL", "1e20")].into_iter().collect();
    let err = RpcConfig::load_sources(None, &|k| env.get(k).map(|v| (*v).to_owned()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("RPC_REGISTRY_CONFIG_TTL") || err.contains("rpc.registryConfig.ttl"),
        "{err}"
    );
}

#[test]
fn a_yaml_alias_bomb_is_refused_before_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, name) = (pair[0], pair[1]);
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    assert!(bomb.len() < 400, "a bomb of {} bytes", bomb.len());
    let path = write(dir.path(), "rpc.yaml", &bomb);
    let err = RpcConfig::load_sources(Some(&path), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("rpc.yaml"), "{err}");

    let big = write(dir.path(), "big.toml", &"# padding\n".repeat(200_000));
    let err = RpcConfig::load_sources(Some(&big), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
}

#[test]
fn a_root_that_climbs_out_is_refused() {
    for root in ["../../etc", "/rpc/./x", "/rpc/a b/", "/rpc/\u{1b}[2J/"] {
        let text = format!("rpc.registryConfig.root={root}");
        let err = RpcConfig::from_str_with_format(&text, Format::Properties)
            .expect_err(root)
            .to_string();
        assert!(err.contains("`rpc.registryConfig.root`"), "{root}: {err}");
    }
}

#[test]
fn warmup_is_off_by_default_and_bounded() {
    assert_eq!(RpcConfig::default().warmup, Duration::ZERO);
    let c = RpcConfig::from_str_with_format("rpc.warmup=10m", Format::Properties).unwrap();
    assert_eq!(c.warmup, Duration::from_secs(600));
    let e = error("rpc.warmup=1e300", Format::Properties).to_string();
    assert!(e.contains("`rpc.warmup`"), "{e}");
}

#[test]
fn the_protect_threshold_is_a_share_or_off() {
    let c = RpcConfig::from_str_with_format(
        "rpc.registryConfig.protectThreshold=0.5",
        Format::Properties,
    )
    .unwrap();
    assert_eq!(c.registry_config.protect_threshold, Some(0.5));
    let off = RpcConfig::from_str_with_format(
        "rpc.registryConfig.protectThreshold=0",
        Format::Properties,
    )
    .unwrap();
    assert_eq!(off.registry_config.protect_threshold, None);
    for bad in ["1.5", "-1", "lots", "1"] {
        let e = error(
            &format!("rpc.registryConfig.protectThreshold={bad}"),
            Format::Properties,
        )
        .to_string();
        assert!(
            e.contains("`rpc.registryConfig.protectThreshold`"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn store_tls_keys_from_a_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "rpc.toml",
        "[rpc.registryConfig]\nregistry = \"etcd\"\n[rpc.registryConfig.tls]\ncaFile = \"/etc/ca.pem\"\nserverName = \"etcd.internal\"\n",
    );
    let c = RpcConfig::load_sources(Some(&path), &no_env).unwrap();
    let tls = c.registry_config.tls.clone().unwrap();
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(tls.server_name.as_deref(), Some("etcd.internal"));
    assert!(!tls.has_identity());

    let env = std::collections::HashMap::from([
        ("RPC_REGISTRY_CONFIG_TLS_CERT_FILE", "/etc/client.pem"),
        ("RPC_REGISTRY_CONFIG_TLS_KEY_FILE", "/etc/client.key"),
    ]);
    let c = RpcConfig::load_sources(Some(&path), &|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
    assert!(c.registry_config.tls.as_ref().unwrap().has_identity());
    // Paths are printed, key contents are never read here.
    assert!(format!("{c:?}").contains("client.key"));

    let half = std::collections::HashMap::from([("RPC_REGISTRY_CONFIG_TLS_CERT_FILE", "/c.pem")]);
    let err = RpcConfig::load_sources(None, &|k| half.get(k).map(|v| (*v).to_owned())).unwrap_err();
    assert!(
        err.to_string().contains("rpc.registryConfig.tls.certFile"),
        "{err}"
    );
    assert!(err.to_string().contains("keyFile"), "{err}");
    // No tls key: no TLS.
    assert!(RpcConfig::load_sources(None, &no_env)
        .unwrap()
        .registry_config
        .tls
        .is_none());
}

#[test]
fn rpc_tls_keys_from_a_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "rpc.toml",
        "[rpc.tls]\ncertFile = \"/etc/rpc/server.pem\"\nkeyFile = \"/etc/rpc/server.key\"\nclientCaFile = \"/etc/rpc/clients.pem\"\n",
    );
    let c = RpcConfig::load_sources(Some(&path), &no_env).unwrap();
    assert!(c.tls.serves_tls() && !c.tls.calls_tls());
    assert_eq!(
        c.tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/rpc/clients.pem"))
    );

    let env = std::collections::HashMap::from([
        ("RPC_TLS_CA_FILE", "/etc/rpc/ca.pem"),
        ("RPC_TLS_CLIENT_CERT_FILE", "/etc/rpc/client.pem"),
        ("RPC_TLS_CLIENT_KEY_FILE", "/etc/rpc/client.key"),
        ("RPC_TLS_SERVER_NAME", "rpc.internal"),
    ]);
    let c = RpcConfig::load_sources(None, &|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
    assert!(c.tls.calls_tls() && !c.tls.serves_tls());
    assert_eq!(c.tls.server_name.as_deref(), Some("rpc.internal"));
    assert_eq!(
        c.tls.client_key_file.as_deref(),
        Some(Path::new("/etc/rpc/client.key"))
    );

    // Cross-key rules, each naming the key.
    for (vars, key) in [
        (vec![("RPC_TLS_CERT_FILE", "/c.pem")], "rpc.tls.certFile"),
        (vec![("RPC_TLS_KEY_FILE", "/k.pem")], "rpc.tls.keyFile"),
        (
            vec![
                ("RPC_TLS_CA_FILE", "/ca.pem"),
                ("RPC_TLS_CLIENT_CERT_FILE", "/c.pem"),
            ],
            "rpc.tls.clientCertFile",
        ),
        (
            vec![
                ("RPC_TLS_CLIENT_CERT_FILE", "/c.pem"),
                ("RPC_TLS_CLIENT_KEY_FILE", "/k.pem"),
            ],
            "rpc.tls.clientCertFile",
        ),
        (
            vec![("RPC_TLS_CLIENT_CA_FILE", "/ca.pem")],
            "rpc.tls.clientCaFile",
        ),
        (vec![("RPC_TLS_SERVER_NAME", "a b")], "rpc.tls.serverName"),
    ] {
        let env: std::collections::HashMap<_, _> = vars.into_iter().collect();
        let err = RpcConfig::load_sources(None, &|k| env.get(k).map(|v| (*v).to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
    // Nothing set: plain TCP on both sides.
    let c = RpcConfig::load_sources(None, &no_env).unwrap();
    assert!(!c.tls.serves_tls() && !c.tls.calls_tls());
}
