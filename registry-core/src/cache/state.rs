//! The per-service state machine, pure: raw store entries and events in, served node lists out.
//!
//! It tracks the store's *truth* (every well-formed node under the service prefix) and derives
//! the *served* list from it, applying the [`EmptyProtection`] policy and the local evictions of
//! the RPC layer. No I/O happens here, so every rule is unit tested with plain values.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

use tracing::{debug, warn};

use crate::backend::{Junk, KeyValue, Listing, Revision, WatchEvent};
use crate::instance::{KeySpace, ServiceMetaInfo};
use crate::options::EmptyProtection;
use crate::overrides::Overrides;

/// A node as held by the cache: shared, never copied per read.
pub type Node = Arc<ServiceMetaInfo>;

/// What changed between two served lists, by node address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeDiff {
    /// Nodes that appeared.
    pub added: Vec<Node>,
    /// Nodes whose registration changed (weight, metadata, ...).
    pub updated: Vec<Node>,
    /// Nodes that went away.
    pub removed: Vec<Node>,
}

impl NodeDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    /// The difference from `old` to `new`, nodes matched by service and address.
    ///
    /// Cost: the runs at both ends where the two lists hold the very same `Arc`s (a published
    /// list keeps the `Arc`s of the nodes that did not change, in the same order) are skipped
    /// with pointer compares; only the part in between is hashed. One change in a list of
    /// 10,000 nodes (the whole-root entry) costs a pass of pointer compares, not 20,000 hashed
    /// lookups.
    pub fn between(old: &[Node], new: &[Node]) -> Self {
        fn id(n: &ServiceMetaInfo) -> (&str, &str, &str, &str, u16) {
            (
                &n.service_name,
                &n.service_version,
                &n.service_group,
                &n.service_host,
                n.service_port,
            )
        }
        // Ids are unique within a list, so a node at the same place in both (the same `Arc`)
        // appears nowhere else in either: it is unchanged and can be left out.
        let head = old
            .iter()
            .zip(new)
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        let (old, new) = (&old[head..], &new[head..]);
        let tail = old
            .iter()
            .rev()
            .zip(new.iter().rev())
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        let (old, new) = (&old[..old.len() - tail], &new[..new.len() - tail]);
        let mut before: HashMap<_, &Node, foldhash::fast::RandomState> =
            old.iter().map(|n| (id(n), n)).collect();
        let mut diff = NodeDiff::default();
        for n in new {
            match before.remove(&id(n)) {
                None => diff.added.push(n.clone()),
                Some(prev) if !Arc::ptr_eq(prev, n) && prev != n => diff.updated.push(n.clone()),
                Some(_) => {}
            }
        }
        // What was not matched went away (in the old list's order).
        for n in old {
            if before.contains_key(&id(n)) {
                diff.removed.push(n.clone());
            }
        }
        diff
    }
}

/// Decodes a raw store entry into a node, or says why it is junk: not a node path under the
/// root, not JSON of a node, a value that does not match its key, or (when `service` is given)
/// a node of another service.
pub(crate) fn decode_node(
    keys: &KeySpace,
    kv: &KeyValue,
    service: Option<&str>,
) -> Result<ServiceMetaInfo, &'static str> {
    let (path_service, address) = keys.split_node_path(&kv.key).ok_or("not a node path")?;
    let node: ServiceMetaInfo =
        serde_json::from_slice(&kv.value).map_err(|_| "not the JSON of a node")?;
    if service.is_some_and(|s| s != path_service)
        || node.service_key() != path_service
        || node.address() != address
    {
        return Err("value does not match its key");
    }
    Ok(node)
}

/// Decodes an overrides record, or `None` (with a warning) when it is junk.
pub(crate) fn decode_overrides(kv: &KeyValue) -> Option<Overrides> {
    match serde_json::from_slice(&kv.value) {
        Ok(o) => Some(o),
        Err(e) => {
            warn!(key = %kv.key.escape_debug(), error = %e, "skipping a malformed overrides record");
            None
        }
    }
}

/// The overrides records of a listing, by service (malformed ones skipped with a warning).
pub(crate) fn decode_overrides_listing(
    keys: &KeySpace,
    entries: &[KeyValue],
) -> HashMap<String, Overrides> {
    entries
        .iter()
        .filter_map(|kv| {
            let service = keys.split_overrides_path(&kv.key)?;
            Some((service.to_owned(), decode_overrides(kv)?))
        })
        .collect()
}

/// Decodes a listing's entries of `service` (every service when `None`) under `prefix`,
/// reporting the junk in one warning. Overrides records (met when listing the root) are
/// not nodes, and not junk either: they are skipped quietly.
pub(crate) fn decode_listing<'a>(
    keys: &KeySpace,
    prefix: &str,
    entries: &'a [KeyValue],
    service: Option<&str>,
) -> Vec<(&'a KeyValue, ServiceMetaInfo)> {
    let mut junk = Junk::default();
    let mut nodes = Vec::with_capacity(entries.len());
    for kv in entries.iter().filter(|kv| kv.key.starts_with(prefix)) {
        if keys.split_overrides_path(&kv.key).is_some() {
            continue;
        }
        match decode_node(keys, kv, service) {
            Ok(node) => nodes.push((kv, node)),
            Err(why) => junk.note(&kv.key, why),
        }
    }
    junk.report(prefix, "store entries that are not registry nodes");
    nodes
}

/// Why the truth changed: decides how the empty protection applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A full relist (first list, or after the watch history was lost).
    Resync,
    /// A change seen on a live watch.
    Event,
}

/// The served list, as published to readers.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    pub(crate) nodes: Arc<[Node]>,
    /// True when the list is kept by the empty protection while the store shows no node.
    pub(crate) stale: bool,
}

/// The per-service state.
#[derive(Debug)]
pub(crate) struct ServiceState {
    service_key: Arc<str>,
    prefix: String,
    keys: KeySpace,
    policy: EmptyProtection,
    /// Store truth: full key -> node.
    truth: BTreeMap<String, Node>,
    revision: Revision,
    /// Addresses taken out locally (a call to them failed) until the store changes them or the
    /// deadline passes.
    evicted: HashMap<String, Instant>,
    served: Served,
    /// The overrides records of the services watched (one for a service, every one for the
    /// root), applied to the nodes served.
    overrides: HashMap<String, Overrides>,
    /// The ratio protection: the largest share of the served nodes one resync may take away,
    /// and how long a larger loss waits to be confirmed.
    threshold: Option<(f64, std::time::Duration)>,
    /// While a large loss waits to be confirmed: until when.
    protected_until: Option<Instant>,
}

impl ServiceState {
    /// The state of `service_key`; an empty key means every service under the root.
    pub(crate) fn new(keys: &KeySpace, service_key: &str, policy: EmptyProtection) -> Self {
        let prefix = if service_key.is_empty() {
            keys.root().to_owned()
        } else {
            keys.service_prefix(service_key)
        };
        Self {
            service_key: Arc::from(service_key),
            prefix,
            keys: keys.clone(),
            policy,
            truth: BTreeMap::new(),
            revision: 0,
            evicted: HashMap::new(),
            served: Served {
                nodes: Arc::from(Vec::new()),
                stale: false,
            },
            threshold: None,
            protected_until: None,
            overrides: HashMap::new(),
        }
    }

    /// Serves `nodes` from a disk snapshot, marked stale, until the store's first listing
    /// (which replaces them, under the empty protection).
    pub(crate) fn seed_from_snapshot(&mut self, nodes: Vec<ServiceMetaInfo>) {
        self.served = Served {
            nodes: nodes.into_iter().map(Arc::new).collect(),
            stale: true,
        };
    }

    /// Turns the ratio protection on: a resync that takes away more than `max_gone` (0..1) of
    /// the served nodes keeps serving them (marked stale) for `confirm_after`, or until the
    /// store shows enough of them again.
    pub(crate) fn with_threshold(
        mut self,
        max_gone: f64,
        confirm_after: std::time::Duration,
    ) -> Self {
        self.threshold = Some((max_gone, confirm_after));
        self
    }

    pub(crate) fn service_key(&self) -> &Arc<str> {
        &self.service_key
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    pub(crate) fn served(&self) -> &Served {
        &self.served
    }

    /// Whether the store's truth holds `key` (a full key, junk excluded).
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.truth.contains_key(key)
    }

    /// The service filter of this state: `None` for the whole root.
    fn service_filter(&self) -> Option<&str> {
        Some(&*self.service_key).filter(|s| !s.is_empty())
    }

    /// Replaces the truth with a full listing, built aside and swapped in at once.
    /// Returns the diff of the served list.
    pub(crate) fn relist(&mut self, listing: &Listing, now: Instant) -> Option<NodeDiff> {
        self.truth = decode_listing(
            &self.keys,
            &self.prefix,
            &listing.entries,
            self.service_filter(),
        )
        .into_iter()
        .map(|(kv, node)| (kv.key.clone(), Arc::new(node)))
        .collect();
        self.revision = listing.revision;
        self.republish(Cause::Resync, now)
    }

    /// Applies one watch event; events below the current revision are ignored. Several events
    /// may share a revision (an etcd transaction or lease revoke deletes many keys at once), so
    /// events *at* the current revision are applied: applying an event twice changes nothing.
    /// Returns true when the truth changed (publish with [`Self::republish`]).
    pub(crate) fn apply(&mut self, event: &WatchEvent) -> bool {
        if event.revision() < self.revision {
            debug!(
                revision = event.revision(),
                current = self.revision,
                "ignoring old event"
            );
            return false;
        }
        self.revision = event.revision();
        if !event.key().starts_with(&self.prefix) {
            return false;
        }
        if self.keys.split_overrides_path(event.key()).is_some() {
            // Seen by a watch of the root; the registry's overrides watch applies it.
            return false;
        }
        match event {
            WatchEvent::Put { kv, .. } => {
                match decode_node(&self.keys, kv, self.service_filter()) {
                    Ok(node) => {
                        let node = Arc::new(node);
                        // A new registration of an evicted address ends its eviction.
                        self.evicted.remove(&node.address());
                        let changed = self.truth.get(&kv.key) != Some(&node);
                        self.truth.insert(kv.key.clone(), node);
                        changed
                    }
                    // A key that turned into junk is no node any more.
                    Err(why) => {
                        debug!(key = %kv.key.escape_debug(), why, "skipping a junk entry seen by the watch");
                        self.truth.remove(&kv.key).is_some()
                    }
                }
            }
            WatchEvent::Delete { key, .. } => self.truth.remove(key).is_some(),
        }
    }

    /// Sets the overrides record of `service` (`None`: it has none) when this state serves
    /// that service. Returns true when it changed (publish with [`Self::republish`]).
    pub(crate) fn set_overrides(&mut self, service: &str, record: Option<&Overrides>) -> bool {
        if self.service_filter().is_some_and(|s| s != service) {
            return false;
        }
        match record {
            Some(o) if self.overrides.get(service) != Some(o) => {
                self.overrides.insert(service.to_owned(), o.clone());
                true
            }
            Some(_) => false,
            None => self.overrides.remove(service).is_some(),
        }
    }

    /// The services this state holds an overrides record of.
    pub(crate) fn overridden_services(&self) -> Vec<String> {
        self.overrides.keys().cloned().collect()
    }

    /// Takes `address` out of the served list until the store changes it or `until` passes.
    pub(crate) fn evict(
        &mut self,
        address: &str,
        until: Instant,
        now: Instant,
    ) -> Option<NodeDiff> {
        self.evicted.insert(address.to_owned(), until);
        self.republish(Cause::Event, now)
    }

    /// The earliest eviction deadline, if any.
    pub(crate) fn next_eviction_deadline(&self) -> Option<Instant> {
        let eviction = self.evicted.values().min().copied();
        match (eviction, self.protected_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the ratio protection holds the served list now (see [`Self::with_threshold`]).
    fn ratio_protects(&mut self, fresh: &[Node], cause: Cause, now: Instant) -> bool {
        let Some((max_gone, confirm_after)) = self.threshold else {
            return false;
        };
        let before = &self.served.nodes;
        if before.is_empty() {
            self.protected_until = None;
            return false;
        }
        let gone = before
            .iter()
            .filter(|n| !fresh.iter().any(|f| f.address() == n.address()))
            .count();
        let too_many = gone as f64 / before.len() as f64 > max_gone;
        match self.protected_until {
            // Confirmed: the store kept showing the loss for `confirm_after`.
            Some(until) if now >= until => {
                self.protected_until = None;
                false
            }
            Some(_) if too_many => true,
            Some(_) => {
                self.protected_until = None;
                false
            }
            None if too_many && cause == Cause::Resync => {
                warn!(
                    service = %self.service_key,
                    gone,
                    of = before.len(),
                    confirm_after = ?confirm_after,
                    "a resync took away more than the protect threshold: serving the last nodes until the store confirms"
                );
                self.protected_until = Some(now + confirm_after);
                true
            }
            None => false,
        }
    }

    /// Recomputes the served list from the truth. Returns `Some(diff)` when the served list
    /// must be published again (the diff is empty when only the stale mark changed).
    pub(crate) fn republish(&mut self, cause: Cause, now: Instant) -> Option<NodeDiff> {
        self.evicted.retain(|_, until| *until > now);
        let evicted = &self.evicted;
        let overrides = &self.overrides;
        // (The addresses and keys are built only when there is something to look up.)
        let fresh: Vec<Node> = self
            .truth
            .values()
            .filter(|n| evicted.is_empty() || !evicted.contains_key(&n.address()))
            .map(|n| {
                if overrides.is_empty() {
                    return n.clone();
                }
                match overrides.get(&n.service_key()) {
                    Some(o) => o.apply(n),
                    None => n.clone(),
                }
            })
            .collect();
        let protect = fresh.is_empty()
            && self.truth.is_empty()
            && !self.served.nodes.is_empty()
            && match self.policy {
                EmptyProtection::Off => false,
                EmptyProtection::OnResync => cause == Cause::Resync || self.served.stale,
                EmptyProtection::Always => true,
            };
        let ratio = !protect && self.ratio_protects(&fresh, cause, now);
        let evicted = &self.evicted;
        let (next, stale) = if ratio {
            // The last served nodes (minus the ones found dead), plus any new ones.
            let mut kept: Vec<Node> = self
                .served
                .nodes
                .iter()
                .filter(|n| !evicted.contains_key(&n.address()))
                .cloned()
                .collect();
            for n in &fresh {
                if !kept.iter().any(|k| k.address() == n.address()) {
                    kept.push(n.clone());
                }
            }
            (kept, true)
        } else if protect {
            // Keep the last known nodes, minus the ones the RPC layer found dead.
            let kept: Vec<Node> = self
                .served
                .nodes
                .iter()
                .filter(|n| !evicted.contains_key(&n.address()))
                .cloned()
                .collect();
            if !self.served.stale && !kept.is_empty() {
                warn!(
                    service = %self.service_key,
                    nodes = kept.len(),
                    ?cause,
                    "store shows no node: keeping the last known nodes (empty protection)"
                );
            }
            let stale = !kept.is_empty();
            (kept, stale)
        } else {
            (fresh, false)
        };
        let diff = NodeDiff::between(&self.served.nodes, &next);
        if diff.is_empty() && stale == self.served.stale {
            return None;
        }
        self.served = Served {
            nodes: Arc::from(next),
            stale,
        };
        Some(diff)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    const SVC: &str = "users:1.0";

    fn node(port: u16) -> ServiceMetaInfo {
        ServiceMetaInfo::new("users", "10.0.0.1", port)
    }

    #[test]
    fn diff_skips_shared_ends_and_finds_every_change() {
        let list: Vec<Node> = (1..=6).map(|p| Arc::new(node(p))).collect();
        let ports = |nodes: &[Node]| nodes.iter().map(|n| n.service_port).collect::<Vec<_>>();
        assert!(NodeDiff::between(&list, &list).is_empty());
        // One added in the middle, one removed, one updated, one copied but equal.
        let mut next = list.clone();
        next.insert(3, Arc::new(node(10)));
        next.remove(1);
        next[3] = Arc::new(node(4).with_weight(9));
        next[4] = Arc::new(node(5));
        let diff = NodeDiff::between(&list, &next);
        assert_eq!(ports(&diff.added), [10]);
        assert_eq!(ports(&diff.removed), [2]);
        assert_eq!(ports(&diff.updated), [4]);
        // Reordered lists: nothing changed.
        let reversed: Vec<Node> = list.iter().rev().cloned().collect();
        assert!(NodeDiff::between(&list, &reversed).is_empty());
        assert_eq!(
            ports(&NodeDiff::between(&[], &list).added),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            ports(&NodeDiff::between(&list, &[]).removed),
            [1, 2, 3, 4, 5, 6]
        );
    }

    fn kv(n: &ServiceMetaInfo) -> KeyValue {
        KeyValue {
            key: KeySpace::default().node_path(n),
            value: serde_json::to_vec(n).unwrap(),
        }
    }

    fn put(n: &ServiceMetaInfo, revision: Revision) -> WatchEvent {
        WatchEvent::Put {
            kv: kv(n),
            revision,
        }
    }

    fn del(n: &ServiceMetaInfo, revision: Revision) -> WatchEvent {
        WatchEvent::Delete {
            key: KeySpace::default().node_path(n),
            revision,
        }
    }

    fn state(policy: EmptyProtection) -> ServiceState {
        ServiceState::new(&KeySpace::default(), SVC, policy)
    }

    fn ports(s: &ServiceState) -> Vec<u16> {
        s.served().nodes.iter().map(|n| n.service_port).collect()
    }

    fn feed(s: &mut ServiceState, events: &[WatchEvent]) -> Option<NodeDiff> {
        let mut changed = false;
        for e in events {
            changed |= s.apply(e);
        }
        if changed {
            s.republish(Cause::Event, Instant::now())
        } else {
            None
        }
    }

    #[test]
    fn events_add_update_and_remove_single_nodes() {
        let mut s = state(EmptyProtection::Off);
        let d = feed(&mut s, &[put(&node(1), 2), put(&node(2), 3)]).unwrap();
        assert_eq!(d.added.len(), 2);
        assert_eq!(ports(&s), vec![1, 2]);

        let heavier = node(1).with_weight(9);
        let d = feed(&mut s, &[put(&heavier, 4)]).unwrap();
        assert_eq!(d.updated, vec![Arc::new(heavier)]);
        assert!(d.added.is_empty() && d.removed.is_empty());

        let d = feed(&mut s, &[del(&node(2), 5)]).unwrap();
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].service_port, 2);
        assert_eq!(ports(&s), vec![1]);
        assert_eq!(s.revision(), 5);
    }

    #[test]
    fn same_value_put_and_old_events_change_nothing() {
        let mut s = state(EmptyProtection::Off);
        feed(&mut s, &[put(&node(1), 2)]);
        assert!(feed(&mut s, &[put(&node(1), 3)]).is_none());
        // An event from before the current revision (replayed by a rewatch) is ignored.
        assert!(feed(&mut s, &[del(&node(1), 2)]).is_none());
        assert_eq!(ports(&s), vec![1]);
    }

    #[test]
    fn several_events_of_one_revision_all_apply() {
        let mut s = state(EmptyProtection::Off);
        feed(&mut s, &[put(&node(1), 2), put(&node(2), 3)]);
        // A lease revoke deletes both keys in revision 4; replaying revision 4 changes nothing.
        let d = feed(&mut s, &[del(&node(1), 4), del(&node(2), 4)]).unwrap();
        assert_eq!(d.removed.len(), 2);
        assert!(feed(&mut s, &[del(&node(1), 4), del(&node(2), 4)]).is_none());
        assert!(ports(&s).is_empty());
    }

    #[test]
    fn junk_and_mismatched_entries_are_skipped_not_fatal() {
        let mut s = state(EmptyProtection::Off);
        let junk = KeyValue {
            key: "/rpc/users:1.0/10.0.0.1:9".into(),
            value: b"not json".to_vec(),
        };
        let wrong_shape = KeyValue {
            key: "/rpc/users:1.0/10.0.0.1:8".into(),
            value: br#"{"hello":1}"#.to_vec(),
        };
        let other_service = KeyValue {
            key: "/rpc/users:1.0/10.0.0.1:7".into(),
            value: serde_json::to_vec(&ServiceMetaInfo::new("orders", "10.0.0.1", 7)).unwrap(),
        };
        let listing = Listing {
            entries: vec![junk, kv(&node(1)), wrong_shape, other_service],
            revision: 10,
        };
        let d = s.relist(&listing, Instant::now()).unwrap();
        assert_eq!(d.added.len(), 1);
        assert_eq!(ports(&s), vec![1]);
        // A node that turns into junk leaves the list.
        let mut garbled = kv(&node(1));
        garbled.value = b"{".to_vec();
        let d = feed(
            &mut s,
            &[WatchEvent::Put {
                kv: garbled,
                revision: 11,
            }],
        )
        .unwrap();
        assert_eq!(d.removed.len(), 1);
    }

    #[test]
    fn other_services_under_a_longer_prefix_are_not_seen() {
        let mut s = state(EmptyProtection::Off);
        let other = ServiceMetaInfo::new("users", "10.0.0.1", 1).with_group("canary");
        assert!(feed(&mut s, &[put(&other, 2)]).is_none());
        assert!(ports(&s).is_empty());
    }

    #[test]
    fn relist_swaps_in_the_new_list_and_reports_the_diff() {
        let mut s = state(EmptyProtection::Off);
        feed(&mut s, &[put(&node(1), 2), put(&node(2), 3)]);
        let before = s.served().nodes.clone();
        let listing = Listing {
            entries: vec![kv(&node(2)), kv(&node(3))],
            revision: 20,
        };
        let d = s.relist(&listing, Instant::now()).unwrap();
        // The old snapshot held by a reader is untouched.
        assert_eq!(before.len(), 2);
        assert_eq!(ports(&s), vec![2, 3]);
        assert_eq!(d.added[0].service_port, 3);
        assert_eq!(d.removed[0].service_port, 1);
        assert_eq!(s.revision(), 20);
    }

    #[test]
    fn empty_relist_keeps_last_known_nodes_on_resync_policy() {
        let mut s = state(EmptyProtection::OnResync);
        feed(&mut s, &[put(&node(1), 2)]);
        let empty = Listing {
            entries: vec![],
            revision: 30,
        };
        // Only the stale mark changes: publish, with an empty diff.
        assert!(s.relist(&empty, Instant::now()).unwrap().is_empty());
        assert_eq!(ports(&s), vec![1]);
        assert!(s.served().stale);
        // The store shows a node again: served becomes exactly the truth.
        let d = feed(&mut s, &[put(&node(5), 31)]).unwrap();
        assert_eq!(ports(&s), vec![5]);
        assert!(!s.served().stale);
        assert_eq!(d.removed[0].service_port, 1);
        // A graceful delete seen live does empty the list.
        feed(&mut s, &[del(&node(5), 32)]).unwrap();
        assert!(ports(&s).is_empty());
    }

    #[test]
    fn off_policy_applies_empty_relist() {
        let mut s = state(EmptyProtection::Off);
        feed(&mut s, &[put(&node(1), 2)]);
        let d = s
            .relist(
                &Listing {
                    entries: vec![],
                    revision: 3,
                },
                Instant::now(),
            )
            .unwrap();
        assert_eq!(d.removed.len(), 1);
        assert!(ports(&s).is_empty());
    }

    #[test]
    fn always_policy_keeps_the_last_node_on_events_too() {
        let mut s = state(EmptyProtection::Always);
        feed(&mut s, &[put(&node(1), 2), put(&node(2), 3)]);
        feed(&mut s, &[del(&node(1), 4)]).unwrap();
        assert!(feed(&mut s, &[del(&node(2), 5)]).unwrap().is_empty());
        assert_eq!(ports(&s), vec![2]);
        assert!(s.served().stale);
    }

    #[test]
    fn eviction_hides_a_node_until_it_is_registered_again_or_the_deadline() {
        let mut s = state(EmptyProtection::OnResync);
        feed(&mut s, &[put(&node(1), 2), put(&node(2), 3)]);
        let now = Instant::now();
        let d = s
            .evict("10.0.0.1:1", now + Duration::from_secs(5), now)
            .unwrap();
        assert_eq!(d.removed[0].service_port, 1);
        assert_eq!(ports(&s), vec![2]);
        // A relist that still shows it (TTL not expired yet) does not bring it back.
        let listing = Listing {
            entries: vec![kv(&node(1)), kv(&node(2))],
            revision: 4,
        };
        assert!(s.relist(&listing, now).is_none());
        assert_eq!(ports(&s), vec![2]);
        // After the deadline it is served again.
        s.republish(Cause::Event, now + Duration::from_secs(6))
            .unwrap();
        assert_eq!(ports(&s), vec![1, 2]);
        // A fresh registration ends an eviction at once.
        s.evict("10.0.0.1:1", now + Duration::from_secs(60), now);
        feed(&mut s, &[put(&node(1).with_weight(2), 5)]).unwrap();
        assert_eq!(ports(&s), vec![1, 2]);
    }

    #[test]
    fn stale_nodes_can_still_be_evicted() {
        let mut s = state(EmptyProtection::OnResync);
        feed(&mut s, &[put(&node(1), 2), put(&node(2), 3)]);
        let now = Instant::now();
        s.relist(
            &Listing {
                entries: vec![],
                revision: 9,
            },
            now,
        );
        assert!(s.served().stale);
        let until = now + Duration::from_secs(5);
        let d = s.evict("10.0.0.1:1", until, now).unwrap();
        assert_eq!(d.removed[0].service_port, 1);
        assert_eq!(ports(&s), vec![2]);
        assert!(s.served().stale);
        s.evict("10.0.0.1:2", until, now).unwrap();
        assert!(ports(&s).is_empty());
        assert!(!s.served().stale);
    }

    #[test]
    fn evicting_the_only_node_empties_the_list() {
        let mut s = state(EmptyProtection::OnResync);
        feed(&mut s, &[put(&node(1), 2)]);
        let now = Instant::now();
        s.evict("10.0.0.1:1", now + Duration::from_secs(5), now)
            .unwrap();
        assert!(ports(&s).is_empty());
    }

    #[test]
    fn the_protect_threshold_holds_a_mass_loss_until_confirmed_or_undone() {
        let confirm = Duration::from_secs(30);
        let t0 = Instant::now();
        let all: Vec<ServiceMetaInfo> = (1..=4).map(node).collect();
        let listing = |nodes: &[&ServiceMetaInfo], revision| Listing {
            entries: nodes.iter().map(|n| kv(n)).collect(),
            revision,
        };
        let mut s = state(EmptyProtection::OnResync).with_threshold(0.5, confirm);
        s.relist(&listing(&all.iter().collect::<Vec<_>>(), 10), t0);
        assert_eq!(ports(&s), [1, 2, 3, 4]);

        // A resync that loses 3 of 4 (75% > 50%): the last nodes stay, stale.
        s.relist(&listing(&[&all[0]], 20), t0);
        assert_eq!(ports(&s), [1, 2, 3, 4]);
        assert!(s.served().stale);
        assert_eq!(s.next_eviction_deadline(), Some(t0 + confirm));

        // Two come back on the watch: only 1 of 4 is missing now, the store's list is served.
        assert!(s.apply(&put(&all[1], 21)));
        assert!(s.apply(&put(&all[2], 22)));
        s.republish(Cause::Event, t0);
        assert_eq!(ports(&s), [1, 2, 3]);
        assert!(!s.served().stale);

        // Another mass loss, never undone: served stale until confirmed one period later.
        s.relist(&listing(&[&all[0]], 30), t0);
        assert_eq!(ports(&s), [1, 2, 3]);
        assert!(s.republish(Cause::Event, t0 + confirm / 2).is_none());
        s.republish(Cause::Event, t0 + confirm);
        assert_eq!(ports(&s), [1]);
        assert!(!s.served().stale);
    }

    #[test]
    fn graceful_removals_one_by_one_are_not_held_by_the_threshold() {
        let mut s = state(EmptyProtection::OnResync).with_threshold(0.3, Duration::from_secs(30));
        let t0 = Instant::now();
        let all: Vec<ServiceMetaInfo> = (1..=4).map(node).collect();
        s.relist(
            &Listing {
                entries: all.iter().map(kv).collect(),
                revision: 1,
            },
            t0,
        );
        for (i, n) in all.iter().take(3).enumerate() {
            assert!(s.apply(&del(n, 2 + i as Revision)));
            s.republish(Cause::Event, t0);
        }
        assert_eq!(ports(&s), [4]);
        assert!(!s.served().stale);
    }
}
