//! `docker-compose.yml` is checked without Docker: it parses as YAML of the Compose file
//! format's shape (top-level keys, one service per store with a pinned image, a health check
//! and a port mapping), and its ports match the example configs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rpc_runtime::config::RpcConfig;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn str_list(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items
            .iter()
            .map(|i| i.as_str().expect("a string item").to_owned())
            .collect(),
        Yaml::String(s) => vec![s.clone()],
        other => panic!("expected a list of strings, got {other:?}"),
    }
}

/// Host ports published by `service` ("HOST:CONTAINER" entries).
fn host_ports(doc: &Yaml, service: &str) -> Vec<u16> {
    str_list(&doc["services"][service]["ports"])
        .iter()
        .map(|p| {
            let (host, container) = p.split_once(':').expect("HOST:CONTAINER");
            container.parse::<u16>().expect("container port");
            host.parse::<u16>().expect("host port")
        })
        .collect()
}

fn port_of(address: &str) -> u16 {
    let without_scheme = address.rsplit("//").next().unwrap();
    let first = without_scheme.split(',').next().unwrap();
    first
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

#[test]
fn compose_file_has_the_compose_shape() {
    let doc = compose();
    let top = doc.as_hash().expect("a mapping at the top");
    let allowed = [
        "name", "services", "networks", "volumes", "configs", "secrets", "version",
    ];
    for key in top.keys() {
        let key = key.as_str().expect("string keys");
        assert!(allowed.contains(&key), "unknown top-level key `{key}`");
    }
    let services = doc["services"].as_hash().expect("services mapping");
    let service_keys = [
        "image",
        "command",
        "ports",
        "environment",
        "healthcheck",
        "volumes",
        "restart",
    ];
    for (name, service) in services {
        let name = name.as_str().unwrap();
        for key in service.as_hash().expect("service mapping").keys() {
            let key = key.as_str().unwrap();
            assert!(
                service_keys.contains(&key),
                "{name}: unexpected key `{key}`"
            );
        }
        let image = service["image"].as_str().expect("an image");
        let (_, tag) = image.rsplit_once(':').expect("a pinned tag");
        assert!(
            tag.chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == 'v')
                && tag != "latest",
            "{name}: pinned version, got {image}"
        );
        let health = &service["healthcheck"];
        let test = str_list(&health["test"]);
        assert!(
            ["CMD", "CMD-SHELL"].contains(&test[0].as_str()),
            "{name}: healthcheck test starts with CMD or CMD-SHELL"
        );
        for key in ["interval", "timeout"] {
            let v = health[key].as_str().expect("a duration");
            humantime::parse_duration(v).unwrap_or_else(|e| panic!("{name}.{key}: {e}"));
        }
        assert!(health["retries"].as_i64().is_some());
        if let Yaml::Hash(env) = &service["environment"] {
            for v in env.values() {
                assert!(
                    v.as_str().is_some(),
                    "{name}: environment values are strings"
                );
            }
        }
    }
    for store in ["etcd", "zookeeper", "redis"] {
        assert!(
            services.get(&Yaml::String(store.into())).is_some(),
            "{store} service"
        );
    }
    // ZooKeeper's admin server must not take 8080.
    let zk_env = &doc["services"]["zookeeper"]["environment"];
    assert_eq!(zk_env["ZOO_ADMINSERVER_ENABLED"].as_str(), Some("false"));
}

#[test]
fn compose_ports_match_the_example_configs() {
    let doc = compose();
    for (file, service) in [
        ("etcd.toml", "etcd"),
        ("zookeeper.toml", "zookeeper"),
        ("redis.toml", "redis"),
        ("application.properties", "etcd"),
    ] {
        let config = RpcConfig::load_file(&root().join("examples/config").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.registry_config.registry, service, "{file}");
        let port = port_of(&config.registry_config.address);
        assert!(
            host_ports(&doc, service).contains(&port),
            "{file} uses port {port}, compose publishes {:?} for {service}",
            host_ports(&doc, service)
        );
        // The example provider's port is free of the stores' ports.
        assert!(!host_ports(&doc, service).contains(&config.server_port));
    }
}
