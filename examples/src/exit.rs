//! The start-up steps every example binary shares, each printing its failure as
//! `program: cause` and giving the exit code: 2 for configuration, 1 for the rest (a store
//! that does not answer, a port taken), as `registryctl` does.

use std::process::ExitCode;

use registry_core::{error_chain, Registry};
use rpc_runtime::config::{RegistryConfig, RpcConfig};
use tokio::net::TcpListener;

use crate::user::ConfigArgs;

/// The configuration `args` names; exit code 2 when it cannot be loaded.
///
/// # Errors
/// The exit code, after printing the error.
pub fn load_config(program: &str, args: &ConfigArgs) -> Result<RpcConfig, ExitCode> {
    args.load().map_err(|e| {
        eprintln!("{program}: {}", error_chain(&e));
        ExitCode::from(2)
    })
}

/// The registry `config` names; exit code 2 for a configuration error, else 1.
///
/// # Errors
/// The exit code, after printing the error.
pub async fn connect_registry(
    program: &str,
    config: &RegistryConfig,
) -> Result<Registry, ExitCode> {
    rpc_config::connect::connect_registry(config)
        .await
        .map_err(|e| {
            eprintln!("{program}: {}", error_chain(&e));
            ExitCode::from(if e.is_config_error() { 2 } else { 1 })
        })
}

/// A listener on `host:port` (0: any free port) and the port it got; exit code 1 when the
/// address cannot be bound.
///
/// # Errors
/// The exit code, after printing the error.
pub async fn listen(program: &str, host: &str, port: u16) -> Result<(TcpListener, u16), ExitCode> {
    let bound = match TcpListener::bind((host, port)).await {
        Ok(listener) => listener.local_addr().map(|a| (listener, a.port())),
        Err(e) => Err(e),
    };
    bound.map_err(|e| {
        eprintln!("{program}: cannot listen on {host}:{port}: {e}");
        ExitCode::from(1)
    })
}
