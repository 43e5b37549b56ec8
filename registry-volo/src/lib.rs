//! The registry as a volo [`Discover`]: volo clients (volo-grpc, volo-thrift) find their
//! servers through the registry.
//!
//! A [`VoloDiscover`] answers [`discover`](Discover::discover) from the registry's cache (the
//! first time a service is asked for, one listing; afterwards no I/O), and its
//! [`watch`](Discover::watch) channel is fed by **one subscription per service**
//! ([`Registry::watch`]), shared by every volo balancer watching: each change of the node
//! list becomes one volo [`Change`] `{ key, all, added, updated, removed }`.
//!
//! ```no_run
//! # async fn demo(registry: registry_core::Registry) {
//! use registry_volo::VoloDiscover;
//!
//! let discover = VoloDiscover::new(registry);
//! // A volo-grpc client of `greeter.Greeter` (registered as `greeter.Greeter:1.0`):
//! // let client = GreeterClientBuilder::new("greeter.Greeter").discover(discover).build();
//! # let _ = discover;
//! # }
//! ```
//!
//! # Mapping
//! - **Service key**: volo's callee service name, plus the version and group of this
//!   discover ([`with_version`](VoloDiscover::with_version), default `1.0`;
//!   [`with_group`](VoloDiscover::with_group), default group): `greeter.Greeter` ->
//!   `greeter.Greeter:1.0`. A service name that already contains `:` is taken as a whole
//!   service key. The [key](Discover::key) of a service is its service key.
//! - **Instances**: the node's `host:port` ([`Address::Ip`]; a host name is resolved, a node
//!   whose host does not resolve is left out with a warning), its weight
//!   ([`Instance::weight`], used by volo's weighted random balancer), and its metadata as
//!   [`Instance::tags`].
//!
//! # Failure
//! A service without nodes is an empty list (volo then fails the call: no instance). A store
//! outage is not an error once the service is cached: the cache serves its last nodes and the
//! watch sends nothing until the store is back. The first [`discover`](Discover::discover)
//! of a service fails with [`DiscoverError`] when the store cannot be listed (volo retries
//! at the next call). The watch channel drops the oldest changes for a receiver that falls
//! behind (each change carries the whole list in `all`, which is what volo's balancers use).
//! It closes when every clone of the discover is dropped; the subscriptions end with them or
//! when the registry shuts down.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use async_broadcast::{InactiveReceiver, Receiver, Sender, TrySendError};
use futures::StreamExt as _;
use registry_core::{
    service_key, Backoff, Node, Registry, RegistryError, ServiceChange, ServiceWatch,
    DEFAULT_GROUP, DEFAULT_VERSION,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use volo::context::Endpoint;
use volo::discovery::{Change, Discover, Instance};
use volo::loadbalance::error::LoadBalanceError;
use volo::net::Address;
use volo::FastStr;

/// Changes kept for a watch receiver that falls behind; older ones are dropped (each change
/// carries the whole list).
pub const WATCH_CAPACITY: usize = 64;

/// Why a service could not be discovered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// The first listing of the service failed.
    #[error("discovering service {service} failed")]
    Registry {
        /// The service key.
        service: String,
        /// Cause.
        #[source]
        source: RegistryError,
    },
}

impl From<DiscoverError> for LoadBalanceError {
    fn from(error: DiscoverError) -> Self {
        LoadBalanceError::Discover(Box::new(error))
    }
}

/// The registry as a volo [`Discover`]; see the [crate docs](crate). Cheap to clone (clones
/// share the subscriptions and the watch channel).
#[derive(Clone)]
pub struct VoloDiscover {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    version: String,
    group: String,
    changes: Sender<Change<FastStr>>,
    /// Keeps the channel open while nobody watches.
    _idle: InactiveReceiver<Change<FastStr>>,
    /// Service keys with a subscription.
    followed: Mutex<HashSet<String>>,
    /// Ends the subscriptions when the last clone goes.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for VoloDiscover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoloDiscover")
            .field("version", &self.inner.version)
            .field("group", &self.inner.group)
            .field("followed", &self.followed())
            .finish_non_exhaustive()
    }
}

impl VoloDiscover {
    /// Discovers services in `registry` (version `1.0`, default group).
    pub fn new(registry: Registry) -> Self {
        Self::build(
            registry,
            DEFAULT_VERSION.to_owned(),
            DEFAULT_GROUP.to_owned(),
        )
    }

    fn build(registry: Registry, version: String, group: String) -> Self {
        let (mut changes, idle) = async_broadcast::broadcast(WATCH_CAPACITY);
        changes.set_overflow(true);
        changes.set_await_active(false);
        Self {
            inner: Arc::new(Inner {
                registry,
                version,
                group,
                changes,
                _idle: idle.deactivate(),
                followed: Mutex::new(HashSet::new()),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// The service version looked up for a volo service name (default `1.0`).
    #[must_use]
    pub fn with_version(self, version: impl Into<String>) -> Self {
        let inner = &self.inner;
        Self::build(inner.registry.clone(), version.into(), inner.group.clone())
    }

    /// The service group looked up for a volo service name (default: the default group).
    #[must_use]
    pub fn with_group(self, group: impl Into<String>) -> Self {
        let inner = &self.inner;
        Self::build(inner.registry.clone(), inner.version.clone(), group.into())
    }

    /// The service key looked up for a volo service name.
    pub fn service_key(&self, service_name: &str) -> String {
        if service_name.contains(':') {
            service_name.to_owned()
        } else {
            service_key(service_name, &self.inner.version, &self.inner.group)
        }
    }

    /// The service keys followed by a subscription, sorted.
    pub fn followed(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .inner
            .followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Starts the one subscription of `key` unless it runs.
    fn follow(&self, key: &str) {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return;
        }
        {
            let mut followed = inner
                .followed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !followed.insert(key.to_owned()) {
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(
                service = key,
                "volo discover used outside a Tokio runtime: its changes are not followed"
            );
            inner
                .followed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key);
            return;
        };
        runtime.spawn(subscription(
            inner.registry.clone(),
            key.to_owned(),
            inner.changes.clone(),
            inner.stop.clone(),
        ));
    }
}

impl Discover for VoloDiscover {
    type Key = FastStr;
    type Error = DiscoverError;

    async fn discover<'s>(
        &'s self,
        endpoint: &'s Endpoint,
    ) -> Result<Vec<Arc<Instance>>, DiscoverError> {
        let key = self.service_key(&endpoint.service_name);
        let nodes = match self.inner.registry.discover(&key).await {
            Ok(nodes) => nodes
                .iter()
                .filter(|n| n.enabled)
                .cloned()
                .collect::<Vec<Node>>(),
            Err(RegistryError::NoProvider { .. }) => Vec::new(),
            Err(source) => {
                return Err(DiscoverError::Registry {
                    service: key,
                    source,
                })
            }
        };
        // Followed from now on; the subscription's first change is the whole list again,
        // which replaces this answer in volo's balancer.
        self.follow(&key);
        Ok(instances(&nodes).await)
    }

    fn key(&self, endpoint: &Endpoint) -> FastStr {
        FastStr::new(self.service_key(&endpoint.service_name))
    }

    fn watch(&self, keys: Option<&[FastStr]>) -> Option<Receiver<Change<FastStr>>> {
        for key in keys.unwrap_or_default() {
            self.follow(key);
        }
        Some(self.inner.changes.new_receiver())
    }
}

/// The one subscription of a service: its [`ServiceWatch`] turned into volo changes, until the
/// registry shuts down or the discover is dropped.
async fn subscription(
    registry: Registry,
    key: String,
    changes: Sender<Change<FastStr>>,
    stop: CancellationToken,
) {
    let watch = tokio::select! {
        () = stop.cancelled() => return,
        watch = first_watch(registry, &key) => watch,
    };
    let Some(mut watch) = watch else {
        return;
    };
    let volo_key = FastStr::new(key.clone());
    loop {
        let change = tokio::select! {
            () = stop.cancelled() => return,
            change = watch.next() => change,
        };
        let Some(change) = change else {
            debug!(service = %key, "registry shut down: volo discover subscription ends");
            return;
        };
        let change = to_volo(volo_key.clone(), &change).await;
        match changes.try_broadcast(change) {
            Ok(_) | Err(TrySendError::Inactive(_)) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

/// Watches `key`, retrying while the store cannot be listed; `None` once the registry is shut
/// down.
async fn first_watch(registry: Registry, key: &str) -> Option<ServiceWatch> {
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    );
    loop {
        match registry.watch(key).await {
            Ok(watch) => return Some(watch),
            Err(RegistryError::Shutdown) => return None,
            Err(error) => {
                let delay = backoff.next_delay();
                debug!(service = key, error = %registry_core::error_chain(&error), ?delay, "cannot watch the service yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// A registry change as a volo change.
///
/// A disabled node (taken out of traffic by an administrator) is no instance: disabling one
/// shows as its removal, enabling it as an update that brings it back into `all`.
async fn to_volo(key: FastStr, change: &ServiceChange) -> Change<FastStr> {
    let enabled =
        |nodes: &[Node]| -> Vec<Node> { nodes.iter().filter(|n| n.enabled).cloned().collect() };
    let (updated, disabled): (Vec<Node>, Vec<Node>) =
        change.diff.updated.iter().cloned().partition(|n| n.enabled);
    let mut removed = change.diff.removed.clone();
    removed.extend(disabled);
    Change {
        key,
        all: instances(&enabled(&change.nodes)).await,
        added: instances(&enabled(&change.diff.added)).await,
        updated: instances(&updated).await,
        removed: instances(&removed).await,
    }
}

/// The volo instances of `nodes`; a node whose host does not resolve is left out.
async fn instances(nodes: &[Node]) -> Vec<Arc<Instance>> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        if let Some(instance) = instance(node).await {
            out.push(Arc::new(instance));
        }
    }
    out
}

async fn instance(node: &Node) -> Option<Instance> {
    let address = match node.service_host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, node.service_port),
        Err(_) => {
            let resolved =
                tokio::net::lookup_host((node.service_host.as_str(), node.service_port)).await;
            match resolved.map(|mut addresses| addresses.next()) {
                Ok(Some(address)) => address,
                Ok(None) => {
                    warn!(node = %node.node_key(), "node left out of volo's instances: its host resolves to no address");
                    return None;
                }
                Err(error) => {
                    warn!(node = %node.node_key(), %error, "node left out of volo's instances: its host does not resolve");
                    return None;
                }
            }
        }
    };
    let tags: HashMap<Cow<'static, str>, Cow<'static, str>> = node
        .metadata
        .iter()
        .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
        .collect();
    Some(Instance {
        address: Address::Ip(address),
        weight: node.weight,
        tags,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use registry_core::{MemoryBackend, MemoryStore, RegistryOptions, ServiceMetaInfo};

    use super::*;

    fn registry(store: &Arc<MemoryStore>) -> Registry {
        Registry::new(
            Arc::new(MemoryBackend::new(store.clone())),
            RegistryOptions::default(),
        )
        .unwrap()
    }

    fn addresses(instances: &[Arc<Instance>]) -> Vec<String> {
        let mut a: Vec<String> = instances.iter().map(|i| i.address.to_string()).collect();
        a.sort();
        a
    }

    async fn next(watch: &mut Receiver<Change<FastStr>>) -> Change<FastStr> {
        tokio::time::timeout(Duration::from_secs(10), watch.recv())
            .await
            .expect("a change")
            .unwrap()
    }

    #[test]
    fn service_names_map_to_service_keys() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let d = VoloDiscover::new(registry(&MemoryStore::new()));
            assert_eq!(d.service_key("greeter.Greeter"), "greeter.Greeter:1.0");
            assert_eq!(d.service_key("greeter.Greeter:2.0"), "greeter.Greeter:2.0");
            let d = d.with_version("2.0").with_group("canary");
            assert_eq!(d.service_key("greeter"), "greeter:2.0:canary");
            assert_eq!(
                d.key(&Endpoint::new("greeter".into())),
                FastStr::new("greeter:2.0:canary")
            );
        });
    }

    #[tokio::test(start_paused = true)]
    async fn discover_then_every_change_on_one_subscription() {
        let store = MemoryStore::new();
        let provider = registry(&store);
        let consumer = registry(&store);
        provider
            .register(
                ServiceMetaInfo::new("greeter", "127.0.0.1", 7001)
                    .with_weight(3)
                    .with_metadata("zone", "a"),
            )
            .await
            .unwrap();
        let discover = VoloDiscover::new(consumer.clone());
        let mut watch = discover.watch(None).unwrap();
        let mut second = discover.watch(None).unwrap();
        let endpoint = Endpoint::new("greeter".into());
        let found = discover.discover(&endpoint).await.unwrap();
        assert_eq!(addresses(&found), ["127.0.0.1:7001"]);
        assert_eq!(found[0].weight, 3);
        assert_eq!(found[0].tags["zone"], "a");
        // Nobody registered: an empty list, not an error; followed too.
        let none = discover
            .discover(&Endpoint::new("nobody".into()))
            .await
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(discover.followed(), ["greeter:1.0", "nobody:1.0"]);

        // The subscription's first change: the whole list (the service's current nodes).
        let mut firsts = [next(&mut watch).await, next(&mut watch).await];
        firsts.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(firsts[0].key, "greeter:1.0");
        assert_eq!(addresses(&firsts[0].all), ["127.0.0.1:7001"]);
        assert_eq!(firsts[1].key, "nobody:1.0");
        assert!(firsts[1].all.is_empty());

        provider
            .register(ServiceMetaInfo::new("greeter", "127.0.0.1", 7002))
            .await
            .unwrap();
        let change = next(&mut watch).await;
        assert_eq!(change.key, "greeter:1.0");
        assert_eq!(addresses(&change.all), ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(addresses(&change.added), ["127.0.0.1:7002"]);
        provider
            .register(ServiceMetaInfo::new("greeter", "127.0.0.1", 7002).with_weight(9))
            .await
            .unwrap();
        let change = next(&mut watch).await;
        assert_eq!(addresses(&change.updated), ["127.0.0.1:7002"]);
        assert_eq!(change.updated[0].weight, 9);
        provider
            .unregister(&ServiceMetaInfo::new("greeter", "127.0.0.1", 7001))
            .await
            .unwrap();
        let change = next(&mut watch).await;
        assert_eq!(addresses(&change.removed), ["127.0.0.1:7001"]);
        assert_eq!(addresses(&change.all), ["127.0.0.1:7002"]);
        // The second receiver saw the same changes (one subscription, broadcast).
        let mut seen = 0;
        while second.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 5);

        // Dropping the discover closes the channel.
        drop(discover);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(matches!(
            watch.recv().await,
            Err(async_broadcast::RecvError::Closed)
        ));
        provider.shutdown().await.unwrap();
        consumer.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_outage_at_first_discover_is_an_error_for_volo_to_retry() {
        let store = MemoryStore::new();
        let consumer = registry(&store);
        store.set_down(true);
        let discover = VoloDiscover::new(consumer.clone());
        let error = discover
            .discover(&Endpoint::new("greeter".into()))
            .await
            .unwrap_err();
        assert!(matches!(error, DiscoverError::Registry { .. }));
        let error: LoadBalanceError = error.into();
        assert!(matches!(error, LoadBalanceError::Discover(_)));
        store.set_down(false);
        assert!(discover
            .discover(&Endpoint::new("greeter".into()))
            .await
            .unwrap()
            .is_empty());
        consumer.shutdown().await.unwrap();
    }
}
