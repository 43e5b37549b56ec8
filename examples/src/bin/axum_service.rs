//! Any server registered: an axum HTTP service, registered with `Registry::register_guard`.
//!
//! ```text
//! axum_service [--config FILE] [--port N] [--name NAME] [--grace-ms MS]
//! ```
//!
//! Listens on `rpc.serverHost` and `--port` (0: any free port), registers `NAME:1.0` (default
//! `hello-http`), prints `READY <port>`, answers `GET /` with a greeting; on SIGINT / SIGTERM
//! it deregisters, waits the grace so that consumers notice, then lets axum finish its
//! requests and exits 0.

use std::io::Write as _;
use std::process::ExitCode;

use axum::routing::get;
use axum::Router;
use clap::Parser;
use examples::exit;
use examples::user::ConfigArgs;
use std::time::Duration;

use registry_core::{error_chain, ServiceMetaInfo, DEFAULT_DEREGISTER_GRACE};

/// Serves a small axum app and registers it.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Port to serve on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Service name to register.
    #[arg(long, default_value = "hello-http")]
    name: String,
    /// Milliseconds between deregistering and stopping the server.
    #[arg(long, default_value_t = DEFAULT_DEREGISTER_GRACE.as_millis() as u64)]
    grace_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    rpc_config::logging::init();
    let cli = Cli::parse();
    let config = match exit::load_config("axum_service", &cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let host = config.server_host.clone();
    let (listener, port) = match exit::listen("axum_service", &host, cli.port).await {
        Ok(bound) => bound,
        Err(code) => return code,
    };
    let registry = match exit::connect_registry("axum_service", &config.registry_config).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let node = ServiceMetaInfo::new(cli.name.clone(), host.clone(), port)
        .with_metadata("protocol", "http");
    let registration = match registry.register_guard(node).await {
        Ok(r) => r.with_grace(Duration::from_millis(cli.grace_ms)),
        Err(e) => {
            eprintln!("axum_service: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    println!(
        "axum_service: {} serving on http://{host}:{port}/, registered in the {} registry",
        registration.node().service_key(),
        registry.backend_name()
    );
    println!("READY {port}");
    let _ = std::io::stdout().flush();
    let app = Router::new().route(
        "/",
        get(move || async move { format!("hello from {port}\n") }),
    );
    // Deregister, wait the grace, then axum stops accepting and finishes its requests.
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(registration.shutdown_on_signal())
        .await;
    let closed = registry.shutdown().await;
    if let Err(e) = served {
        eprintln!("axum_service: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = closed {
        eprintln!("axum_service: registry shutdown: {}", error_chain(&e));
    }
    println!("STOPPED");
    ExitCode::SUCCESS
}
