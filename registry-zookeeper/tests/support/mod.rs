//! Shared by the ZooKeeper test files: a backend on a harness server.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use registry_core::{ConnectOptions, Registry, RegistryOptions};
use registry_zookeeper::ZkBackend;

pub fn connect_options(address: &str, options: &RegistryOptions) -> ConnectOptions {
    ConnectOptions::for_registry(address, options)
}

pub async fn backend(address: &str, options: &RegistryOptions) -> ZkBackend {
    ZkBackend::connect(&connect_options(address, options))
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {}", registry_core::error_chain(&e)))
}

pub async fn registry(address: &str, options: RegistryOptions) -> Registry {
    let backend = backend(address, &options).await;
    Registry::new(Arc::new(backend), options).expect("valid options")
}

/// A plain ZooKeeper session, for writes behind the registry's back.
pub async fn raw(address: &str) -> zookeeper_client::Client {
    zookeeper_client::Client::connect(address).await.unwrap()
}

/// [`registry`] as the boxed future [`registry_core::conformance::Connect`] wants.
pub fn registry_boxed(
    address: String,
    options: RegistryOptions,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Registry> + Send>> {
    Box::pin(async move { registry(&address, options).await })
}

pub use registry_core::conformance::init_tracing;
