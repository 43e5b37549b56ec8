//! The three stores the backend benches run against, and their clients, shared by `backends`
//! and `unregister` (included with `#[path]`).

use std::sync::Arc;
use std::time::Duration;

use registry_core::backend::Backend;
use registry_core::{ConnectOptions, Registry, RegistryOptions};
use registry_test_support::{EtcdServer, RedisServer, ZkServer};
use rpc_runtime::factory::BackendFactory;

/// TTL 6 s, heartbeat every 2 s.
pub fn options() -> RegistryOptions {
    RegistryOptions::default()
        .with_ttl(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_secs(2))
}

/// A backend on `address`, through the factory the runtime uses (request timeout 5 s).
pub async fn backend(name: &str, address: &str) -> Arc<dyn Backend> {
    let options = options().with_timeout(Duration::from_secs(5));
    BackendFactory::global()
        .connect(name, ConnectOptions::for_registry(address, &options))
        .await
        .unwrap_or_else(|e| panic!("{name}: {}", registry_core::error_chain(&e)))
}

/// A registry on its own client of `address`.
pub async fn client(name: &str, address: &str) -> Registry {
    Registry::new(backend(name, address).await, options()).unwrap()
}

/// An etcd, a ZooKeeper and a Redis server on loopback, stopped on drop.
pub struct Stores {
    etcd: EtcdServer,
    zk: ZkServer,
    redis: RedisServer,
}

impl Stores {
    /// Starts the three.
    pub fn start() -> Self {
        Stores {
            etcd: EtcdServer::start().unwrap_or_else(|e| panic!("{e}")),
            zk: ZkServer::start().unwrap_or_else(|e| panic!("{e}")),
            redis: RedisServer::start().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// (backend name, address) of each.
    pub fn addresses(&self) -> [(&'static str, String); 3] {
        [
            ("etcd", self.etcd.endpoint()),
            ("zookeeper", self.zk.connect_string()),
            ("redis", self.redis.url()),
        ]
    }
}
