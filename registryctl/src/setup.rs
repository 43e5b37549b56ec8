//! From the command line to a connected registry: configuration, checks, exit codes.

use registry_core::{error_chain, Registry};
use rpc_config::config::RpcConfig;
use rpc_config::connect::{connect_registry, SetupError};
use rpc_config::factory::BackendFactory;

use crate::Cli;

/// A failure with its exit code: 1 for the store, 2 for usage and configuration.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// Bad usage or configuration: exit 2.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// The store failed: exit 1.
    pub(crate) fn store(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// A registry error: exit 2 when the configuration is at fault (credentials, options),
    /// else 1.
    pub(crate) fn registry(error: &registry_core::RegistryError) -> Self {
        let config = match error {
            registry_core::RegistryError::Store { source, .. } => source.is_config_error(),
            registry_core::RegistryError::InvalidOptions { .. }
            | registry_core::RegistryError::InvalidService(_) => true,
            _ => false,
        };
        let message = error_chain(error);
        if config {
            Self::usage(message)
        } else {
            Self::store(message)
        }
    }
}

/// The configuration: the file (`--config`, else the first one found in the working
/// directory), the environment, then `--registry` and `--address`.
///
/// The embedded `memory` registry lives inside one process, so registryctl would only ever
/// see an empty store of its own: it is refused unless `--registry memory` asks for it.
pub(crate) fn load_config(cli: &Cli) -> Result<RpcConfig, Failure> {
    let file = match &cli.config {
        Some(path) => Some(path.clone()),
        None => std::env::current_dir()
            .ok()
            .and_then(|dir| rpc_config::config::find_config_file(&dir)),
    };
    // --registry and --address weigh as the environment variables do, over both.
    let env = |name: &str| match name {
        "RPC_REGISTRY_CONFIG_REGISTRY" if cli.registry.is_some() => cli.registry.clone(),
        "RPC_REGISTRY_CONFIG_ADDRESS" if cli.address.is_some() => cli.address.clone(),
        _ => std::env::var(name).ok(),
    };
    let config = RpcConfig::load_sources(file.as_deref(), &env)
        .map_err(|e| Failure::usage(error_chain(&e)))?;
    BackendFactory::global()
        .check(&config.registry_config.registry)
        .map_err(|e| Failure::usage(e.to_string()))?;
    if config.registry_config.registry == "memory" && cli.registry.as_deref() != Some("memory") {
        return Err(Failure::usage(
            "no shared registry configured: the `memory` registry lives inside one process, so \
             registryctl would only see an empty store of its own. Name one with --config FILE, \
             rpc.registryConfig.registry (or RPC_REGISTRY_CONFIG_REGISTRY), or --registry NAME \
             --address ADDR (pass --registry memory to use it anyway)",
        ));
    }
    Ok(config)
}

/// Connects the configured registry.
pub(crate) async fn connect(config: &RpcConfig) -> Result<Registry, Failure> {
    connect_registry(&config.registry_config)
        .await
        .map_err(|e: SetupError| {
            let message = error_chain(&e);
            if e.is_config_error() {
                Failure::usage(message)
            } else {
                Failure::store(message)
            }
        })
}
