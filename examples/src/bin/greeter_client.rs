//! Calls the tonic greeter through a channel kept in sync with the registry.
//!
//! ```text
//! greeter_client [--config FILE] [--calls N] [--interval-ms MS]
//! ```
//!
//! Each call prints the port of the server that answered: start and stop `greeter_server`s
//! meanwhile and watch the calls follow the registry.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::exit;
use examples::greeter::{pb, SERVICE_KEY};
use examples::user::ConfigArgs;
use registry_core::error_chain;
use registry_tonic::RegistryChannel;

/// Calls the greeter through the registry.
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
    let config = match exit::load_config("greeter_client", &cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let registry = match exit::connect_registry("greeter_client", &config.registry_config).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let channel = match RegistryChannel::new(registry.clone(), SERVICE_KEY)
        .with_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(1))
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("greeter_client: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    // With no node a call waits for one: bound it.
    let channel = tower::timeout::Timeout::new(channel, Duration::from_secs(3));
    let mut client = pb::greeter_client::GreeterClient::new(channel);
    let mut failed = 0;
    for i in 0..cli.calls {
        let request = pb::HelloRequest {
            name: format!("call {i}"),
        };
        match client.say_hello(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                println!("greeter_client: {} (port {})", reply.message, reply.port);
            }
            Err(status) => {
                failed += 1;
                println!("greeter_client: call {i} failed: {status}");
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
