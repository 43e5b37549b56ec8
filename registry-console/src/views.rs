//! What the console sends: the JSON views of nodes, services, changes and the change log.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use registry_core::ServiceMetaInfo;
use serde::Serialize;

/// Milliseconds since the Unix epoch (what the page's `Date.now()` counts).
pub(crate) fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One node as the console shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeView {
    pub(crate) address: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) weight: u32,
    pub(crate) enabled: bool,
    pub(crate) healthy: bool,
    pub(crate) metadata: BTreeMap<String, String>,
    /// Registration time, ms since the epoch.
    pub(crate) register_time: Option<u64>,
    /// When the node expires unless renewed, ms since the epoch (last TTL read), where the
    /// store has a TTL.
    pub(crate) expires_at: Option<u64>,
}

impl NodeView {
    pub(crate) fn new(node: &ServiceMetaInfo, expires_at: Option<u64>) -> Self {
        Self {
            address: node.address(),
            host: node.service_host.clone(),
            port: node.service_port,
            weight: node.weight,
            enabled: node.enabled,
            healthy: node.healthy,
            metadata: node.metadata.clone(),
            register_time: node.register_time.map(epoch_ms),
            expires_at,
        }
    }
}

/// A service with its nodes, as `GET /api/services/{key}` and the snapshot show it.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceView {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) group: String,
    pub(crate) nodes: Vec<NodeView>,
}

/// A service's line in `GET /api/services`.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceSummary {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) group: String,
    pub(crate) nodes: usize,
    pub(crate) enabled: usize,
    pub(crate) healthy: usize,
}

/// One entry of the change log.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LogEntry {
    pub(crate) seq: u64,
    /// ms since the epoch.
    pub(crate) at: u64,
    pub(crate) service: String,
    pub(crate) address: String,
    /// `added`, `removed` or `updated`.
    pub(crate) kind: &'static str,
    /// What changed, for `updated` (e.g. `weight 1 -> 3, disabled`).
    pub(crate) detail: String,
}

/// What one root change did to one service, as the `change` event carries it.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ServiceDelta {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) group: String,
    pub(crate) added: Vec<NodeView>,
    pub(crate) updated: Vec<NodeView>,
    /// Addresses.
    pub(crate) removed: Vec<String>,
}

/// What changed from `old` to `new`, in a few words.
pub(crate) fn describe(old: &ServiceMetaInfo, new: &ServiceMetaInfo) -> String {
    let mut what = Vec::new();
    if old.weight != new.weight {
        what.push(format!("weight {} -> {}", old.weight, new.weight));
    }
    if old.enabled != new.enabled {
        what.push(if new.enabled { "enabled" } else { "disabled" }.to_owned());
    }
    if old.healthy != new.healthy {
        what.push(if new.healthy { "healthy" } else { "unhealthy" }.to_owned());
    }
    if old.metadata != new.metadata {
        what.push("metadata".to_owned());
    }
    if old.register_time != new.register_time {
        what.push("registered again".to_owned());
    }
    what.join(", ")
}
