//! Waiting on what a registry shows, and recording what its listeners see.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registry_core::{Registry, RegistryError, ServiceChange, ServiceMetaInfo};

/// Polls `check` every 20 ms until it is true; panics with `what` after `limit`.
///
/// Time is Tokio's: under `tokio::time::pause()` the limit and the returned duration are in
/// paused time (the real clock otherwise).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The addresses a registry serves for `service_key` (empty on no provider).
pub async fn addresses(registry: &Registry, service_key: &str) -> Vec<String> {
    match registry.discover(service_key).await {
        Ok(nodes) => {
            let mut a: Vec<String> = nodes.iter().map(|n| n.address()).collect();
            a.sort();
            a
        }
        Err(RegistryError::NoProvider { .. }) => Vec::new(),
        Err(e) => panic!("discover {service_key} failed: {e}"),
    }
}

/// A listener that records every change.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<ServiceChange>>>);

impl Recorder {
    /// The listener to subscribe: it appends every change it is called with.
    pub fn listener(&self) -> impl Fn(&ServiceChange) + Send + Sync + 'static {
        let log = self.0.clone();
        move |c: &ServiceChange| log.lock().unwrap().push(c.clone())
    }
    /// Every change recorded so far, oldest first.
    pub fn changes(&self) -> Vec<ServiceChange> {
        self.0.lock().unwrap().clone()
    }
    /// The addresses every recorded diff removed, in order.
    pub fn removed(&self) -> Vec<String> {
        self.changes()
            .iter()
            .flat_map(|c| c.diff.removed.iter().map(|n| n.address()))
            .collect()
    }
    /// The sorted addresses of the last change's nodes (empty before any change).
    pub fn current(&self) -> Vec<String> {
        let changes = self.changes();
        let mut a: Vec<String> = changes
            .last()
            .map(|c| c.nodes.iter().map(|n| n.address()).collect())
            .unwrap_or_default();
        a.sort();
        a
    }
}

/// Node `port` of service `svc:1.0` on 127.0.0.1 (the fault scenarios' service).
pub fn svc(port: u16) -> ServiceMetaInfo {
    ServiceMetaInfo::new("svc", "127.0.0.1", port)
}

/// The sorted addresses of `svc` nodes on `ports`, as [`addresses`] returns them.
pub fn svc_addresses(ports: &[u16]) -> Vec<String> {
    let mut a: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    a.sort();
    a
}
