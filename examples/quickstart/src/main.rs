//! The quickstart: a provider and a consumer in one process on the embedded `memory` registry.
//!
//! `make demo` (or `cargo run -p quickstart`) prints the whole story: register,
//! discover (from the registry, then from the cache), heartbeats renewing the node's TTL, a
//! graceful shutdown, the watch updating the consumer's cache, and the "no provider" error.

use std::time::{Duration, Instant};

use registry_core::{Registry, RegistryError, ServiceChange, ServiceMetaInfo};
use rpc_config::config::RpcConfig;
use rpc_config::connect::{connect_registry, registry_options};
use rpc_config::factory::BackendFactory;

const SERVICE: &str = "user-service";
const TTL: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);

fn step(start: Instant, text: impl AsRef<str>) {
    println!(
        "[{:>6.2}s] {}",
        start.elapsed().as_secs_f64(),
        text.as_ref()
    );
}

async fn client(config: &RpcConfig) -> Result<Registry, Box<dyn std::error::Error>> {
    // Both clients name the same in-process store (the address), as two processes would name
    // one etcd: the registry is picked by name through the backend factory.
    Ok(connect_registry(&config.registry_config).await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rpc_config::logging::init();
    let start = Instant::now();
    // The runtime's configuration, with the defaults of the original framework (registry
    // `memory`), a store name for the address and a short TTL so the demo is quick.
    let mut config = RpcConfig::default().with_address("quickstart");
    config.registry_config.ttl = TTL;
    config.registry_config.heartbeat_interval = HEARTBEAT;
    let options = registry_options(&config.registry_config);
    println!(
        "== Quickstart on the embedded `{}` registry (known registries: {})",
        config.registry_config.registry,
        BackendFactory::global().names().join(", ")
    );
    println!(
        "   ttl {TTL:?}, heartbeat every {HEARTBEAT:?}, root {}",
        options.keys.root()
    );

    // 1. The provider registers itself.
    let provider = client(&config).await?;
    let node = provider
        .register(
            ServiceMetaInfo::new(SERVICE, "127.0.0.1", 8081)
                .with_weight(10)
                .with_metadata("zone", "local"),
        )
        .await?;
    let registered_at = node.register_time.map(humantime::format_rfc3339_millis);
    step(
        start,
        format!(
            "provider registered {} at {} (key {}), registered at {}",
            node.service_key(),
            node.address(),
            options.keys.node_path(&node),
            registered_at.map(|t| t.to_string()).unwrap_or_default()
        ),
    );

    // 2. The consumer discovers it: first from the registry, then from its cache.
    let consumer = client(&config).await?;
    let key = node.service_key();
    for round in 1..=2 {
        let nodes = consumer.discover(&key).await?;
        step(
            start,
            format!(
                "consumer lookup #{round}: {} node(s) [{}] from the {}",
                nodes.len(),
                nodes
                    .iter()
                    .map(|n| n.address())
                    .collect::<Vec<_>>()
                    .join(", "),
                nodes.origin().as_str()
            ),
        );
    }

    // The consumer also listens to changes (observer pattern). Removals are also sent to a
    // channel, so the story waits for the listener instead of racing it.
    let (removed_tx, mut removed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let _subscription = consumer
        .subscribe(&key, {
            move |change: &ServiceChange| {
                for n in &change.diff.added {
                    step(
                        start,
                        format!("  watch: {} added {}", change.service_key, n.address()),
                    );
                }
                for n in &change.diff.removed {
                    step(
                        start,
                        format!(
                            "  watch: {} removed {} -> consumer cache now has {} node(s)",
                            change.service_key,
                            n.address(),
                            change.nodes.len()
                        ),
                    );
                    let _ = removed_tx.send(n.address());
                }
            }
        })
        .await?;

    // 3. Heartbeats renew the node's TTL: watch it for longer than one TTL.
    let path = options.keys.node_path(&node);
    let mut last = provider
        .backend()
        .ttl_remaining(&path)
        .await?
        .unwrap_or_default();
    let mut renewals = 0;
    let watch_until = Instant::now() + TTL + HEARTBEAT;
    while Instant::now() < watch_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(left) = provider.backend().ttl_remaining(&path).await? else {
            return Err("node expired despite heartbeats".into());
        };
        if left > last + Duration::from_millis(200) {
            renewals += 1;
            step(
                start,
                format!(
                    "heartbeat renewed the lease: ttl left {:.1}s -> {:.1}s",
                    last.as_secs_f64(),
                    left.as_secs_f64()
                ),
            );
        }
        last = left;
    }
    step(start, format!("node still registered after {:?} (> ttl {TTL:?}) thanks to {renewals} heartbeat renewal(s)", TTL + HEARTBEAT));
    if renewals == 0 {
        return Err("no heartbeat renewal observed".into());
    }

    // 4. The provider goes offline gracefully; the watch updates the consumer's cache.
    step(
        start,
        "provider shutting down gracefully (deregisters its nodes)",
    );
    provider.shutdown().await?;
    // The listener runs after the cache entry was updated: once it saw the removal, the cache
    // holds no node.
    match tokio::time::timeout(Duration::from_secs(2), removed_rx.recv()).await {
        Ok(Some(address)) if address == node.address() => {}
        _ => return Err("the watch did not report the removal".into()),
    }
    if consumer.cached(&key).is_some_and(|n| !n.is_empty()) {
        return Err("consumer cache was not updated by the watch".into());
    }
    step(
        start,
        "consumer cache updated by the watch: 0 nodes (no store read needed)",
    );

    // 5. The next lookup fails with a clear error.
    match consumer.discover(&key).await {
        Err(error @ RegistryError::NoProvider { .. }) => {
            step(start, format!("next lookup failed as expected: {error}"))
        }
        Ok(nodes) => {
            return Err(format!("expected no provider, found {} node(s)", nodes.len()).into())
        }
        Err(other) => return Err(other.into()),
    }
    consumer.shutdown().await?;
    println!("== Done");
    Ok(())
}
