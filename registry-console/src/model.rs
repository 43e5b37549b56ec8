//! What the console knows: every service and node under the root as the root subscription
//! delivered them, the TTL deadlines last read, and the change log. Pure: changes in, JSON
//! views out, no I/O (tested without a store).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use registry_core::{Node, ServiceChange, ServiceMetaInfo};
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
    fn new(node: &ServiceMetaInfo, expires_at: Option<u64>) -> Self {
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

/// One service's nodes.
#[derive(Debug, Default)]
struct Service {
    name: String,
    version: String,
    group: String,
    /// By address.
    nodes: BTreeMap<String, Node>,
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

/// Every service under the root.
#[derive(Debug)]
pub(crate) struct Model {
    /// Bumped by each applied change.
    pub(crate) seq: u64,
    services: BTreeMap<String, Service>,
    /// (service key, address) -> deadline, ms since the epoch.
    deadlines: HashMap<(String, String), u64>,
    pub(crate) last_change: Option<u64>,
    log: VecDeque<LogEntry>,
    log_capacity: usize,
    /// False until the first listing arrived.
    pub(crate) loaded: bool,
}

impl Model {
    pub(crate) fn new(log_capacity: usize) -> Self {
        Self {
            seq: 0,
            services: BTreeMap::new(),
            deadlines: HashMap::new(),
            last_change: None,
            log: VecDeque::new(),
            log_capacity,
            loaded: false,
        }
    }

    /// Applies one change of the root subscription; returns what it did per service (empty
    /// when nothing changed). The first delivery is the listing: no change log for it.
    pub(crate) fn apply(&mut self, change: &ServiceChange, now: SystemTime) -> Vec<ServiceDelta> {
        let first = !self.loaded;
        self.loaded = true;
        if change.diff.is_empty() {
            return Vec::new();
        }
        self.seq += 1;
        let at = epoch_ms(now);
        let mut deltas: BTreeMap<String, ServiceDelta> = BTreeMap::new();
        for node in &change.diff.removed {
            let (key, address) = (node.service_key(), node.address());
            if let Some(service) = self.services.get_mut(&key) {
                service.nodes.remove(&address);
                if service.nodes.is_empty() {
                    self.services.remove(&key);
                }
            }
            self.deadlines.remove(&(key.clone(), address.clone()));
            self.note(first, at, &key, &address, "removed", String::new());
            delta(&mut deltas, node).removed.push(address);
        }
        for (node, is_new) in change
            .diff
            .added
            .iter()
            .map(|n| (n, true))
            .chain(change.diff.updated.iter().map(|n| (n, false)))
        {
            let (key, address) = (node.service_key(), node.address());
            let service = self.services.entry(key.clone()).or_insert_with(|| Service {
                name: node.service_name.clone(),
                version: node.service_version.clone(),
                group: node.service_group.clone(),
                nodes: BTreeMap::new(),
            });
            let before = service.nodes.insert(address.clone(), node.clone());
            let (kind, detail) = match (&before, is_new) {
                (Some(old), _) => ("updated", describe(old, node)),
                (None, true) => ("added", String::new()),
                (None, false) => ("added", String::new()),
            };
            self.note(first, at, &key, &address, kind, detail);
            let expires = self.deadlines.get(&(key, address)).copied();
            let view = NodeView::new(node, expires);
            let d = delta(&mut deltas, node);
            if is_new {
                d.added.push(view);
            } else {
                d.updated.push(view);
            }
        }
        if !first {
            self.last_change = Some(at);
        }
        deltas.into_values().collect()
    }

    fn note(
        &mut self,
        first: bool,
        at: u64,
        service: &str,
        address: &str,
        kind: &'static str,
        detail: String,
    ) {
        if first || self.log_capacity == 0 {
            return;
        }
        if self.log.len() == self.log_capacity {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            seq: self.seq,
            at,
            service: service.to_owned(),
            address: address.to_owned(),
            kind,
            detail,
        });
    }

    /// Replaces the deadlines read from the store (keyed by service key and address); returns
    /// those that moved by more than `tolerance_ms` from what the page was told, or appeared.
    pub(crate) fn set_deadlines(
        &mut self,
        read: HashMap<(String, String), u64>,
        tolerance_ms: u64,
    ) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut moved: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((service, address), deadline) in read {
            let known = self
                .services
                .get(&service)
                .is_some_and(|s| s.nodes.contains_key(&address));
            if !known {
                continue;
            }
            let entry = (service, address);
            let changed = self
                .deadlines
                .get(&entry)
                .is_none_or(|old| old.abs_diff(deadline) > tolerance_ms);
            if changed {
                moved
                    .entry(entry.0.clone())
                    .or_default()
                    .insert(entry.1.clone(), deadline);
                self.deadlines.insert(entry, deadline);
            }
        }
        moved
    }

    /// Number of services and of nodes.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let nodes = self.services.values().map(|s| s.nodes.len()).sum();
        (self.services.len(), nodes)
    }

    /// Every service's line, sorted by key.
    pub(crate) fn summaries(&self) -> Vec<ServiceSummary> {
        self.services
            .iter()
            .map(|(key, s)| ServiceSummary {
                key: key.clone(),
                name: s.name.clone(),
                version: s.version.clone(),
                group: s.group.clone(),
                nodes: s.nodes.len(),
                enabled: s.nodes.values().filter(|n| n.enabled).count(),
                healthy: s.nodes.values().filter(|n| n.healthy).count(),
            })
            .collect()
    }

    /// One service with its nodes, `None` when it has none.
    pub(crate) fn service(&self, key: &str) -> Option<ServiceView> {
        self.services.get(key).map(|s| self.view(key, s))
    }

    /// Every service with its nodes, sorted by key.
    pub(crate) fn services(&self) -> Vec<ServiceView> {
        self.services.iter().map(|(k, s)| self.view(k, s)).collect()
    }

    fn view(&self, key: &str, s: &Service) -> ServiceView {
        ServiceView {
            key: key.to_owned(),
            name: s.name.clone(),
            version: s.version.clone(),
            group: s.group.clone(),
            nodes: s
                .nodes
                .iter()
                .map(|(address, n)| {
                    let deadline = self.deadlines.get(&(key.to_owned(), address.clone()));
                    NodeView::new(n, deadline.copied())
                })
                .collect(),
        }
    }

    /// Whether `service` has a node at `address` now.
    pub(crate) fn has_node(&self, service: &str, address: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.nodes.contains_key(address))
    }

    /// The change log, oldest first; only `service`'s when given.
    pub(crate) fn log(&self, service: Option<&str>) -> Vec<LogEntry> {
        self.log
            .iter()
            .filter(|e| service.is_none_or(|s| e.service == s))
            .cloned()
            .collect()
    }
}

fn delta<'a>(
    deltas: &'a mut BTreeMap<String, ServiceDelta>,
    node: &Arc<ServiceMetaInfo>,
) -> &'a mut ServiceDelta {
    deltas
        .entry(node.service_key())
        .or_insert_with(|| ServiceDelta {
            service: node.service_key(),
            name: node.service_name.clone(),
            version: node.service_version.clone(),
            group: node.service_group.clone(),
            ..ServiceDelta::default()
        })
}

/// What changed from `old` to `new`, in a few words.
fn describe(old: &ServiceMetaInfo, new: &ServiceMetaInfo) -> String {
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
