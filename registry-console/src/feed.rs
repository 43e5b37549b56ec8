//! The two background tasks: the root subscription feeding the model (every node change, as
//! it happens), and the sampler reading what no watch delivers (TTLs left, the store's health).
//!
//! Nodes are never polled: they come from one [`Registry::watch_all`](registry_core::Registry::watch_all)
//! stream, the cache's one watch of the whole root. A TTL renewal is not a change of the
//! store's data (an etcd lease keep-alive, a Redis deadline push), so the TTLs left are read
//! with one `Backend::ttls` request per interval (etcd: one per lease), and only while a page
//! is open; the page counts down between reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use registry_core::backend::with_timeout;
use registry_core::{error_chain, Backoff, RegistryError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::Hub;
use crate::model::epoch_ms;

/// A deadline that moved by less than this is not sent again (etcd reports whole seconds).
const DEADLINE_TOLERANCE_MS: u64 = 1000;
/// Health is checked this often while no page is open.
const IDLE_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// The sampler never reads more often than this, however often it is woken.
const MIN_SAMPLE_SPACING: Duration = Duration::from_millis(100);

/// Follows the root subscription until `cancel` or the registry's shutdown. The first
/// subscription is retried with backoff while the store does not answer.
pub(crate) async fn follow(hub: Arc<Hub>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut warned = false;
    let mut changes = loop {
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            result = hub.registry.watch_all() => result,
        };
        match result {
            Ok(changes) => break changes,
            Err(RegistryError::Shutdown) => return,
            Err(error) => {
                let error = error_chain(&error);
                if !warned {
                    warn!(%error, "cannot list the registry yet; the console retries");
                    warned = true;
                }
                hub.set_health(Err(error));
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    if warned {
        info!("the registry answers again; the console follows it");
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            change = changes.next() => match change {
                Some(change) => hub.apply(&change),
                None => {
                    debug!("the registry shut down; the console's feed ends");
                    return;
                }
            },
        }
    }
}

/// Reads the store's health (always) and the TTLs left (while a page is open), every sample
/// interval, or soon after a change.
pub(crate) async fn sample(hub: Arc<Hub>, cancel: CancellationToken) {
    let backend = hub.registry.backend().clone();
    let name = backend.name();
    let timeout = hub.registry.options().timeout;
    let root = hub.registry.options().keys.root().to_owned();
    loop {
        let health = with_timeout(name, timeout, || "health".into(), backend.health())
            .await
            .and_then(|r| r);
        hub.set_health(health.map_err(|e| error_chain(&e)));
        let watched = hub.watchers() > 0;
        if watched && hub.model().loaded {
            match with_timeout(
                name,
                timeout,
                || format!("ttls {root}"),
                backend.ttls(&root),
            )
            .await
            .and_then(|r| r)
            {
                Ok(ttls) => hub.set_deadlines(deadlines(&root, ttls), DEADLINE_TOLERANCE_MS),
                Err(error) => debug!(error = %error_chain(&error), "cannot read the TTLs"),
            }
        }
        let wait = if watched {
            hub.options.sample_interval
        } else {
            IDLE_HEALTH_INTERVAL
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = hub.sample_soon.notified() => {
                tokio::time::sleep(MIN_SAMPLE_SPACING).await;
            }
        }
    }
}

/// Store keys and TTLs left -> (service key, address) and deadline, ms since the epoch. Keys
/// that are not nodes (not exactly two levels below the root) are left out.
fn deadlines(root: &str, ttls: HashMap<String, Duration>) -> HashMap<(String, String), u64> {
    let now = epoch_ms(SystemTime::now());
    ttls.into_iter()
        .filter_map(|(key, left)| {
            let (service, address) = key.strip_prefix(root)?.split_once('/')?;
            if address.contains('/') || service.is_empty() || address.is_empty() {
                return None;
            }
            let left = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            Some((
                (service.to_owned(), address.to_owned()),
                now.saturating_add(left),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_keys_become_deadlines() {
        let ttls = HashMap::from([
            (
                "/rpc/users:1.0/10.0.0.1:80".to_owned(),
                Duration::from_secs(5),
            ),
            ("/rpc/users:1.0/x/y".to_owned(), Duration::from_secs(5)),
            ("/rpc/.health/1/probe".to_owned(), Duration::from_secs(5)),
            (
                "/other/users:1.0/10.0.0.1:80".to_owned(),
                Duration::from_secs(5),
            ),
        ]);
        let read = deadlines("/rpc/", ttls);
        assert_eq!(read.len(), 1);
        let deadline = read[&("users:1.0".to_owned(), "10.0.0.1:80".to_owned())];
        let now = epoch_ms(SystemTime::now());
        assert!(deadline > now + 4000 && deadline <= now + 5000);
    }
}
