//! The `UserService` of the original notes, shared by the `provider` and `consumer`
//! binaries: `getUser(User) -> User` and `getNumber() -> i32` (Rust spells them `get_user`
//! and `get_number`).

use std::path::{Path, PathBuf};

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

/// The configuration the example binaries use: `--config FILE` when given, else the first of
/// `rpc.toml`, `rpc.yaml`, `rpc.yml`, `rpc.json`, `application.properties` in the working
/// directory; then environment overrides.
///
/// # Errors
/// [`ConfigError`] naming the file or the key.
pub fn load_config(file: Option<&Path>) -> Result<RpcConfig, ConfigError> {
    match file {
        Some(path) => RpcConfig::load_file(path),
        None => RpcConfig::load(),
    }
}

/// Command-line arguments shared by the binaries: `--config FILE` and the flags each binary
/// names in `numeric` (`--port N`, `--calls N`, ...).
#[derive(Debug, Default)]
pub struct Args {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--flag N` values, in the order of `numeric`.
    pub numbers: Vec<Option<u64>>,
}

/// Parses `--config FILE` and the `numeric` flags.
///
/// # Errors
/// A message naming the flag that is unknown or lacks a valid value.
pub fn parse_args(args: impl Iterator<Item = String>, numeric: &[&str]) -> Result<Args, String> {
    let mut parsed = Args {
        config: None,
        numbers: vec![None; numeric.len()],
    };
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        if flag == "--config" {
            parsed.config = Some(PathBuf::from(value()?));
        } else if let Some(i) = numeric.iter().position(|f| *f == flag) {
            let v = value()?;
            parsed.numbers[i] = Some(
                v.parse()
                    .map_err(|_| format!("{flag} takes a non-negative number, got `{v}`"))?,
            );
        } else {
            return Err(format!(
                "unknown argument `{flag}` (accepted: --config FILE{})",
                numeric
                    .iter()
                    .map(|f| format!(", {f} N"))
                    .collect::<String>()
            ));
        }
    }
    Ok(parsed)
}

/// Logs to stderr (stdout is the programs' story), filtered by `RUST_LOG` (default `warn`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
