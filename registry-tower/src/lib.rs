//! The registry as a tower [`Discover`](tower::discover::Discover): the nodes of one service as
//! a stream of [`Change::Insert`] and [`Change::Remove`], for tower's balancers
//! (`tower::balance::p2c::Balance`) and anything else that takes a `Discover`.
//!
//! A [`RegistryDiscover`] follows one service key through [`Registry::watch`] (the registry's
//! cache entry of that service: one store watch per service, whatever the number of streams)
//! and turns each node into a service with a [`MakeNodeService`], usually a closure
//! `Fn(&ServiceMetaInfo) -> S`.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
//! use registry_tower::RegistryDiscover;
//! use tower::balance::p2c::Balance;
//! use tower::load::Constant;
//! use tower::{service_fn, Service as _, ServiceExt as _};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let registry = Registry::new(
//!     Arc::new(MemoryBackend::new(MemoryStore::new())),
//!     RegistryOptions::default(),
//! )?;
//! registry.register(ServiceMetaInfo::new("echo", "127.0.0.1", 7001)).await?;
//!
//! // One service per node; here it answers with the node's address.
//! let discover = RegistryDiscover::new(registry.clone(), "echo:1.0", |node: &ServiceMetaInfo| {
//!     let address = node.address();
//!     Constant::new(service_fn(move |()| std::future::ready(Ok::<_, Infallible>(address.clone()))), 0)
//! });
//! let mut balance = Balance::new(discover);
//! let served_by = balance.ready().await?.call(()).await?;
//! assert_eq!(served_by, "127.0.0.1:7001");
//! registry.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # What the stream yields
//! - **First delivery**: an `Insert` for every node of the service (nothing when it has none).
//! - **A node registered**: `Insert(address, service)`; **deregistered or expired**:
//!   `Remove(address)`.
//! - **A node registered again at the same address with a new registration** (weight,
//!   metadata): `Remove` then `Insert` with a new service, but only when
//!   [`MakeNodeService::must_rebuild`] says the service depends on what changed. For a
//!   closure that is anything but the registration time ([`registration_changed`]), so a
//!   node merely re-registered after a lost lease keeps its service and its connections.
//!   Implement [`MakeNodeService`] to narrow it (e.g. a tonic endpoint depends only on the
//!   address and a few metadata keys).
//! - **After a watch break and a relist** (the cache folds what it missed into one resync),
//!   only the differences between what was inserted and the relisted nodes.
//!
//! Keys are node addresses (`host:port`), unique within a service.
//!
//! # Failure
//! The stream never yields an error (its error type is [`Infallible`]) and never ends while
//! the registry runs. During a store outage it yields nothing and the balancer keeps the last
//! set: the registry's cache serves the last known nodes meanwhile, and with the default
//! [`EmptyProtection`](registry_core::EmptyProtection) a relist that comes back empty after an
//! outage is not applied either. When the first listing fails (the store is down when the
//! stream is first polled), it is retried with jittered backoff until it succeeds. The stream
//! ends when the registry shuts down or its last clone is dropped; a tower balancer then keeps
//! serving its last set.
//!
//! # Memory
//! One entry per node inserted (its address and registration), plus the services the balancer
//! holds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FusedStream, Stream, StreamExt as _};
use registry_core::{Backoff, Node, Registry, RegistryError, ServiceMetaInfo, ServiceWatch};
use tracing::{debug, warn};

pub use tower::discover::Change;

/// First delay before listing the service again when the first listing failed (jittered,
/// doubling up to [`RETRY_MAX`]).
pub const RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Largest delay between two attempts at the first listing.
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// How a registered node becomes a service for the balancer.
///
/// Implemented for every closure `Fn(&ServiceMetaInfo) -> S` (every node becomes a service,
/// rebuilt on any change of its registration but the registration time). Implement it for a
/// type of your own to skip nodes (return `None`, and log why) or to rebuild a node's
/// service only when what it depends on changes.
pub trait MakeNodeService {
    /// The service built for a node.
    type Service;

    /// The service for `node`, or `None` to leave the node out of the balancer (the
    /// implementation says why, e.g. with a warning). A node left out is asked again only when
    /// its registration changes as [`must_rebuild`](Self::must_rebuild) tells.
    fn make(&self, node: &ServiceMetaInfo) -> Option<Self::Service>;

    /// Whether a node registered again at the same address (`old` to `new`) needs a new
    /// service. The default: [`registration_changed`].
    fn must_rebuild(&self, old: &ServiceMetaInfo, new: &ServiceMetaInfo) -> bool {
        registration_changed(old, new)
    }
}

impl<S, F> MakeNodeService for F
where
    F: Fn(&ServiceMetaInfo) -> S,
{
    type Service = S;

    fn make(&self, node: &ServiceMetaInfo) -> Option<S> {
        Some(self(node))
    }
}

/// Whether two registrations of one address differ in anything but the registration time
/// (weight, metadata; the name, version, group and address are the same by construction).
///
/// ```
/// use std::time::SystemTime;
/// use registry_core::ServiceMetaInfo;
///
/// let old = ServiceMetaInfo::new("echo", "10.0.0.1", 7001);
/// let mut again = old.clone();
/// again.register_time = Some(SystemTime::now());
/// assert!(!registry_tower::registration_changed(&old, &again));
/// assert!(registry_tower::registration_changed(&old, &old.clone().with_weight(5)));
/// ```
pub fn registration_changed(old: &ServiceMetaInfo, new: &ServiceMetaInfo) -> bool {
    old.service_name != new.service_name
        || old.service_version != new.service_version
        || old.service_group != new.service_group
        || old.service_host != new.service_host
        || old.service_port != new.service_port
        || old.weight != new.weight
        || old.metadata != new.metadata
}

type Connecting = Pin<Box<dyn Future<Output = Option<ServiceWatch>> + Send>>;

enum State {
    /// Waiting for the first listing (retried until it succeeds).
    Connecting(Connecting),
    Watching(ServiceWatch),
    Ended,
}

/// The nodes of one service as a tower [`Discover`](tower::discover::Discover); see the
/// [crate docs](crate).
///
/// A [`Stream`] of `Result<Change<String, M::Service>, Infallible>`, keys being node addresses
/// (`host:port`).
#[must_use = "streams do nothing unless polled"]
pub struct RegistryDiscover<M: MakeNodeService> {
    service_key: Arc<str>,
    state: State,
    make: M,
    /// Address -> the registration its inserted service was built from.
    inserted: HashMap<String, Node>,
    /// Address -> the registration `make` declined (not asked again until it changes).
    declined: HashMap<String, Node>,
    ready: VecDeque<Change<String, M::Service>>,
}

// No field is ever pinned: the watch and the connecting future are boxed or `Unpin`.
impl<M: MakeNodeService> Unpin for RegistryDiscover<M> {}

impl<M: MakeNodeService> std::fmt::Debug for RegistryDiscover<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Connecting(_) => "connecting",
            State::Watching(_) => "watching",
            State::Ended => "ended",
        };
        f.debug_struct("RegistryDiscover")
            .field("service_key", &self.service_key)
            .field("state", &state)
            .field("inserted", &self.inserted.keys().collect::<Vec<_>>())
            .field("declined", &self.declined.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<M: MakeNodeService> RegistryDiscover<M> {
    /// The nodes of `service_key` in `registry`, each made a service by `make`.
    ///
    /// Nothing happens until the stream is first polled: then it watches the service
    /// ([`Registry::watch`]), retrying with jittered backoff ([`RETRY_INITIAL`] to
    /// [`RETRY_MAX`]) while the first listing fails. The stream holds a clone of `registry`
    /// only until that first listing; afterwards it ends when the registry shuts down or its
    /// last clone is dropped.
    pub fn new(registry: Registry, service_key: impl Into<String>, make: M) -> Self {
        let service_key: String = service_key.into();
        let key: Arc<str> = Arc::from(service_key.as_str());
        Self::with_state(
            key,
            State::Connecting(Box::pin(first_watch(registry, service_key))),
            make,
        )
    }

    /// The changes of an existing [`ServiceWatch`] (from [`Registry::watch`]), each node made
    /// a service by `make`. The watch must be new (its first item lists every node).
    pub fn from_watch(watch: ServiceWatch, make: M) -> Self {
        let key = Arc::from(watch.service_key());
        Self::with_state(key, State::Watching(watch), make)
    }

    fn with_state(service_key: Arc<str>, state: State, make: M) -> Self {
        Self {
            service_key,
            state,
            make,
            inserted: HashMap::new(),
            declined: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// The service key followed.
    pub fn service_key(&self) -> &str {
        &self.service_key
    }

    /// How nodes become services.
    pub fn make(&self) -> &M {
        &self.make
    }

    /// The addresses currently inserted (what the balancer holds once it has read every
    /// change yielded so far).
    pub fn inserted(&self) -> impl Iterator<Item = &str> + '_ {
        self.inserted.keys().map(String::as_str)
    }

    /// Queues the changes that take the inserted set to the enabled `nodes`: new nodes first, then
    /// rebuilt ones, then removals (so a replaced node never leaves the balancer empty).
    fn apply(&mut self, nodes: &[Node]) {
        let mut seen: HashSet<String> = HashSet::with_capacity(nodes.len());
        let mut inserts = Vec::new();
        let mut rebuilds = Vec::new();
        let mut removes = Vec::new();
        // A disabled node (taken out of traffic by an administrator) is no endpoint.
        for node in nodes.iter().filter(|n| n.enabled) {
            let address = node.address();
            seen.insert(address.clone());
            if let Some(old) = self.inserted.get(&address) {
                if **old == **node {
                    continue;
                }
                if !self.make.must_rebuild(old, node) {
                    // Same service; remember the new registration to compare the next one.
                    self.inserted.insert(address, node.clone());
                    continue;
                }
                self.inserted.remove(&address);
                match self.make.make(node) {
                    Some(service) => {
                        self.inserted.insert(address.clone(), node.clone());
                        rebuilds.push((address, service));
                    }
                    None => {
                        self.declined.insert(address.clone(), node.clone());
                        removes.push(address);
                    }
                }
                continue;
            }
            if let Some(old) = self.declined.get(&address) {
                if **old == **node || !self.make.must_rebuild(old, node) {
                    continue;
                }
                self.declined.remove(&address);
            }
            match self.make.make(node) {
                Some(service) => {
                    self.inserted.insert(address.clone(), node.clone());
                    inserts.push((address, service));
                }
                None => {
                    self.declined.insert(address, node.clone());
                }
            }
        }
        self.declined.retain(|address, _| seen.contains(address));
        let gone: Vec<String> = self
            .inserted
            .keys()
            .filter(|address| !seen.contains(*address))
            .cloned()
            .collect();
        for address in gone {
            self.inserted.remove(&address);
            removes.push(address);
        }
        if !(inserts.is_empty() && rebuilds.is_empty() && removes.is_empty()) {
            debug!(
                service = %self.service_key,
                inserted = inserts.len(),
                rebuilt = rebuilds.len(),
                removed = removes.len(),
                "balancer changes"
            );
        }
        for (address, service) in inserts {
            self.ready.push_back(Change::Insert(address, service));
        }
        for (address, service) in rebuilds {
            self.ready.push_back(Change::Remove(address.clone()));
            self.ready.push_back(Change::Insert(address, service));
        }
        for address in removes {
            self.ready.push_back(Change::Remove(address));
        }
    }
}

/// Watches `service_key`, retrying while the first listing fails; `None` once the registry
/// is shut down.
async fn first_watch(registry: Registry, service_key: String) -> Option<ServiceWatch> {
    let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    let mut failures = 0u32;
    loop {
        match registry.watch(&service_key).await {
            Ok(watch) => {
                if failures > 0 {
                    debug!(service = %service_key, failures, "listed the service after failures");
                }
                return Some(watch);
            }
            Err(RegistryError::Shutdown) => return None,
            Err(error) => {
                let delay = backoff.next_delay();
                let cause = registry_core::error_chain(&error);
                if failures == 0 {
                    warn!(service = %service_key, error = %cause, ?delay, "cannot list the service yet; the balancer has no node until it can");
                } else {
                    debug!(service = %service_key, error = %cause, ?delay, "cannot list the service yet");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

impl<M: MakeNodeService> Stream for RegistryDiscover<M> {
    type Item = Result<Change<String, M::Service>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(change) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match &mut this.state {
                State::Connecting(connecting) => {
                    this.state = match std::task::ready!(connecting.as_mut().poll(cx)) {
                        Some(watch) => State::Watching(watch),
                        None => State::Ended,
                    };
                }
                State::Watching(watch) => match std::task::ready!(watch.poll_next_unpin(cx)) {
                    Some(change) => this.apply(&change.nodes),
                    None => {
                        debug!(service = %this.service_key, "registry shut down: no more balancer changes");
                        this.state = State::Ended;
                    }
                },
                State::Ended => return Poll::Ready(None),
            }
        }
    }
}

impl<M: MakeNodeService> FusedStream for RegistryDiscover<M> {
    fn is_terminated(&self) -> bool {
        matches!(self.state, State::Ended) && self.ready.is_empty()
    }
}
