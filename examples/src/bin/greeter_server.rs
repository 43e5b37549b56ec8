//! A plain tonic gRPC server registered through the registry.
//!
//! ```text
//! greeter_server [--config FILE] [--port N] [--grace-ms MS]
//! ```
//!
//! Reads the registry settings like the other examples (`rpc.toml` or `--config FILE`, then
//! `RPC_*` environment overrides), listens on `rpc.serverHost` and `--port` (0: any free
//! port), registers `greeter.Greeter:1.0` with `Registry::register_guard`, prints
//! `READY <port>`, and on SIGINT / SIGTERM: deregisters, waits the grace so that clients
//! notice, then lets tonic stop (in-flight calls finish) and exits 0.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::greeter::{self, GreeterImpl};
use examples::user::ConfigArgs;
use registry_core::{error_chain, DEFAULT_DEREGISTER_GRACE};

/// Serves the tonic greeter and registers it.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Port to serve on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Milliseconds between deregistering and stopping the server.
    #[arg(long, default_value_t = DEFAULT_DEREGISTER_GRACE.as_millis() as u64)]
    grace_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    rpc_config::logging::init();
    let cli = Cli::parse();
    let config = match cli.config.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("greeter_server: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    let host = config.server_host.clone();
    let listener = match tokio::net::TcpListener::bind((host.as_str(), cli.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("greeter_server: cannot listen on {host}:{}: {e}", cli.port);
            return ExitCode::from(1);
        }
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("greeter_server: {e}");
            return ExitCode::from(1);
        }
    };
    let registry = match rpc_config::connect::connect_registry(&config.registry_config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("greeter_server: {}", error_chain(&e));
            return ExitCode::from(if e.is_config_error() { 2 } else { 1 });
        }
    };
    let registration = match greeter::register(&registry, &host, port).await {
        Ok(r) => r.with_grace(Duration::from_millis(cli.grace_ms)),
        Err(e) => {
            eprintln!("greeter_server: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    match registration.pending() {
        None => println!(
            "greeter_server: {} serving on {host}:{port}, registered in the {} registry",
            greeter::SERVICE_KEY,
            registry.backend_name()
        ),
        Some(cause) => println!(
            "greeter_server: {} serving on {host}:{port}, registration pending: {}; retrying",
            greeter::SERVICE_KEY,
            error_chain(cause)
        ),
    }
    println!("READY {port}");
    let _ = std::io::stdout().flush();
    // On a signal: deregister, wait the grace, then tonic stops accepting and drains.
    let stop = registration.shutdown_on_signal();
    let served = greeter::serve(listener, GreeterImpl::new(port), stop).await;
    let closed = registry.shutdown().await;
    if let Err(e) = served {
        eprintln!("greeter_server: {}", error_chain(&e));
        return ExitCode::from(1);
    }
    if let Err(e) = closed {
        eprintln!("greeter_server: registry shutdown: {}", error_chain(&e));
    }
    println!("STOPPED");
    ExitCode::SUCCESS
}
