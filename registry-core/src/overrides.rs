//! Administrators' overrides of a service's nodes: take a node out of traffic without stopping
//! it (Eureka's OUT_OF_SERVICE, Nacos' `enabled=false`), mark it unhealthy, change its weight.
//!
//! Each service has at most one record, in a tree beside the services (as Dubbo keeps its
//! `configurators` apart from its `providers`), written without liveness and outside the
//! ownership rule, so it outlives the nodes' owners, and their heartbeats and
//! re-registrations never undo it:
//!
//! ```text
//! /rpc/users:1.0/10.0.0.7:8080         -> the node, as its owner registered it
//! /rpc/~overrides/users:1.0            -> {"nodes":{"10.0.0.7:8080":{"enabled":false}}}
//! ```
//!
//! Nothing is written under a service's own prefix, so a client that lists it (the Java
//! framework this layout comes from) sees only nodes. A registry watches the records of the
//! whole tree with one watch, started with its first cached service, and applies each to the
//! nodes it serves ([`ServiceMetaInfo::enabled`], [`ServiceMetaInfo::healthy`],
//! [`ServiceMetaInfo::weight`]); every balancer skips a disabled node. Writers read the
//! record, change it, write it back: two administrators changing one service at the same
//! instant may lose one change (the last write wins).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::instance::ServiceMetaInfo;

/// The name of the tree of overrides records, under the root.
pub const OVERRIDES_NAME: &str = "~overrides";

/// What an administrator set for one node; `None` leaves the owner's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverride {
    /// Takes the node out of (`false`) or back into (`true`) traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Marks the node unhealthy (`false`) or healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Replaces the node's weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl NodeOverride {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == NodeOverride::default()
    }
}

/// A service's overrides record: by node address (`host:port`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// Address -> what is overridden.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeOverride>,
}

impl Overrides {
    /// `node` with its override applied; the same `Arc` when nothing changes.
    pub(crate) fn apply(&self, node: &Arc<ServiceMetaInfo>) -> Arc<ServiceMetaInfo> {
        let Some(o) = self.nodes.get(&node.address()) else {
            return node.clone();
        };
        let enabled = o.enabled.unwrap_or(node.enabled);
        let healthy = o.healthy.unwrap_or(node.healthy);
        let weight = o.weight.unwrap_or(node.weight);
        if (enabled, healthy, weight) == (node.enabled, node.healthy, node.weight) {
            return node.clone();
        }
        let mut changed = ServiceMetaInfo::clone(node);
        changed.enabled = enabled;
        changed.healthy = healthy;
        changed.weight = weight;
        Arc::new(changed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn overrides_apply_on_top_of_the_owner_value() {
        let node = Arc::new(ServiceMetaInfo::new("users", "10.0.0.1", 80).with_weight(3));
        let mut o = Overrides::default();
        assert!(Arc::ptr_eq(&o.apply(&node), &node));
        o.nodes.insert(
            "10.0.0.1:80".into(),
            NodeOverride {
                enabled: Some(false),
                weight: Some(9),
                ..NodeOverride::default()
            },
        );
        let applied = o.apply(&node);
        assert!(!applied.enabled && applied.healthy);
        assert_eq!(applied.weight, 9);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"nodes":{"10.0.0.1:80":{"enabled":false,"weight":9}}}"#
        );
        assert_eq!(serde_json::from_str::<Overrides>(&json).unwrap(), o);
    }
}
