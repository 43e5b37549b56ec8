//! `registryctl`: look inside the service registry, watch it change, register test nodes.
//!
//! Uses the runtime's configuration (`rpc.toml`, ... in the working directory, or `--config FILE`,
//! then environment overrides) and its backend factory, so it works with every backend the
//! runtime knows. Exit codes: 0 success, 1 store error, 2 bad usage or configuration.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use registry_core::signal::shutdown_signal;
use registry_core::{error_chain as chain, NodeStatus, Registry, ServiceChange, ServiceMetaInfo};
use rpc_config::config::RpcConfig;
use rpc_config::connect::{connect_registry, SetupError};
use rpc_config::factory::BackendFactory;
use serde_json::json;

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
        /// Time to live in seconds (the heartbeat becomes a third of it unless configured).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<f64>,
        /// Metadata entries.
        #[arg(long, value_name = "K=V", num_args = 1..)]
        metadata: Vec<String>,
    },
    /// Check that the store answers (exit 0) or not (exit 1).
    Health,
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
    fn store(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
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

fn load_config(cli: &Cli) -> Result<RpcConfig, Failure> {
    let mut config = match &cli.config {
        Some(path) => RpcConfig::load_file(path),
        None => RpcConfig::load(),
    }
    .map_err(|e| Failure::usage(chain(&e)))?;
    if let Some(name) = &cli.registry {
        config.registry_config.registry = name.clone();
    }
    if let Some(address) = &cli.address {
        config.registry_config.address = address.clone();
    }
    BackendFactory::global()
        .check(&config.registry_config.registry)
        .map_err(|e| Failure::usage(e.to_string()))?;
    Ok(config)
}

async fn connect(config: &RpcConfig) -> Result<Registry, Failure> {
    connect_registry(&config.registry_config)
        .await
        .map_err(|e: SetupError| {
            let message = chain(&e);
            if e.is_config_error() {
                Failure::usage(message)
            } else {
                Failure::store(message)
            }
        })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut config = load_config(&cli)?;
    match cli.command {
        Command::List { service_key, json } => {
            let registry = connect(&config).await?;
            let nodes = registry
                .inspect(service_key.as_deref())
                .await
                .map_err(|e| Failure::store(chain(&e)))?;
            print_list(&nodes, json);
            let _ = registry.shutdown().await;
            Ok(())
        }
        Command::Watch { service_key, json } => {
            let registry = connect(&config).await?;
            watch(&registry, service_key.as_deref(), json).await
        }
        Command::Register {
            service_key,
            addrs,
            ttl,
            metadata,
        } => {
            let nodes = parse_nodes(&service_key, &addrs, &metadata)?;
            if let Some(seconds) = ttl {
                apply_ttl(&mut config, seconds)?;
            }
            let registry = connect(&config).await?;
            register(&registry, nodes).await
        }
        Command::Health => {
            let registry = connect(&config).await?;
            registry
                .health()
                .await
                .map_err(|e| Failure::store(chain(&e)))?;
            println!(
                "ok: {} registry at {} answers",
                registry.backend_name(),
                display_address(&config.registry_config.address)
            );
            Ok(())
        }
    }
}

fn display_address(address: &str) -> &str {
    if address.is_empty() {
        "(default address)"
    } else {
        address
    }
}

/// `--ttl` sets the TTL; the heartbeat becomes a third of it unless the configuration sets a
/// usable one of its own.
fn apply_ttl(config: &mut RpcConfig, seconds: f64) -> Result<(), Failure> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(Failure::usage(format!(
            "--ttl must be a positive number of seconds, got {seconds}"
        )));
    }
    let ttl = Duration::from_secs_f64(seconds);
    let registry = &mut config.registry_config;
    let configured = registry.heartbeat_interval != rpc_config::config::DEFAULT_HEARTBEAT_INTERVAL;
    registry.ttl = ttl;
    if !(configured && registry.heartbeat_interval * 2 < ttl) {
        registry.heartbeat_interval = ttl / 3;
    }
    Ok(())
}

/// `name:version[:group]` and `host:port` into nodes.
fn parse_nodes(
    service_key: &str,
    addrs: &[String],
    metadata: &[String],
) -> Result<Vec<ServiceMetaInfo>, Failure> {
    let mut parts = service_key.split(':');
    let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
        return Err(Failure::usage(format!(
            "SERVICE_KEY must be name:version[:group], got `{service_key}`"
        )));
    };
    let group = parts.next();
    if parts.next().is_some() || name.is_empty() || version.is_empty() {
        return Err(Failure::usage(format!(
            "SERVICE_KEY must be name:version[:group], got `{service_key}`"
        )));
    }
    let mut entries = BTreeMap::new();
    for item in metadata {
        let Some((k, v)) = item.split_once('=') else {
            return Err(Failure::usage(format!(
                "--metadata takes k=v, got `{item}`"
            )));
        };
        entries.insert(k.to_owned(), v.to_owned());
    }
    addrs
        .iter()
        .map(|addr| {
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((
                        h.trim_start_matches('[').trim_end_matches(']'),
                        p.parse::<u16>().ok()?,
                    ))
                })
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| Failure::usage(format!("ADDR must be host:port, got `{addr}`")))?;
            let mut node = ServiceMetaInfo::new(name, host, port).with_version(version);
            if let Some(group) = group {
                node = node.with_group(group);
            }
            node.metadata = entries.clone();
            node.validate().map_err(|e| Failure::usage(e.to_string()))?;
            Ok(node)
        })
        .collect()
}

fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339_millis(t).to_string())
}

fn print_list(nodes: &[NodeStatus], json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        for s in nodes {
            let n = &s.node;
            let line = json!({
                "service": n.service_key(),
                "node": n.address(),
                "version": n.service_version,
                "group": n.service_group,
                "weight": n.weight,
                "registeredAt": rfc3339(n.register_time),
                "ttlRemainingMs": s.ttl_remaining.map(|d| d.as_millis() as u64),
                "metadata": n.metadata,
            });
            let _ = writeln!(out, "{line}");
        }
        return;
    }
    let header = [
        "SERVICE",
        "NODE",
        "VERSION",
        "GROUP",
        "WEIGHT",
        "REGISTERED",
        "TTL",
        "METADATA",
    ];
    let rows: Vec<[String; 8]> = nodes
        .iter()
        .map(|s| {
            let n = &s.node;
            [
                n.service_key(),
                n.address(),
                n.service_version.clone(),
                n.service_group.clone(),
                n.weight.to_string(),
                rfc3339(n.register_time).unwrap_or_else(|| "-".into()),
                s.ttl_remaining
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
                    .unwrap_or_else(|| "-".into()),
                n.metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let print_row = |out: &mut std::io::StdoutLock<'_>, cells: &[&str]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    };
    print_row(&mut out, &header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        print_row(&mut out, &cells);
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no nodes)");
    }
}

async fn watch(registry: &Registry, service_key: Option<&str>, json: bool) -> Result<(), Failure> {
    let mut stop = Box::pin(shutdown_signal());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ServiceChange>();
    let listener = move |change: &ServiceChange| {
        let _ = tx.send(change.clone());
    };
    let _subscription = match service_key {
        Some(key) => registry.subscribe(key, listener).await,
        None => registry.subscribe_all(listener).await,
    }
    .map_err(|e| Failure::store(chain(&e)))?;
    loop {
        tokio::select! {
            () = &mut stop => break,
            change = rx.recv() => match change {
                Some(change) => print_change(&change, json),
                None => break,
            },
        }
    }
    let _ = registry.shutdown().await;
    Ok(())
}

fn print_change(change: &ServiceChange, json: bool) {
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let mut out = std::io::stdout().lock();
    let events = [
        ("added", &change.diff.added),
        ("updated", &change.diff.updated),
        ("removed", &change.diff.removed),
    ];
    for (event, nodes) in events {
        for n in nodes.iter() {
            if json {
                let line = json!({
                    "event": event,
                    "service": n.service_key(),
                    "node": n.address(),
                    "at": at,
                });
                let _ = writeln!(out, "{line}");
            } else {
                let _ = writeln!(
                    out,
                    "{at}  {event:<8} {:<30} {}",
                    n.service_key(),
                    n.address()
                );
            }
        }
    }
    let _ = out.flush();
}

async fn register(registry: &Registry, nodes: Vec<ServiceMetaInfo>) -> Result<(), Failure> {
    let stop = shutdown_signal();
    for node in nodes {
        match registry.register(node.clone()).await {
            Ok(stored) => println!(
                "registered {} {} (ttl {:?}, heartbeat every {:?})",
                stored.service_key(),
                stored.address(),
                registry.options().ttl,
                registry.options().heartbeat_interval
            ),
            Err(e) => {
                let _ = registry.shutdown().await;
                return Err(Failure::store(chain(&e)));
            }
        }
    }
    let _ = std::io::stdout().flush();
    stop.await;
    registry
        .shutdown()
        .await
        .map_err(|e| Failure::store(chain(&e)))?;
    println!("deregistered, bye");
    Ok(())
}
