//! What the console knows: every service and node under the root as the root subscription
//! delivered them, the TTL deadlines last read, and the change log. Pure: changes in, JSON
//! views out, no I/O (tested without a store).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use registry_core::{Node, ServiceChange, ServiceMetaInfo};

pub(crate) use crate::views::{
    describe, epoch_ms, LogEntry, NodeView, ServiceDelta, ServiceSummary, ServiceView,
};

/// One service's nodes.
#[derive(Debug, Default)]
struct Service {
    name: String,
    version: String,
    group: String,
    /// By address.
    nodes: BTreeMap<String, Node>,
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
            let (kind, detail) = match &before {
                Some(old) => ("updated", describe(old, node)),
                None => ("added", String::new()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::NodeDiff;

    fn change(added: &[Node], updated: &[Node], removed: &[Node]) -> ServiceChange {
        ServiceChange {
            service_key: Arc::from(""),
            nodes: Arc::from(Vec::new()),
            diff: NodeDiff {
                added: added.to_vec(),
                updated: updated.to_vec(),
                removed: removed.to_vec(),
            },
            resync: false,
            stale: false,
        }
    }

    fn node(port: u16) -> Node {
        Arc::new(ServiceMetaInfo::new("users", "10.0.0.1", port))
    }

    #[test]
    fn changes_after_the_listing_are_logged_and_counted() {
        let mut model = Model::new(2);
        let now = SystemTime::now();
        assert_eq!(model.apply(&change(&[node(1)], &[], &[]), now).len(), 1);
        assert!(model.log(None).is_empty(), "the listing is not a change");
        assert_eq!(model.last_change, None);
        let heavier = Arc::new(ServiceMetaInfo::clone(&node(1)).with_weight(3));
        let deltas = model.apply(&change(&[node(2)], &[heavier], &[]), now);
        assert_eq!(deltas[0].added.len(), 1);
        assert_eq!(deltas[0].updated[0].weight, 3);
        let log = model.log(Some("users:1.0"));
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].detail, "weight 1 -> 3");
        assert_eq!(model.counts(), (1, 2));
        model.apply(&change(&[], &[], &[node(1), node(2)]), now);
        assert_eq!(model.counts(), (0, 0));
        assert_eq!(model.log(None).len(), 2, "bounded by the capacity");
        assert!(model.service("users:1.0").is_none());
        assert!(model.apply(&change(&[], &[], &[]), now).is_empty());
    }

    #[test]
    fn deadlines_are_sent_when_they_move() {
        let mut model = Model::new(10);
        model.apply(&change(&[node(1)], &[], &[]), SystemTime::now());
        let at = |ms| HashMap::from([(("users:1.0".to_owned(), "10.0.0.1:1".to_owned()), ms)]);
        assert_eq!(model.set_deadlines(at(10_000), 1000).len(), 1);
        assert!(
            model.set_deadlines(at(10_600), 1000).is_empty(),
            "within the tolerance"
        );
        assert_eq!(model.set_deadlines(at(12_000), 1000).len(), 1, "renewed");
        let unknown = HashMap::from([(("orders:1.0".to_owned(), "10.0.0.1:1".to_owned()), 1)]);
        assert!(model.set_deadlines(unknown, 1000).is_empty());
        assert_eq!(
            model
                .service("users:1.0")
                .unwrap_or_else(|| unreachable!())
                .nodes[0]
                .expires_at,
            Some(12_000)
        );
    }
}
