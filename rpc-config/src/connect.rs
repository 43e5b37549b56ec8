//! From configuration to a running [`Registry`]: the backend by name through the
//! [`BackendFactory`], the options from `rpc.registryConfig`.

use std::sync::Arc;

use registry_core::backend::LazyBackend;
use registry_core::{BackendError, ConnectOptions, Registry, RegistryError, RegistryOptions};

use crate::config::RegistryConfig;
use crate::factory::{BackendFactory, FactoryError};

/// Why a registry could not be set up from configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Unknown backend name, or the backend could not connect.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// The registry options are invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A setting outside the registry is unusable (e.g. an `rpc.tls.*` file), naming the key.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl SetupError {
    /// True when the configuration is wrong (as opposed to a store that does not answer).
    pub fn is_config_error(&self) -> bool {
        match self {
            SetupError::Factory(FactoryError::UnknownBackend { .. }) => true,
            SetupError::Factory(FactoryError::Connect { source, .. }) => source.is_config_error(),
            SetupError::Registry(RegistryError::InvalidOptions { .. }) => true,
            SetupError::Registry(_) => false,
            SetupError::Config(_) => true,
        }
    }
}

/// The registry options `rpc.registryConfig` describes.
pub fn registry_options(config: &RegistryConfig) -> RegistryOptions {
    let options = RegistryOptions::default()
        .with_root(&config.root)
        .with_ttl(config.ttl)
        .with_heartbeat_interval(config.heartbeat_interval)
        .with_timeout(config.timeout);
    let options = match config.protect_threshold {
        Some(t) => options.with_protect_threshold(t),
        None => options,
    };
    match &config.snapshot_dir {
        Some(dir) => options.with_snapshot_dir(dir),
        None => options,
    }
}

/// The connection options `rpc.registryConfig` describes.
pub fn connect_options(config: &RegistryConfig) -> ConnectOptions {
    ConnectOptions {
        address: config.address.clone(),
        username: config.username.clone(),
        password: config.password.clone(),
        timeout: config.timeout,
        ttl: config.ttl,
        root: config.root.clone(),
        tls: config.tls.clone(),
    }
}

/// Connects the registry `config` names, through the global factory.
///
/// # Errors
/// [`SetupError`]: an unknown backend (listing the known ones), a failed connection, or
/// invalid options.
pub async fn connect_registry(config: &RegistryConfig) -> Result<Registry, SetupError> {
    connect_registry_with(BackendFactory::global(), config).await
}

/// Like [`connect_registry`] with a given factory.
///
/// # Errors
/// As [`connect_registry`].
pub async fn connect_registry_with(
    factory: &BackendFactory,
    config: &RegistryConfig,
) -> Result<Registry, SetupError> {
    let options = registry_options(config);
    options.validate()?;
    let connect = connect_options(config);
    let backend = match factory.connect(&config.registry, connect.clone()).await {
        Ok(backend) => backend,
        // With a disk snapshot, a store that does not answer yet is no reason not to start:
        // the registry serves what the snapshot holds and connects when the store is back.
        Err(FactoryError::Connect { source, .. })
            if options.snapshot_dir.is_some() && is_unreachable(&source) =>
        {
            let Some(constructor) = factory.constructor(&config.registry) else {
                return Err(FactoryError::UnknownBackend {
                    name: config.registry.clone(),
                    known: factory.names(),
                }
                .into());
            };
            tracing::warn!(
                registry = %config.registry,
                address = %config.display_address(),
                error = %registry_core::error_chain(&source),
                "the store does not answer: starting from the disk snapshot, connecting when it does"
            );
            let name = factory_name(&config.registry);
            Arc::new(LazyBackend::new(name, move || constructor(connect.clone())))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Registry::new(backend, options)?)
}

/// Whether a connection error means the store is not there (yet), rather than refused
/// credentials or a bad configuration.
fn is_unreachable(error: &BackendError) -> bool {
    matches!(
        error,
        BackendError::Connect { .. } | BackendError::Timeout { .. } | BackendError::Request { .. }
    )
}

/// The backend's name as `Backend::name` reports it (the built-in ones are their factory
/// names; another registered name is leaked once, a few bytes per distinct name).
fn factory_name(name: &str) -> &'static str {
    match name {
        "memory" => "memory",
        "etcd" => "etcd",
        "zookeeper" => "zookeeper",
        "redis" => "redis",
        other => Box::leak(other.to_owned().into_boxed_str()),
    }
}
