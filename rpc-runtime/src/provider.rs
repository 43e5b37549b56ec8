//! Provider bootstrap (the original `RpcApplication`): load config, serve on
//! `rpc.serverHost:rpc.serverPort` (in TLS with `rpc.tls.certFile` and `rpc.tls.keyFile`, the
//! nodes then registered with the metadata `tls=true`: see [`crate::tls`]), register every
//! service in the configured registry, heartbeat, and on SIGINT/SIGTERM shut down in the safe order:
//!
//! 1. deregister every node (consumers' watches drop this provider),
//! 2. stop accepting and reading new requests,
//! 3. let in-flight calls finish (bounded by the grace period) and answer them,
//! 4. close.
//!
//! ```no_run
//! # use rpc_runtime::service::Service;
//! # async fn run(my_service: impl Service) -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_runtime::config::RpcConfig;
//! use rpc_runtime::provider::Provider;
//!
//! Provider::new(RpcConfig::load()?)
//!     .with_service(my_service)
//!     .run_until_signal()
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use registry_core::{Registry, RegistryError, ServiceMetaInfo};
use tracing::{info, warn};

use crate::config::RpcConfig;
use crate::connect::{connect_registry, SetupError};
use crate::server::{RunningServer, Server, ServerOptions, ShutdownReport};
use crate::service::Service;
use crate::tls::{ServerTls, TLS_METADATA_KEY};

/// Why a provider could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// `rpc.serverHost:rpc.serverPort` could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The registry could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Registering a service (an invalid description, a registry already shut down) or
    /// deregistering at shutdown failed.
    #[error("registering or deregistering the provider's nodes in the registry failed")]
    Registry(#[from] RegistryError),
}

/// A provider being assembled.
pub struct Provider {
    config: RpcConfig,
    services: Vec<Arc<dyn Service>>,
    registry: Option<Registry>,
    weight: u32,
    metadata: BTreeMap<String, String>,
    server_options: ServerOptions,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field(
                "services",
                &self.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("weight", &self.weight)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider configured by `config` (server address and limits, version, registry).
    pub fn new(config: RpcConfig) -> Self {
        Provider {
            server_options: ServerOptions::from_config(&config.server),
            config,
            services: Vec::new(),
            registry: None,
            weight: 1,
            metadata: BTreeMap::new(),
        }
    }

    /// Serves `service` (registered as `Name:rpc.version`).
    #[must_use]
    pub fn with_service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Uses `registry` instead of connecting the one `rpc.registryConfig` names (for sharing
    /// an embedded registry).
    #[must_use]
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The weight registered with every node (default 1).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a metadata entry registered with every node.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the server options (frame, connection and memory limits, timeouts, shutdown
    /// grace), replacing those taken from `rpc.server.*`.
    #[must_use]
    pub fn with_server_options(mut self, options: ServerOptions) -> Self {
        self.server_options = options;
        self
    }

    /// Binds, connects the registry, registers every service; returns the running provider.
    ///
    /// # Errors
    /// [`ProviderError`]: bind, registry setup, an unusable `rpc.tls.*` file
    /// ([`SetupError::Config`] naming the key), or an invalid service description. A
    /// registration the store did not take is retried in the background (see
    /// [`Registry::register`]), so a store outage at start does not stop the provider.
    pub async fn start(self) -> Result<RunningProvider, ProviderError> {
        let address = format!("{}:{}", self.config.server_host, self.config.server_port);
        let tls = ServerTls::from_config(&self.config.tls).map_err(SetupError::from)?;
        let serves_tls = tls.is_some();
        let mut server = Server::new(self.server_options);
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        for service in &self.services {
            server.add(&self.config.version, Arc::clone(service));
        }
        let server = server
            .bind(&address)
            .await
            .map_err(|source| ProviderError::Bind {
                address: address.clone(),
                source,
            })?;
        let local = server.local_addr();
        let (registry, owned) = match self.registry {
            Some(r) => (r, false),
            None => (connect_registry(&self.config.registry_config).await?, true),
        };
        if local.ip().is_unspecified() {
            warn!(%local, "serverHost is a wildcard address: consumers need a reachable one, set rpc.serverHost");
        }
        let mut nodes = Vec::new();
        let mut pending = Vec::new();
        for service in &self.services {
            let mut node = ServiceMetaInfo::new(
                service.name(),
                self.config.server_host.clone(),
                local.port(),
            )
            .with_version(self.config.version.clone())
            .with_weight(self.weight);
            node.metadata = self.metadata.clone();
            if serves_tls {
                // Consumers dial this node in TLS.
                node.metadata
                    .insert(TLS_METADATA_KEY.to_owned(), "true".to_owned());
            }
            let node = match registry.register(node.clone()).await {
                Ok(stored) => {
                    info!(service = %stored.service_key(), node = %stored.address(), registry = registry.backend_name(), "registered");
                    stored
                }
                Err(e @ RegistryError::Store { .. }) => {
                    let cause = registry_core::error_chain(&e);
                    warn!(service = service.name(), error = %cause, "registration pending, retrying in the background");
                    pending.push((node.service_key(), cause));
                    node
                }
                Err(e) => return Err(e.into()),
            };
            nodes.push(node);
        }
        Ok(RunningProvider {
            server,
            registry,
            owned,
            nodes,
            pending,
        })
    }

    /// [`start`](Self::start), then serve until SIGINT or SIGTERM, then
    /// [`shutdown`](RunningProvider::shutdown).
    ///
    /// # Errors
    /// As [`start`](Self::start) and [`shutdown`](RunningProvider::shutdown).
    pub async fn run_until_signal(self) -> Result<ShutdownReport, ProviderError> {
        let signal = shutdown_signal();
        let running = self.start().await?;
        signal.await;
        info!("signal received, shutting down");
        running.shutdown().await
    }
}

/// A provider serving and registered.
#[derive(Debug)]
pub struct RunningProvider {
    server: RunningServer,
    registry: Registry,
    owned: bool,
    nodes: Vec<ServiceMetaInfo>,
    /// Service keys whose first registration the store did not take, with the cause.
    pending: Vec<(String, String)>,
}

impl RunningProvider {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The registry the nodes are registered in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The nodes of this provider (one per service), registered or pending.
    pub fn nodes(&self) -> &[ServiceMetaInfo] {
        &self.nodes
    }

    /// Why `service_key`'s registration was still pending when [`start`](Provider::start)
    /// returned (the store did not take it; it is retried in the background), or `None` when
    /// it was registered.
    pub fn pending(&self, service_key: &str) -> Option<&str> {
        self.pending
            .iter()
            .find(|(key, _)| key == service_key)
            .map(|(_, cause)| cause.as_str())
    }

    /// Deregisters, stops accepting, lets in-flight calls finish (bounded), closes.
    ///
    /// # Errors
    /// [`ProviderError::Registry`] when deregistering failed (the server is stopped anyway;
    /// the nodes then expire with their TTL).
    pub async fn shutdown(self) -> Result<ShutdownReport, ProviderError> {
        let mut result = Ok(());
        for node in &self.nodes {
            if let Err(e) = self.registry.unregister(node).await {
                result = Err(e);
            }
        }
        if self.owned {
            if let Err(e) = self.registry.shutdown().await {
                result = result.and(Err(e));
            }
        }
        let report = self.server.shutdown().await;
        result?;
        Ok(report)
    }
}

pub use registry_core::signal::shutdown_signal;
