//! The subcommands.

use std::io::{self, Write as _};

use futures::StreamExt as _;
use registry_core::signal::shutdown_signal;
use registry_core::{error_chain, Registry, ServiceMetaInfo};
use rpc_config::config::RpcConfig;

use crate::output::{cell, print_change, print_list};
use crate::setup::Failure;

/// Stops quietly on a closed pipe; any other write error is a failure.
fn written(result: io::Result<()>) -> Result<bool, Failure> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::store(format!("cannot write the output: {e}"))),
    }
}

/// `list`.
pub(crate) async fn list(
    registry: &Registry,
    service_key: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let nodes = registry
        .inspect(service_key)
        .await
        .map_err(|e| Failure::registry(&e))?;
    written(print_list(&mut io::stdout().lock(), &nodes, json))?;
    let _ = registry.shutdown().await;
    Ok(())
}

/// `watch`: the current nodes as `added`, then each change, until SIGINT/SIGTERM or a closed
/// pipe.
pub(crate) async fn watch(
    registry: &Registry,
    service_key: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let mut stop = Box::pin(shutdown_signal());
    let mut changes = match service_key {
        Some(key) => registry.watch(key).await,
        None => registry.watch_all().await,
    }
    .map_err(|e| Failure::registry(&e))?;
    loop {
        tokio::select! {
            () = &mut stop => break,
            change = changes.next() => match change {
                Some(change) => {
                    if !written(print_change(&mut io::stdout().lock(), &change, json))? {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = registry.shutdown().await;
    Ok(())
}

/// `register`: registers the nodes, keeps them alive until SIGINT/SIGTERM, deregisters. A node
/// the store did not take is reported pending (with the cause) and retried in the
/// background; it is not reported registered. Every later change of a registration's state
/// (`live`, `repairing`, `lost`) is printed as it happens.
pub(crate) async fn register(
    registry: &Registry,
    nodes: Vec<ServiceMetaInfo>,
) -> Result<(), Failure> {
    let stop = shutdown_signal();
    let options = registry.options();
    for node in nodes {
        match registry.register(node.clone()).await {
            Ok(stored) => println!(
                "registered {} {} (ttl {:?}, heartbeat every {:?})",
                cell(&stored.service_key()),
                cell(&stored.address()),
                options.ttl,
                options.heartbeat_interval
            ),
            Err(e @ registry_core::RegistryError::Store { .. }) => println!(
                "registration pending: {} {}: {}; retrying",
                cell(&node.service_key()),
                cell(&node.address()),
                error_chain(&e)
            ),
            Err(e) => {
                let _ = registry.shutdown().await;
                return Err(Failure::registry(&e));
            }
        }
    }
    let _ = io::stdout().flush();
    // Every change of a registration's state from now on, as it happens ("is it live?").
    for node in registry.registered() {
        if let Some(mut states) = registry.watch_registration(&node) {
            let (key, address) = (node.service_key(), node.address());
            tokio::spawn(async move {
                let mut last = states.next().await;
                while let Some(state) = states.next().await {
                    if Some(state) != last {
                        println!("registration {} {}: {state}", cell(&key), cell(&address));
                        let _ = io::stdout().flush();
                        last = Some(state);
                    }
                }
            });
        }
    }
    stop.await;
    registry
        .shutdown()
        .await
        .map_err(|e| Failure::registry(&e))?;
    println!("deregistered, bye");
    Ok(())
}

/// What `disable`, `enable` and `weight` change in a node's override.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// `disable` (`false`) or `enable` (`true`, which clears the override).
    Enabled(bool),
    /// `weight N`, or `weight reset` (`None`).
    Weight(Option<u32>),
}

/// `disable`, `enable`, `weight`: writes the node's override in the service's record. A node
/// that is not registered now still gets it (it applies when the node comes), with a note.
pub(crate) async fn set_override(
    registry: &Registry,
    service_key: &str,
    node: &str,
    change: Change,
) -> Result<(), Failure> {
    let target = crate::nodes::parse_nodes(service_key, &[node.to_owned()], &[])?;
    let target = &target[0];
    let (key, address) = (target.service_key(), target.address());
    let written = registry
        .set_override(&key, &address, |o| match change {
            // Enabled is the default: clear the override rather than store `true`.
            Change::Enabled(true) => o.enabled = None,
            Change::Enabled(false) => o.enabled = Some(false),
            Change::Weight(weight) => o.weight = weight,
        })
        .await
        .map_err(|e| Failure::registry(&e))?;
    let present = registry
        .inspect(Some(&key))
        .await
        .map(|nodes| nodes.iter().any(|n| n.node.address() == address))
        .unwrap_or(true);
    let what = match change {
        Change::Enabled(false) => "disabled (out of traffic)".to_owned(),
        Change::Enabled(true) => "enabled".to_owned(),
        Change::Weight(Some(w)) => format!("weight {w}"),
        Change::Weight(None) => "weight reset to the registered one".to_owned(),
    };
    println!("{} {}: {what}", cell(&key), cell(&address));
    if !present {
        println!(
            "note: {} has no node {} now; the override applies when it registers",
            cell(&key),
            cell(&address)
        );
    }
    tracing::debug!(?written, "override");
    let _ = registry.shutdown().await;
    Ok(())
}

/// `console`: serves the web console until SIGINT/SIGTERM. An empty `admin_token` counts as
/// none (read-only).
pub(crate) async fn console(
    registry: &Registry,
    config: &RpcConfig,
    listen: std::net::SocketAddr,
    admin_token: Option<String>,
) -> Result<(), Failure> {
    use registry_console::{AdminToken, Console, ConsoleOptions};
    let stop = shutdown_signal();
    let options = ConsoleOptions::default()
        .with_listen(listen)
        .with_store_address(config.registry_config.display_address())
        .with_admin_token(admin_token.and_then(AdminToken::new));
    let actions = options.admin_token.is_some();
    let console = match Console::start(registry.clone(), options).await {
        Ok(console) => console,
        Err(e) => {
            let _ = registry.shutdown().await;
            return Err(Failure::store(error_chain(&e)));
        }
    };
    println!(
        "console at {} ({} registry); actions {}",
        console.url(),
        registry.backend_name(),
        if actions {
            "allowed with the admin token"
        } else {
            "off (read-only: no admin token)"
        }
    );
    let _ = io::stdout().flush();
    stop.await;
    let stopped = console.stop().await;
    let _ = registry.shutdown().await;
    stopped.map_err(|e| Failure::store(error_chain(&e)))
}

/// `health`: the store answers and this client may write under the root.
pub(crate) async fn health(registry: &Registry, config: &RpcConfig) -> Result<(), Failure> {
    registry.health().await.map_err(|e| Failure::registry(&e))?;
    let address = config.registry_config.display_address();
    println!(
        "ok: {} registry at {} answers and takes writes under {}",
        registry.backend_name(),
        if address.is_empty() {
            "(default address)".into()
        } else {
            address
        },
        registry.options().keys.root()
    );
    Ok(())
}
