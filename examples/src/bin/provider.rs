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

use examples::user::{load_config, parse_args, UserServiceImpl, UserServiceServer};
use registry_core::error_chain;
use rpc_runtime::provider::{shutdown_signal, Provider};

#[tokio::main]
async fn main() -> ExitCode {
    examples::user::init_tracing();
    let args = match parse_args(std::env::args().skip(1), &["--port"]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("provider: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("provider: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(port) = args.numbers[0] {
        match u16::try_from(port) {
            Ok(port) => config.server_port = port,
            Err(_) => {
                eprintln!("provider: --port must be at most 65535, got {port}");
                return ExitCode::from(2);
            }
        }
    }
    let registry = config.registry_config.registry.clone();
    let registry_address = config.registry_config.address.clone();
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
        println!(
            "provider: {} serving on {}, registered in the {registry} registry at {registry_address} (ttl {:?}, heartbeat every {:?})",
            node.service_key(),
            node.address(),
            config.registry_config.ttl,
            config.registry_config.heartbeat_interval,
        );
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
