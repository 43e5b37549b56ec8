//! From configuration to a running [`Registry`]: the backend by name through the
//! [`BackendFactory`], the options from `rpc.registryConfig`.

use registry_core::{ConnectOptions, Registry, RegistryError, RegistryOptions};

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
}

impl SetupError {
    /// True when the configuration is wrong (as opposed to a store that does not answer).
    pub fn is_config_error(&self) -> bool {
        match self {
            SetupError::Factory(FactoryError::UnknownBackend { .. }) => true,
            SetupError::Factory(FactoryError::Connect { source, .. }) => {
                matches!(source, registry_core::BackendError::Config { .. })
                    || matches!(source, registry_core::BackendError::Auth { .. })
            }
            SetupError::Registry(RegistryError::InvalidOptions { .. }) => true,
            SetupError::Registry(_) => false,
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
    match config.protect_threshold {
        Some(t) => options.with_protect_threshold(t),
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
    let backend = factory
        .connect(&config.registry, connect_options(config))
        .await?;
    Ok(Registry::new(backend, options)?)
}
