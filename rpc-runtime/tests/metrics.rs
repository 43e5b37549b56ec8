//! The metrics a consumer records, read back from a Prometheus recorder installed in this
//! test process (its own binary: one recorder per process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions};
use rpc_runtime::config::RpcConfig;
use rpc_runtime::consumer::{Consumer, ConsumerOptions};
use rpc_runtime::provider::Provider;
use rpc_runtime::rpc_service;
use rpc_runtime::service::ServiceError;

rpc_service! {
    /// A test service.
    pub trait Ping {
        /// Answers.
        async fn ping(&self) -> Result<u8, ServiceError>;
        /// Fails.
        async fn fail(&self) -> Result<u8, ServiceError>;
    }
    server = PingServer;
    client = PingClient;
}

struct PingImpl;

impl Ping for PingImpl {
    async fn ping(&self) -> Result<u8, ServiceError> {
        Ok(1)
    }
    async fn fail(&self) -> Result<u8, ServiceError> {
        Err(ServiceError::new(7, "no"))
    }
}

fn registry(store: &Arc<MemoryStore>) -> Registry {
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(3))
        .with_heartbeat_interval(Duration::from_secs(1));
    Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_registry_metrics_are_recorded() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let store = MemoryStore::new();
    let provider = Provider::new(RpcConfig::default().with_server_port(0))
        .with_registry(registry(&store))
        .with_service(PingServer::new(PingImpl))
        .start()
        .await
        .unwrap();
    let client = PingClient::new(Consumer::new(registry(&store), ConsumerOptions::default()));
    for _ in 0..3 {
        assert_eq!(client.ping().await.unwrap(), 1);
    }
    assert!(client.fail().await.is_err());
    let text = handle.render();
    for expected in [
        "rpc_client_calls_total{service=\"Ping:1.0\",method=\"ping\",outcome=\"ok\"} 3",
        "rpc_client_calls_total{service=\"Ping:1.0\",method=\"fail\",outcome=\"service_error\"} 1",
        "rpc_client_call_duration_seconds",
        "registry_cache_misses_total{backend=\"memory\"} 1",
        "registry_cache_hits_total{backend=\"memory\"}",
        "registry_registered_nodes{backend=\"memory\"} 1",
        "registry_register_total{backend=\"memory\",outcome=\"ok\"} 1",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }
    provider.shutdown().await.unwrap();
}
