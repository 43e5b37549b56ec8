//! The web console on the embedded `memory` registry, no server needed (`make console-demo`).
//!
//! Providers register a few services in this process's `memory` store; the console serves
//! the same store at <http://127.0.0.1:8500/> (`--listen ADDR` for another address). Things
//! happen so there is something to look at: a worker registers and deregisters every few
//! seconds, and a provider "crashes" (stops heart-beating) so its node's TTL runs out and the
//! store drops it, then comes back. Actions are allowed when `REGISTRY_CONSOLE_TOKEN` is set
//! (the page asks for the same token); read-only otherwise. Ctrl-C stops.

use std::net::SocketAddr;
use std::time::Duration;

use registry_console::{AdminToken, Console, ConsoleOptions, TOKEN_ENV};
use registry_core::{Registry, ServiceMetaInfo};
use rpc_config::config::RpcConfig;
use rpc_config::connect::connect_registry;

const TTL: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_secs(5);

async fn client(config: &RpcConfig) -> Result<Registry, Box<dyn std::error::Error>> {
    Ok(connect_registry(&config.registry_config).await?)
}

fn listen_address() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen = registry_console::DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            other => return Err(format!("unknown argument {other:?} (only --listen ADDR)").into()),
        }
    }
    Ok(listen.parse()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rpc_config::logging::init();
    let listen = listen_address()?;
    // Every client names the same in-process store, as processes would name one etcd.
    let mut config = RpcConfig::default().with_address("console-demo");
    config.registry_config.ttl = TTL;
    config.registry_config.heartbeat_interval = HEARTBEAT;

    let providers = client(&config).await?;
    let services = [
        ("user-service", "1.0", "default", 3),
        ("order-service", "1.0", "default", 2),
        ("order-service", "2.0", "canary", 1),
        ("payment-service", "1.0", "default", 2),
        ("inventory-service", "1.0", "default", 1),
    ];
    let mut port = 9000;
    for (name, version, group, nodes) in services {
        for i in 0..nodes {
            port += 1;
            let node = ServiceMetaInfo::new(name, "127.0.0.1", port)
                .with_version(version)
                .with_group(group)
                .with_weight(1 + i)
                .with_metadata("zone", if i % 2 == 0 { "eu-1" } else { "eu-2" });
            providers.register(node).await?;
        }
    }

    let token = std::env::var(TOKEN_ENV).ok().and_then(AdminToken::new);
    let actions = token.is_some();
    let console_registry = client(&config).await?;
    let options = ConsoleOptions::default()
        .with_listen(listen)
        .with_store_address("memory store `console-demo` (this process)")
        .with_admin_token(token);
    let console = Console::start(console_registry.clone(), options).await?;
    println!(
        "console at {} (memory registry shared with the demo's providers)",
        console.url()
    );
    if actions {
        println!("actions allowed: enter the token from {TOKEN_ENV} in the page");
    } else {
        println!("read-only: set {TOKEN_ENV} to allow actions");
    }
    println!("Ctrl-C stops");

    let churn = tokio::spawn(churn(config));
    registry_core::signal::shutdown_signal().await;
    churn.abort();
    console.stop().await?;
    console_registry.shutdown().await?;
    providers.shutdown().await?;
    Ok(())
}

/// Nodes coming and going: a worker every few seconds, a provider that crashes and returns.
async fn churn(config: RpcConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let worker = connect_registry(&config.registry_config).await?;
    let node = ServiceMetaInfo::new("batch-worker", "127.0.0.1", 9100);
    let mut round = 0u32;
    loop {
        let report = connect_registry(&config.registry_config).await?;
        report
            .register(ServiceMetaInfo::new("report-service", "127.0.0.1", 9200))
            .await?;
        for _ in 0..3 {
            worker.register(node.clone()).await?;
            tokio::time::sleep(Duration::from_secs(4)).await;
            worker.unregister(&node).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        // A crash: no deregistration, no heartbeat; the store drops the node after its TTL.
        drop(report);
        round += 1;
        tracing::debug!(round, "report-service crashed");
        tokio::time::sleep(TTL + Duration::from_secs(5)).await;
    }
}
