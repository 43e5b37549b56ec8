//! Load balancers, chosen by `rpc.loadBalancer`: `roundRobin`, `random`, `consistentHash`.
//!
//! A balancer picks synchronously from the cached node list (no I/O, no allocation), skipping
//! nodes this call already failed on.
//!
//! `consistentHash` is rendezvous (highest random weight) hashing: each node scores
//! `hash(key, node)`, the best score wins. The same key goes to the same node in every
//! consumer process, a node leaving only moves its own keys, and weights are honoured.
//!
//! ```
//! use std::sync::Arc;
//! use registry_core::ServiceMetaInfo;
//! use rpc_runtime::balance::{self, LoadBalancer};
//!
//! let nodes: Vec<Arc<ServiceMetaInfo>> = (1..=3)
//!     .map(|p| Arc::new(ServiceMetaInfo::new("svc", "10.0.0.1", p)))
//!     .collect();
//! let rr = balance::by_name("roundRobin").unwrap();
//! let ports: Vec<u16> = (0..4).map(|_| rr.pick(&nodes, 0, &|_| false).unwrap().service_port).collect();
//! assert_eq!(ports, [1, 2, 3, 1]);
//! let ch = balance::by_name("consistentHash").unwrap();
//! let a = ch.pick(&nodes, 42, &|_| false).unwrap().service_port;
//! assert_eq!(ch.pick(&nodes, 42, &|_| false).unwrap().service_port, a);
//! ```

use rpc_config::config::LoadBalancerKind;
use std::sync::atomic::{AtomicUsize, Ordering};

use registry_core::Node;

/// Picks a node for a call.
pub trait LoadBalancer: Send + Sync + std::fmt::Debug + 'static {
    /// The config name.
    fn name(&self) -> &'static str;
    /// Picks one of `nodes` not `skip`ped; `key` is the request's hash (used by
    /// `consistentHash`). `None` when every node is skipped.
    fn pick<'a>(
        &self,
        nodes: &'a [Node],
        key: u64,
        skip: &dyn Fn(&Node) -> bool,
    ) -> Option<&'a Node>;
}

/// The balancer `kind` names (`rpc.loadBalancer`).
pub fn for_kind(kind: LoadBalancerKind) -> Box<dyn LoadBalancer> {
    match kind {
        LoadBalancerKind::Random => Box::new(Random),
        LoadBalancerKind::ConsistentHash => Box::new(ConsistentHash),
        _ => Box::new(RoundRobin::default()),
    }
}

/// The balancer named `name` (as in `rpc.loadBalancer`), or `None`.
pub fn by_name(name: &str) -> Option<Box<dyn LoadBalancer>> {
    name.parse().ok().map(for_kind)
}

/// Each call goes to the next node.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl LoadBalancer for RoundRobin {
    fn name(&self) -> &'static str {
        "roundRobin"
    }

    fn pick<'a>(
        &self,
        nodes: &'a [Node],
        _key: u64,
        skip: &dyn Fn(&Node) -> bool,
    ) -> Option<&'a Node> {
        if nodes.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..nodes.len())
            .map(|i| &nodes[(start + i) % nodes.len()])
            .find(|n| !skip(n))
    }
}

/// A uniformly random node.
#[derive(Debug, Default)]
pub struct Random;

impl LoadBalancer for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick<'a>(
        &self,
        nodes: &'a [Node],
        _key: u64,
        skip: &dyn Fn(&Node) -> bool,
    ) -> Option<&'a Node> {
        let allowed = nodes.iter().filter(|n| !skip(n)).count();
        if allowed == 0 {
            return None;
        }
        let nth = rand::random_range(0..allowed);
        nodes.iter().filter(|n| !skip(n)).nth(nth)
    }
}

/// Rendezvous hashing on the request key, weighted.
#[derive(Debug, Default)]
pub struct ConsistentHash;

impl LoadBalancer for ConsistentHash {
    fn name(&self) -> &'static str {
        "consistentHash"
    }

    fn pick<'a>(
        &self,
        nodes: &'a [Node],
        key: u64,
        skip: &dyn Fn(&Node) -> bool,
    ) -> Option<&'a Node> {
        nodes
            .iter()
            .filter(|n| !skip(n))
            .map(|n| (score(key, n), n))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, n)| n)
    }
}

/// Weighted rendezvous score: `weight / -ln(u)` with `u` uniform in (0, 1) from the hash.
fn score(key: u64, node: &Node) -> f64 {
    let mut h = Fnv::new();
    h.write(&key.to_be_bytes());
    h.write(node.service_host.as_bytes());
    h.write(&node.service_port.to_be_bytes());
    let x = mix(h.finish());
    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(node.weight.max(1)) / -u.ln()
}

/// A stable 64-bit hash of a request (method and encoded arguments), identical in every
/// process and build (unlike `std`'s randomly seeded hasher).
pub fn request_key(method: &str, args: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(method.as_bytes());
    h.write(&[0]);
    h.write(args);
    mix(h.finish())
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// splitmix64 finaliser: spreads FNV's weak low bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::ServiceMetaInfo;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn nodes(n: u16) -> Vec<Node> {
        (1..=n)
            .map(|p| Arc::new(ServiceMetaInfo::new("svc", "10.0.0.1", p)))
            .collect()
    }

    fn counts(b: &dyn LoadBalancer, nodes: &[Node], calls: u64) -> HashMap<u16, u64> {
        let mut counts = HashMap::new();
        for k in 0..calls {
            let n = b
                .pick(nodes, request_key("m", &k.to_le_bytes()), &|_| false)
                .unwrap();
            *counts.entry(n.service_port).or_default() += 1;
        }
        counts
    }

    #[test]
    fn round_robin_cycles_and_skips() {
        let ns = nodes(3);
        let rr = RoundRobin::default();
        let got: Vec<u16> = (0..6)
            .map(|_| rr.pick(&ns, 0, &|_| false).unwrap().service_port)
            .collect();
        assert_eq!(got, [1, 2, 3, 1, 2, 3]);
        let skip2 = |n: &Node| n.service_port == 2;
        for _ in 0..6 {
            assert_ne!(rr.pick(&ns, 0, &skip2).unwrap().service_port, 2);
        }
        assert!(rr.pick(&ns, 0, &|_| true).is_none());
        assert!(rr.pick(&[], 0, &|_| false).is_none());
    }

    #[test]
    fn random_spreads_roughly_evenly_and_skips() {
        let ns = nodes(4);
        let c = counts(&Random, &ns, 8000);
        assert_eq!(c.len(), 4);
        for (port, n) in &c {
            assert!((1500..=2500).contains(n), "node {port}: {n} of 8000");
        }
        let skip = |n: &Node| n.service_port != 3;
        assert_eq!(Random.pick(&ns, 0, &skip).unwrap().service_port, 3);
        assert!(Random.pick(&ns, 0, &|_| true).is_none());
    }

    #[test]
    fn consistent_hash_is_stable_spread_and_moves_only_the_leavers_keys() {
        let ns = nodes(5);
        let c = counts(&ConsistentHash, &ns, 10_000);
        for (port, n) in &c {
            assert!((1400..=2600).contains(n), "node {port}: {n} of 10000");
        }
        // Node 3 leaves: keys on other nodes stay where they were.
        let without3: Vec<Node> = ns.iter().filter(|n| n.service_port != 3).cloned().collect();
        for k in 0..2000u64 {
            let key = request_key("m", &k.to_le_bytes());
            let before = ConsistentHash
                .pick(&ns, key, &|_| false)
                .unwrap()
                .service_port;
            let after = ConsistentHash
                .pick(&without3, key, &|_| false)
                .unwrap()
                .service_port;
            if before != 3 {
                assert_eq!(before, after, "key {k} moved");
            }
            // Skipping node 3 gives the same answer as removing it.
            let skipped = ConsistentHash
                .pick(&ns, key, &|n| n.service_port == 3)
                .unwrap()
                .service_port;
            assert_eq!(skipped, after);
        }
    }

    #[test]
    fn consistent_hash_honours_weights() {
        let mut ns = nodes(2);
        ns[0] = Arc::new(ServiceMetaInfo::new("svc", "10.0.0.1", 1).with_weight(3));
        let c = counts(&ConsistentHash, &ns, 8000);
        let heavy = c[&1] as f64 / 8000.0;
        assert!((0.68..=0.82).contains(&heavy), "weight 3 of 4 got {heavy}");
    }

    #[test]
    fn names() {
        for kind in LoadBalancerKind::ALL {
            assert_eq!(for_kind(*kind).name(), kind.name());
        }
        assert!(by_name("leastActive").is_none());
    }
}
