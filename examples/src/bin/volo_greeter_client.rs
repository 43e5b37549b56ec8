//! Calls the greeter with a volo-grpc client that finds its servers through the registry
//! (`registry_volo::VoloDiscover`).
//!
//! ```text
//! volo_greeter_client [--config FILE] [--calls N] [--interval-ms MS]
//! ```
//!
//! Each call prints the port of the server that answered (tonic's `greeter_server` or volo's
//! `volo_greeter_server`: the same gRPC service).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::exit;
use examples::user::ConfigArgs;
use examples::volo_greeter;

/// Calls the greeter through the registry with volo-grpc.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Calls to make.
    #[arg(long, default_value_t = 10)]
    calls: u64,
    /// Milliseconds between calls.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    rpc_config::logging::init();
    let cli = Cli::parse();
    let config = match exit::load_config("volo_greeter_client", &cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let registry =
        match exit::connect_registry("volo_greeter_client", &config.registry_config).await {
            Ok(r) => r,
            Err(code) => return code,
        };
    let client = volo_greeter::client(&registry, Duration::from_secs(2));
    let mut failed = 0;
    for i in 0..cli.calls {
        match volo_greeter::say_hello(&client, &format!("call {i}")).await {
            Ok(port) => println!("volo_greeter_client: call {i} answered by port {port}"),
            Err(status) => {
                failed += 1;
                println!("volo_greeter_client: call {i} failed: {status}");
            }
        }
        tokio::time::sleep(Duration::from_millis(cli.interval_ms)).await;
    }
    let _ = registry.shutdown().await;
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
