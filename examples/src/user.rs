//! The `UserService` of the original notes, shared by the `provider` and `consumer`
//! binaries: `getUser(User) -> User` and `getNumber() -> i32` (Rust spells them `get_user`
//! and `get_number`).

use std::path::PathBuf;

use rpc_runtime::config::{ConfigError, RpcConfig};
use rpc_runtime::rpc_service;
use rpc_runtime::service::ServiceError;
use serde::{Deserialize, Serialize};

/// A user, as in the original example.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's name.
    pub name: String,
}

rpc_service! {
    /// The example service.
    pub trait UserService {
        /// Returns the user the provider knows under that name.
        async fn get_user(&self, user: User) -> Result<User, ServiceError>;
        /// A number (the original returns 1).
        async fn get_number(&self) -> Result<i32, ServiceError>;
    }
    server = UserServiceServer;
    client = UserServiceClient;
}

/// The provider's implementation: it tags the name with the address that served it, so a
/// consumer can see the load balancing at work.
#[derive(Debug, Clone)]
pub struct UserServiceImpl {
    /// `host:port` of this provider.
    pub address: String,
}

impl UserService for UserServiceImpl {
    async fn get_user(&self, user: User) -> Result<User, ServiceError> {
        if user.name.is_empty() {
            return Err(ServiceError::new(400, "the user has no name"));
        }
        Ok(User {
            name: format!("{} (from {})", user.name, self.address),
        })
    }

    async fn get_number(&self) -> Result<i32, ServiceError> {
        Ok(1)
    }
}

/// The flag every example binary takes: `--config FILE`.
#[derive(Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// Config file (.toml, .yaml, .json, .properties); default: the first of rpc.toml,
    /// rpc.yaml, rpc.yml, rpc.json, application.properties in the working directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve the metrics in Prometheus format at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl ConfigArgs {
    /// Starts the metrics endpoint when `--metrics-listen` asks for it (inside a Tokio
    /// runtime, before the registry is created).
    ///
    /// # Errors
    /// The endpoint could not be started.
    pub fn serve_metrics(&self) -> Result<(), rpc_config::logging::MetricsError> {
        match self.metrics_listen {
            Some(address) => rpc_config::logging::serve_metrics(address),
            None => Ok(()),
        }
    }

    /// The configuration: `--config FILE` when given, else the first config file found in the
    /// working directory; then environment overrides.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key.
    pub fn load(&self) -> Result<RpcConfig, ConfigError> {
        match &self.config {
            Some(path) => RpcConfig::load_file(path),
            None => RpcConfig::load(),
        }
    }
}
