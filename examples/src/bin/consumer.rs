//! The example consumer: calls `UserService` through the configured registry.
//!
//! ```text
//! consumer [--config FILE] [--calls N] [--interval-ms M]
//! ```
//!
//! Makes N rounds (default 3) of `getUser` then `getNumber`, M milliseconds apart (default
//! 1000), and prints for each call the node that served it and whether the node list came
//! from the registry (first call) or from the consumer's cache. When no provider is left it
//! prints the no-provider error and exits 1.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use examples::exit;
use examples::user::{ConfigArgs, User, UserServiceClient};
use registry_core::error_chain;
use rpc_runtime::consumer::{CallRecord, Consumer, ConsumerOptions};

/// Calls `UserService` through the configured registry.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Rounds of `getUser` + `getNumber`.
    #[arg(long, default_value_t = 3)]
    calls: u64,
    /// Pause between rounds, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    rpc_config::logging::init();
    let cli = Cli::parse();
    if let Err(e) = cli.config.serve_metrics() {
        eprintln!("consumer: {}", error_chain(&e));
        return ExitCode::from(2);
    }
    let calls = cli.calls;
    let interval = Duration::from_millis(cli.interval_ms);
    let config = match exit::load_config("consumer", &cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let last: Arc<Mutex<Option<CallRecord>>> = Arc::default();
    let mut options = ConsumerOptions::from_config(&config).with_observer({
        let last = Arc::clone(&last);
        move |record: &CallRecord| {
            if let Ok(mut slot) = last.lock() {
                *slot = Some(record.clone());
            }
        }
    });
    // rpc.tls.*: nodes registered with tls=true are called in TLS.
    match rpc_runtime::tls::ClientTls::from_config(&config.tls) {
        Ok(tls) => options.tls = tls,
        Err(e) => {
            eprintln!("consumer: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    }
    let registry = match exit::connect_registry("consumer", &config.registry_config).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let consumer = Consumer::new(registry, options);
    let client = UserServiceClient::new(consumer.clone());
    let served = |what: &str| {
        let record = last.lock().ok().and_then(|r| r.clone());
        let (node, origin) = record.map_or(("?".to_owned(), "?"), |r| {
            (
                r.node.unwrap_or_else(|| "?".into()),
                r.origin.map_or("?", |o| o.as_str()),
            )
        });
        println!("{what}  served by {node}  (nodes from the {origin})");
        let _ = std::io::stdout().flush();
    };
    for round in 1..=calls {
        if round > 1 {
            tokio::time::sleep(interval).await;
        }
        let user = User {
            name: "yupi".to_owned(),
        };
        match client.get_user(user).await {
            Ok(user) => served(&format!("round {round}: getUser -> {:?}", user.name)),
            Err(e) => return failed(round, "getUser", &e),
        }
        match client.get_number().await {
            Ok(n) => served(&format!("round {round}: getNumber -> {n}")),
            Err(e) => return failed(round, "getNumber", &e),
        }
    }
    let _ = consumer.registry().shutdown().await;
    ExitCode::SUCCESS
}

fn failed(round: u64, method: &str, error: &rpc_runtime::consumer::CallError) -> ExitCode {
    println!("round {round}: {method} failed: {}", error_chain(error));
    let _ = std::io::stdout().flush();
    ExitCode::from(1)
}
