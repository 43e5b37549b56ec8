//! `registryctl`: look inside the service registry, watch it change, register test nodes.
//!
//! Uses the runtime's configuration (`rpc.toml`, ... in the working directory, or `--config FILE`,
//! then environment overrides) and its backend factory, so it works with every backend the
//! runtime knows. Exit codes: 0 success, 1 store error, 2 bad usage or configuration (an
//! unknown backend, a bad value, refused credentials, or no shared registry configured).
//!
//! Layout: `setup` (configuration, connection, exit codes), `nodes` (what `register` is
//! asked for), `output` (tables and JSON lines, control characters escaped), `commands`
//! (`console` serves `registry-console`).

mod commands;
mod nodes;
mod output;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::Change;
use crate::setup::{connect, load_config, Failure};

#[derive(Parser, Debug)]
#[command(
    name = "registryctl",
    version,
    about = "Inspect and drive the service registry"
)]
struct Cli {
    /// Configuration file (rpc.toml, rpc.yaml, rpc.json or application.properties).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Registry backend, overriding rpc.registryConfig.registry.
    #[arg(long, global = true, value_name = "NAME")]
    registry: Option<String>,
    /// Registry address, overriding rpc.registryConfig.address.
    #[arg(long, global = true, value_name = "ADDR")]
    address: Option<String>,
    /// Serve the registry's metrics in Prometheus format at http://ADDR/metrics.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the registered nodes, one line each.
    List {
        /// Only this service (`name:version[:group]`).
        service_key: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the current nodes as `added`, then every change as it happens.
    Watch {
        /// Only this service (`name:version[:group]`).
        service_key: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Register nodes and keep them alive until SIGINT or SIGTERM, then deregister them.
    Register {
        /// The service (`name:version[:group]`).
        service_key: String,
        /// Node addresses, host:port.
        #[arg(required = true, value_name = "ADDR")]
        addrs: Vec<String>,
        /// Time to live in seconds, 0.1 to 86400 (the heartbeat becomes a third of it unless
        /// configured).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<f64>,
        /// Metadata entries.
        #[arg(long, value_name = "K=V", num_args = 1..)]
        metadata: Vec<String>,
    },
    /// Take a node out of traffic without stopping it: every consumer's balancer skips it, and
    /// its owner's heartbeats and re-registrations do not undo it.
    Disable {
        /// The service (`name:version[:group]`).
        service_key: String,
        /// The node, host:port.
        node: String,
    },
    /// Put a disabled node back into traffic (clears the override).
    Enable {
        /// The service (`name:version[:group]`).
        service_key: String,
        /// The node, host:port.
        node: String,
    },
    /// Override a node's weight (`reset` gives it back its registered weight).
    Weight {
        /// The service (`name:version[:group]`).
        service_key: String,
        /// The node, host:port.
        node: String,
        /// The weight, 1 or more, or `reset`.
        weight: String,
    },
    /// Serve the web console: services, nodes, TTLs counting down and changes as they happen,
    /// live; actions (disable, enable, weight, deregister) only with an admin token.
    Console {
        /// Where to listen (loopback by default; anything else serves plain HTTP to others).
        #[arg(long, value_name = "ADDR", default_value = registry_console::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// The admin token that unlocks the actions, sent by the page as `Authorization:
        /// Bearer TOKEN`; without it the console is read-only. Prefer the environment
        /// variable: a command line is visible to every user of the machine.
        #[arg(long, value_name = "TOKEN", env = registry_console::TOKEN_ENV, hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Check that the store answers and takes this client's writes under the root (exit 0),
    /// or not (exit 1; 2 for refused credentials).
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    rpc_config::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("registryctl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("registryctl: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Some(address) = cli.metrics_listen {
        rpc_config::logging::serve_metrics(address)
            .map_err(|e| Failure::usage(registry_core::error_chain(&e)))?;
    }
    let mut config = load_config(&cli)?;
    match cli.command {
        Command::List { service_key, json } => {
            let registry = connect(&config).await?;
            commands::list(&registry, service_key.as_deref(), json).await
        }
        Command::Watch { service_key, json } => {
            let registry = connect(&config).await?;
            commands::watch(&registry, service_key.as_deref(), json).await
        }
        Command::Register {
            service_key,
            addrs,
            ttl,
            metadata,
        } => {
            let nodes = nodes::parse_nodes(&service_key, &addrs, &metadata)?;
            if let Some(seconds) = ttl {
                nodes::apply_ttl(&mut config, seconds)?;
            }
            let registry = connect(&config).await?;
            commands::register(&registry, nodes).await
        }
        Command::Disable { service_key, node } => {
            let registry = connect(&config).await?;
            commands::set_override(&registry, &service_key, &node, Change::Enabled(false)).await
        }
        Command::Enable { service_key, node } => {
            let registry = connect(&config).await?;
            commands::set_override(&registry, &service_key, &node, Change::Enabled(true)).await
        }
        Command::Weight {
            service_key,
            node,
            weight,
        } => {
            let change = Change::Weight(nodes::parse_weight(&weight)?);
            let registry = connect(&config).await?;
            commands::set_override(&registry, &service_key, &node, change).await
        }
        Command::Console {
            listen,
            admin_token,
        } => {
            let registry = connect(&config).await?;
            commands::console(&registry, &config, listen, admin_token).await
        }
        Command::Health => {
            let registry = connect(&config).await?;
            commands::health(&registry, &config).await
        }
    }
}
