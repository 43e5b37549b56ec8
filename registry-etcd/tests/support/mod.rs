//! Shared by the etcd test files: a backend on a harness server, raw etcd access.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use registry_core::{ConnectOptions, Registry, RegistryOptions};
use registry_etcd::{EtcdBackend, EtcdSettings};

pub fn connect_options(address: &str, options: &RegistryOptions) -> ConnectOptions {
    ConnectOptions::for_registry(address, options)
}

pub async fn backend(address: &str, options: &RegistryOptions) -> EtcdBackend {
    EtcdBackend::connect(&connect_options(address, options))
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {}", registry_core::error_chain(&e)))
}

pub async fn registry(address: &str, options: RegistryOptions) -> Registry {
    let backend = EtcdBackend::connect(&connect_options(address, &options))
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {}", registry_core::error_chain(&e)));
    Registry::new(Arc::new(backend), options).expect("valid options")
}

/// [`registry`] with the backend's [`EtcdSettings`].
pub async fn registry_with(
    address: &str,
    options: RegistryOptions,
    settings: EtcdSettings,
) -> Registry {
    let backend = EtcdBackend::connect_with(&connect_options(address, &options), settings)
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {}", registry_core::error_chain(&e)));
    Registry::new(Arc::new(backend), options).expect("valid options")
}

pub async fn raw(address: &str) -> etcd_client::Client {
    let endpoints: Vec<&str> = address.split(',').collect();
    etcd_client::Client::connect(endpoints, None)
        .await
        .expect("raw etcd client")
}

/// [`registry`] as the boxed future [`registry_core::conformance::Connect`] wants.
pub fn registry_boxed(
    address: String,
    options: RegistryOptions,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Registry> + Send>> {
    Box::pin(async move { registry(&address, options).await })
}

pub use registry_core::conformance::init_tracing;

pub const SETTLE: Duration = Duration::from_millis(300);
