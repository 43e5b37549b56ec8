//! The example provider: serves `UserService` and registers it in the configured registry.
//!
//! ```text
//! provider [--config FILE] [--port N]
//! ```
//!
//! Reads `rpc.toml` (or `--config FILE`), listens on `rpc.serverHost:rpc.serverPort`
//! (`--port` overrides the port, so several can run at once), registers, heartbeats, and on
//! Ctrl-C / SIGTERM deregisters first, lets running calls finish, and exits 0.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use examples::exit;
use examples::user::{ConfigArgs, UserServiceImpl, UserServiceServer};
use registry_core::error_chain;
use rpc_runtime::provider::{shutdown_signal, Provider};

/// Serves `UserService` and registers it in the configured registry.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Port to serve on (overrides rpc.serverPort, so several providers can run at once).
    #[arg(long)]
    port: Option<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    rpc_config::logging::init();
    let cli = Cli::parse();
    if let Err(e) = cli.config.serve_metrics() {
        eprintln!("provider: {}", error_chain(&e));
        return ExitCode::from(2);
    }
    let mut config = match exit::load_config("provider", &cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(port) = cli.port {
        config.server_port = port;
    }
    let registry = config.registry_config.registry.clone();
    let registry_address = config.registry_config.display_address().into_owned();
    let signal = shutdown_signal();
    let service = UserServiceImpl {
        address: format!("{}:{}", config.server_host, config.server_port),
    };
    let running = match Provider::new(config.clone())
        .with_service(UserServiceServer::new(service))
        .start()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("provider: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    for node in running.nodes() {
        match running.pending(&node.service_key()) {
            None => println!(
                "provider: {} serving on {}, registered in the {registry} registry at {registry_address} (ttl {:?}, heartbeat every {:?})",
                node.service_key(),
                node.address(),
                config.registry_config.ttl,
                config.registry_config.heartbeat_interval,
            ),
            Some(cause) => println!(
                "provider: {} serving on {}, registration pending in the {registry} registry at {registry_address}: {cause}; retrying",
                node.service_key(),
                node.address(),
            ),
        }
    }
    let _ = std::io::stdout().flush();
    signal.await;
    println!("provider: signal received: deregistering, then finishing running calls");
    let _ = std::io::stdout().flush();
    match running.shutdown().await {
        Ok(report) => {
            println!(
                "provider: stopped ({})",
                if report.drained {
                    "every call answered"
                } else {
                    "some calls were cut off after the grace period"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("provider: shutdown: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}
