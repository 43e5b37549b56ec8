//! A volo-grpc server registered through the registry: `greeter_server`'s twin, for volo.
//!
//! ```text
//! volo_greeter_server [--config FILE] [--port N] [--grace-ms MS]
//! ```
//!
//! Reads the registry settings like the other examples (`rpc.toml` or `--config FILE`, then
//! `RPC_*` environment overrides), listens on `rpc.serverHost` and `--port` (0: any free
//! port), registers `greeter.Greeter:1.0` with `Registry::register_guard`, prints
//! `READY <port>`, and on SIGINT / SIGTERM: deregisters, waits the grace so that clients
//! notice, then lets volo stop (in-flight calls finish) and exits 0.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::exit;
use examples::greeter;
use examples::user::ConfigArgs;
use examples::volo_greeter::{self, VoloGreeter};
use registry_core::{error_chain, DEFAULT_DEREGISTER_GRACE};

/// Serves the volo greeter and registers it.
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
    let config = match exit::load_config("volo_greeter_server", &cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let host = config.server_host.clone();
    let (listener, port) = match exit::listen("volo_greeter_server", &host, cli.port).await {
        Ok(bound) => bound,
        Err(code) => return code,
    };
    let registry =
        match exit::connect_registry("volo_greeter_server", &config.registry_config).await {
            Ok(r) => r,
            Err(code) => return code,
        };
    let registration = match greeter::register(&registry, &host, port).await {
        Ok(r) => r.with_grace(Duration::from_millis(cli.grace_ms)),
        Err(e) => {
            eprintln!("volo_greeter_server: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    match registration.pending() {
        None => println!(
            "volo_greeter_server: {} serving on {host}:{port}, registered in the {} registry",
            greeter::SERVICE_KEY,
            registry.backend_name()
        ),
        Some(cause) => println!(
            "volo_greeter_server: {} serving on {host}:{port}, registration pending: {}; retrying",
            greeter::SERVICE_KEY,
            error_chain(cause)
        ),
    }
    println!("READY {port}");
    let _ = std::io::stdout().flush();
    // On a signal: deregister, wait the grace, then volo stops accepting and drains.
    let stop = registration.shutdown_on_signal();
    let served = volo_greeter::serve(listener, VoloGreeter::new(port), stop).await;
    let closed = registry.shutdown().await;
    if let Err(e) = served {
        eprintln!("volo_greeter_server: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = closed {
        eprintln!(
            "volo_greeter_server: registry shutdown: {}",
            error_chain(&e)
        );
    }
    println!("STOPPED");
    ExitCode::SUCCESS
}
