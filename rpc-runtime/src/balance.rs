//! Load balancers, chosen by `rpc.loadBalancer`: `roundRobin`, `random`, `consistentHash`.
//!
//! A balancer picks synchronously from the cached node list (no I/O, no allocation once the
//! nodes are known), skipping nodes this call already failed on. Every balancer honours the
//! nodes' weights: `roundRobin` is smooth weighted round robin (as nginx), `random` picks in
//! proportion to the weights, `consistentHash` is weighted rendezvous hashing. With a warm-up
//! window (`rpc.warmup`), a node registered less than that long ago gets a share of its weight
//! growing from a hundredth to the whole (see [`effective_weight`]).
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use registry_core::{Node, ServiceMetaInfo};
use rpc_config::config::LoadBalancerKind;

/// Picks a node for a call.
pub trait LoadBalancer: Send + Sync + std::fmt::Debug + 'static {
    /// The config name.
    fn name(&self) -> &'static str;
    /// Picks one of `nodes` not `skip`ped; `key` is the request's hash (used by
    /// `consistentHash`; 0 from the consumer for a balancer whose [`uses_key`](Self::uses_key)
    /// is false). `None` when every node is skipped.
    fn pick<'a>(
        &self,
        nodes: &'a [Node],
        key: u64,
        skip: &dyn Fn(&Node) -> bool,
    ) -> Option<&'a Node>;

    /// Whether [`pick`](Self::pick) looks at the request key: when false, the consumer does
    /// not hash the request (it reads every byte of the arguments). True by default.
    fn uses_key(&self) -> bool {
        true
    }
}

/// The balancer `kind` names (`rpc.loadBalancer`), without warm-up.
pub fn for_kind(kind: LoadBalancerKind) -> Box<dyn LoadBalancer> {
    with_warmup(kind, Duration::ZERO)
}

/// The balancer `kind` names, with nodes warming up over `warmup` after their registration
/// (see [`effective_weight`]); `roundRobin` and `random` honour it, `consistentHash` keeps
/// the full weight so a key does not move while a node warms up.
pub fn with_warmup(kind: LoadBalancerKind, warmup: Duration) -> Box<dyn LoadBalancer> {
    match kind {
        LoadBalancerKind::Random => Box::new(Random { warmup }),
        LoadBalancerKind::ConsistentHash => Box::new(ConsistentHash),
        _ => Box::new(RoundRobin::new(warmup)),
    }
}

/// Picks a node for a call with `balancer`, as the consumer does: never a disabled node
/// ([`ServiceMetaInfo::enabled`], an administrator took it out of traffic), and an unhealthy
/// one ([`ServiceMetaInfo::healthy`]) only when no healthy node is left. `None` when no
/// enabled node is left once `skip`ped ones are set aside.
///
/// ```
/// use std::sync::Arc;
/// use registry_core::ServiceMetaInfo;
/// use rpc_runtime::balance;
///
/// let mut off = ServiceMetaInfo::new("svc", "10.0.0.1", 1);
/// off.enabled = false;
/// let mut sick = ServiceMetaInfo::new("svc", "10.0.0.1", 2);
/// sick.healthy = false;
/// let nodes = vec![Arc::new(off), Arc::new(sick)];
/// let rr = balance::by_name("roundRobin").unwrap();
/// // The unhealthy node is the only one left that takes traffic.
/// assert_eq!(balance::choose(&*rr, &nodes, 0, &|_| false).unwrap().service_port, 2);
/// assert!(balance::choose(&*rr, &nodes, 0, &|n| n.service_port == 2).is_none());
/// ```
pub fn choose<'a>(
    balancer: &dyn LoadBalancer,
    nodes: &'a [Node],
    key: u64,
    skip: &dyn Fn(&Node) -> bool,
) -> Option<&'a Node> {
    if nodes.iter().all(|n| n.enabled && n.healthy) {
        return balancer.pick(nodes, key, skip);
    }
    balancer
        .pick(nodes, key, &|n| !n.enabled || !n.healthy || skip(n))
        .or_else(|| balancer.pick(nodes, key, &|n| !n.enabled || skip(n)))
}

/// The balancer named `name` (as in `rpc.loadBalancer`), or `None`.
pub fn by_name(name: &str) -> Option<Box<dyn LoadBalancer>> {
    name.parse().ok().map(for_kind)
}

/// A node's weight for picking now: its registered weight (at least 1), reduced while it warms
/// up, as Dubbo does: during `warmup` after its registration time it grows linearly from a
/// hundredth of its weight (at least 1) to its full weight. A node without a registration
/// time, or `warmup` zero, has its full weight.
pub fn effective_weight(node: &ServiceMetaInfo, warmup: Duration, now: SystemTime) -> u64 {
    let full = u64::from(node.weight.max(1));
    if warmup.is_zero() {
        return full;
    }
    let Some(uptime) = node
        .register_time
        .and_then(|at| now.duration_since(at).ok())
    else {
        return full;
    };
    if uptime >= warmup {
        return full;
    }
    let share = uptime.as_secs_f64() / warmup.as_secs_f64();
    ((full as f64 * share) as u64).clamp((full / 100).max(1), full)
}

/// Smooth weighted round robin (as nginx): over a cycle each node gets calls in proportion to
/// its weight, interleaved (weights 5, 1, 1 give a a b a c a a, not a a a a a b c). Equal
/// weights give plain round robin.
///
/// When every node it may pick has the same weight (the common case: default weights, no node
/// warming up), a pick is plain round robin on one atomic counter: no lock, no per-node state,
/// the same order as the weighted rule gives equal weights. Otherwise the state per node (its
/// running weight) lives behind one lock, keyed by the node's `Arc`, so a pick allocates nothing
/// once the nodes are known.
#[derive(Debug, Default)]
pub struct RoundRobin {
    warmup: Duration,
    next: AtomicUsize,
    current: Mutex<HashMap<usize, i64, foldhash::fast::RandomState>>,
}

impl RoundRobin {
    /// Smooth weighted round robin with nodes warming up over `warmup`.
    pub fn new(warmup: Duration) -> Self {
        Self {
            warmup,
            next: AtomicUsize::new(0),
            current: Mutex::default(),
        }
    }

    /// The pick when every node not skipped has the same weight; `None` otherwise (or when
    /// every node is skipped).
    fn pick_uniform<'a>(
        &self,
        nodes: &'a [Node],
        skip: &dyn Fn(&Node) -> bool,
        now: SystemTime,
    ) -> Option<&'a Node> {
        let mut eligible = 0usize;
        let mut weight = None;
        for node in nodes.iter().filter(|n| !skip(n)) {
            let w = effective_weight(node, self.warmup, now);
            if *weight.get_or_insert(w) != w {
                return None;
            }
            eligible += 1;
        }
        if eligible == 0 {
            return None;
        }
        let nth = self.next.fetch_add(1, Ordering::Relaxed) % eligible;
        nodes.iter().filter(|n| !skip(n)).nth(nth)
    }
}

impl LoadBalancer for RoundRobin {
    fn name(&self) -> &'static str {
        "roundRobin"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick<'a>(
        &self,
        nodes: &'a [Node],
        _key: u64,
        skip: &dyn Fn(&Node) -> bool,
    ) -> Option<&'a Node> {
        let now = if self.warmup.is_zero() {
            // (Weights do not depend on the time.)
            SystemTime::UNIX_EPOCH
        } else {
            SystemTime::now()
        };
        if let Some(node) = self.pick_uniform(nodes, skip, now) {
            return Some(node);
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // Nodes that left (or changed, which makes a new `Arc`) are forgotten now and then.
        if current.len() > nodes.len() * 2 + 16 {
            current.clear();
        }
        let mut total = 0i64;
        let mut best: Option<(&'a Node, i64)> = None;
        for node in nodes.iter().filter(|n| !skip(n)) {
            let weight = effective_weight(node, self.warmup, now).min(i64::MAX as u64 / 4) as i64;
            total = total.saturating_add(weight);
            let cw = current
                .entry(std::sync::Arc::as_ptr(node) as usize)
                .or_insert(0);
            *cw = cw.saturating_add(weight);
            if best.is_none_or(|(_, b)| *cw > b) {
                best = Some((node, *cw));
            }
        }
        let (node, _) = best?;
        if let Some(cw) = current.get_mut(&(std::sync::Arc::as_ptr(node) as usize)) {
            *cw = cw.saturating_sub(total);
        }
        Some(node)
    }
}

/// A random node, each with a chance in proportion to its (warming-up) weight.
#[derive(Debug, Default)]
pub struct Random {
    warmup: Duration,
}

impl LoadBalancer for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick<'a>(
        &self,
        nodes: &'a [Node],
        _key: u64,
        skip: &dyn Fn(&Node) -> bool,
    ) -> Option<&'a Node> {
        let now = SystemTime::now();
        let weight = |n: &Node| effective_weight(n, self.warmup, now);
        let total: u64 = nodes.iter().filter(|n| !skip(n)).map(weight).sum();
        if total == 0 {
            return None;
        }
        let mut point = rand::random_range(0..total);
        for node in nodes.iter().filter(|n| !skip(n)) {
            let w = weight(node);
            if point < w {
                return Some(node);
            }
            point -= w;
        }
        None
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

    /// Only `consistentHash` needs the request hashed; the consumer skips the hash for the
    /// others.
    #[test]
    fn only_consistent_hash_uses_the_request_key() {
        let uses = |name| by_name(name).unwrap().uses_key();
        assert!(uses("consistentHash"));
        assert!(!uses("roundRobin") && !uses("random"));
        let warming = with_warmup(LoadBalancerKind::RoundRobin, Duration::from_secs(1));
        assert!(!warming.uses_key());
    }

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

    /// Equal weights: plain round robin without the lock or any per-node state, every node not
    /// skipped picked equally often.
    #[test]
    fn equal_weights_cycle_on_a_counter() {
        let ns = nodes(5);
        let rr = RoundRobin::default();
        let skip4 = |n: &Node| n.service_port == 4;
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts
                .entry(rr.pick(&ns, 0, &skip4).unwrap().service_port)
                .or_insert(0) += 1;
        }
        assert_eq!(
            counts,
            HashMap::from([(1, 100), (2, 100), (3, 100), (5, 100)])
        );
        assert!(rr.current.lock().unwrap().is_empty(), "no per-node state");
        // One heavier node: the weighted rule, with its state.
        let mut heavy = ServiceMetaInfo::new("svc", "10.0.0.1", 9);
        heavy.weight = 3;
        let mixed = [ns[0].clone(), Arc::new(heavy)];
        let picks: Vec<u16> = (0..4)
            .map(|_| rr.pick(&mixed, 0, &|_| false).unwrap().service_port)
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 9).count(), 3, "{picks:?}");
        assert!(!rr.current.lock().unwrap().is_empty());
    }

    #[test]
    fn random_spreads_roughly_evenly_and_skips() {
        let ns = nodes(4);
        let c = counts(&Random::default(), &ns, 8000);
        assert_eq!(c.len(), 4);
        for (port, n) in &c {
            assert!((1500..=2500).contains(n), "node {port}: {n} of 8000");
        }
        let skip = |n: &Node| n.service_port != 3;
        assert_eq!(
            Random::default().pick(&ns, 0, &skip).unwrap().service_port,
            3
        );
        assert!(Random::default().pick(&ns, 0, &|_| true).is_none());
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
    fn disabled_nodes_are_never_picked_and_unhealthy_ones_last() {
        let mut ns = nodes(3);
        Arc::make_mut(&mut ns[0]).enabled = false;
        Arc::make_mut(&mut ns[1]).healthy = false;
        for kind in ["roundRobin", "random", "consistentHash"] {
            let b = by_name(kind).unwrap();
            for k in 0..200u64 {
                let port = choose(&*b, &ns, k, &|_| false).unwrap().service_port;
                assert_eq!(port, 3, "{kind}: only the enabled healthy node");
                let port = choose(&*b, &ns, k, &|n| n.service_port == 3)
                    .unwrap()
                    .service_port;
                assert_eq!(
                    port, 2,
                    "{kind}: then the unhealthy one, never the disabled"
                );
            }
            assert!(choose(&*b, &ns, 0, &|n| n.service_port != 1).is_none());
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

    fn weighted(weights: &[u32]) -> Vec<Node> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(ServiceMetaInfo::new("svc", "10.0.0.1", i as u16 + 1).with_weight(*w))
            })
            .collect()
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let rr = RoundRobin::default();
        let ns = weighted(&[5, 1, 1]);
        let order: Vec<u16> = (0..7)
            .map(|_| rr.pick(&ns, 0, &|_| false).unwrap().service_port)
            .collect();
        assert_eq!(order, [1, 1, 2, 1, 3, 1, 1], "nginx's smooth order");
        let c = counts(&rr, &ns, 7000);
        assert_eq!((c[&1], c[&2], c[&3]), (5000, 1000, 1000));
        // Skipping a node spreads its share over the others, by weight.
        let skip3 = |n: &Node| n.service_port == 3;
        let mut c = HashMap::new();
        for _ in 0..600 {
            *c.entry(rr.pick(&ns, 0, &skip3).unwrap().service_port)
                .or_insert(0) += 1;
        }
        assert_eq!((c[&1], c[&2]), (500, 100));
    }

    #[test]
    fn random_honours_weights() {
        let ns = weighted(&[3, 1]);
        let c = counts(&Random::default(), &ns, 20_000);
        let heavy = c[&1] as f64 / 20_000.0;
        assert!((0.72..=0.78).contains(&heavy), "weight 3 of 4 got {heavy}");
    }

    #[test]
    fn a_warming_node_gets_a_growing_share() {
        let warmup = Duration::from_secs(600);
        let now = SystemTime::now();
        let mut node = ServiceMetaInfo::new("svc", "10.0.0.1", 1).with_weight(100);
        node.register_time = Some(now);
        assert_eq!(
            effective_weight(&node, warmup, now),
            1,
            "a hundredth at first"
        );
        assert_eq!(
            effective_weight(&node, warmup, now + Duration::from_secs(300)),
            50,
            "half way, half the weight"
        );
        assert_eq!(effective_weight(&node, warmup, now + warmup), 100);
        assert_eq!(effective_weight(&node, Duration::ZERO, now), 100);
        node.register_time = None;
        assert_eq!(effective_weight(&node, warmup, now), 100);

        // Two nodes of equal weight, one registered long ago, one just now: round robin sends
        // the new one about a hundredth of its share.
        let mut old = ServiceMetaInfo::new("svc", "10.0.0.1", 1).with_weight(100);
        old.register_time = Some(now - warmup * 2);
        let mut new = ServiceMetaInfo::new("svc", "10.0.0.1", 2).with_weight(100);
        new.register_time = Some(now);
        let ns: Vec<Node> = vec![Arc::new(old), Arc::new(new)];
        let c = counts(&RoundRobin::new(warmup), &ns, 10_100);
        assert!(c.get(&2).copied().unwrap_or(0) <= 150, "{c:?}");
        let c = counts(&Random { warmup }, &ns, 10_100);
        assert!(c.get(&2).copied().unwrap_or(0) <= 300, "{c:?}");
    }

    #[test]
    fn names() {
        for kind in LoadBalancerKind::ALL {
            assert_eq!(for_kind(*kind).name(), kind.name());
        }
        assert!(by_name("leastActive").is_none());
    }
}
