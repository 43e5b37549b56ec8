//! The registry API: register, unregister, discover, subscribe, evict, shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::backend::BackendError;
use crate::cache::{ServiceCache, ServiceNodes};
use crate::error::RegistryError;
use crate::instance::ServiceMetaInfo;
use crate::listener::{self, ServiceListener, ServiceWatch, Subscription};
use crate::options::RegistryOptions;
use crate::overrides::{NodeOverride, Overrides};
use crate::registrar::Registrar;
use crate::registration::{RegistrationState, RegistrationWatch};
use crate::tasks::Tasks;
use crate::truth::TruthObserver;
use crate::util::timed;

/// The cache key of the whole-root entry used by [`Registry::subscribe_all`].
const ALL_SERVICES: &str = "";

/// A node as read from the store by [`Registry::inspect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node.
    pub node: ServiceMetaInfo,
    /// Time left before it expires, where the store can tell.
    pub ttl_remaining: Option<Duration>,
}

/// A registry client: the provider side (register, heartbeat, unregister) and the consumer side
/// (discover through the cache, subscribe) over one store [`Backend`] chosen at run time.
///
/// Cheap to clone: clones share one client. When the last clone is dropped without
/// [`shutdown`](Self::shutdown), the background tasks stop and the nodes expire after their TTL
/// (what a crash looks like to other processes). Must be created inside a Tokio runtime.
///
/// ```
/// use std::sync::Arc;
/// use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), registry_core::RegistryError> {
/// let store = MemoryStore::new();
/// let provider = Registry::new(Arc::new(MemoryBackend::new(store.clone())), RegistryOptions::default())?;
/// let consumer = Registry::new(Arc::new(MemoryBackend::new(store)), RegistryOptions::default())?;
///
/// provider.register(ServiceMetaInfo::new("users", "127.0.0.1", 8080)).await?;
/// let nodes = consumer.discover("users:1.0").await?;
/// assert_eq!(nodes[0].address(), "127.0.0.1:8080");
///
/// provider.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    options: Arc<RegistryOptions>,
    registrar: Arc<Registrar>,
    cache: ServiceCache,
    /// Stops the heartbeat task.
    heartbeat: CancellationToken,
    /// Every task of this client (heartbeat, watchers, listeners, own-service watches).
    tasks: Arc<Tasks>,
    closed: AtomicBool,
    /// Cache hits and misses of `discover` (registered once: a hit allocates nothing).
    lookups: crate::metrics::LookupCounters,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("backend", &self.inner.backend.name())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry client over `backend`, which starts its heartbeat task.
    ///
    /// # Errors
    /// [`RegistryError::InvalidOptions`] when the options do not validate,
    /// [`RegistryError::NoRuntime`] outside a Tokio runtime.
    pub fn new(backend: Arc<dyn Backend>, options: RegistryOptions) -> Result<Self, RegistryError> {
        options.validate()?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RegistryError::NoRuntime)?;
        let options = Arc::new(options);
        let tasks = Arc::new(Tasks::new());
        let heartbeat = tasks.child_token();
        let registrar = Arc::new(Registrar::new(backend.clone(), options.clone()));
        let cache = ServiceCache::new(
            backend.clone(),
            options.clone(),
            registrar.clone() as Arc<dyn TruthObserver>,
            tasks.clone(),
        );
        // A new tracker accepts every spawn.
        tasks.spawn_on(registrar.clone().run(heartbeat.clone()), &runtime);
        Ok(Self {
            inner: Arc::new(Inner {
                lookups: crate::metrics::LookupCounters::new(backend.name()),
                backend,
                options,
                registrar,
                cache,
                heartbeat,
                tasks,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The backend's name, e.g. `etcd`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The backend, for store-specific inspection (TTL left, health).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The options in force.
    pub fn options(&self) -> &RegistryOptions {
        &self.inner.options
    }

    fn check_open(&self) -> Result<(), RegistryError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(RegistryError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Registers `node` (stamping its registration time) and keeps it alive with heartbeats
    /// until it is unregistered or the registry shuts down. Returns the node as stored.
    ///
    /// Registering the same address again replaces the stored node.
    ///
    /// # Errors
    /// [`RegistryError::InvalidService`] when the node cannot be stored as described.
    /// [`RegistryError::Store`] when the write failed: the node stays wanted and the heartbeat
    /// task keeps writing it in the background (with jittered backoff) until it succeeds or
    /// [`unregister`](Self::unregister) is called, so a provider may log the error and go on.
    pub async fn register(
        &self,
        mut node: ServiceMetaInfo,
    ) -> Result<ServiceMetaInfo, RegistryError> {
        self.check_open()?;
        node.validate()?;
        // Millisecond precision, as stored: the returned node equals what consumers read.
        node.register_time = Some(crate::instance::now_millis());
        let path = self.inner.options.keys.node_path(&node);
        let service_key = node.service_key();
        let node = Arc::new(node);
        let result = self
            .inner
            .registrar
            .register(path.clone(), node.clone())
            .await;
        // Watch our own service so a node deleted behind our back is put back without waiting
        // for a heartbeat (and so this process's cache holds its truth: a `discover` here
        // builds the list from it without asking the store).
        self.watch_own_service(service_key);
        let backend = self.inner.backend.name();
        crate::metrics::register(backend, result.is_ok());
        crate::metrics::registered_nodes(backend, self.inner.registrar.len());
        match result {
            Ok(()) => {
                info!(node = %path, "registered");
                Ok(Arc::unwrap_or_clone(node))
            }
            Err(source) => {
                warn!(node = %path, error = %crate::util::error_chain(&source), "registration failed, retrying in the background");
                Err(RegistryError::Store {
                    operation: format!("register {path}"),
                    source,
                })
            }
        }
    }

    fn watch_own_service(&self, service_key: String) {
        if self.inner.cache.entry(&service_key).is_some() {
            return;
        }
        let registry = Arc::downgrade(&self.inner);
        let cancel = self.inner.tasks.child_token();
        // Refused only when the registry is shutting down: nothing to watch then.
        self.inner.tasks.spawn(async move {
            let mut backoff =
                crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                let Some(inner) = registry.upgrade() else {
                    return;
                };
                let result = tokio::select! {
                    () = cancel.cancelled() => return,
                    result = inner.cache.load_unread(&service_key) => result,
                };
                drop(inner);
                match result {
                    Ok(_) | Err(RegistryError::Shutdown) => return,
                    Err(error) => debug!(
                        service = %service_key,
                        error = %crate::util::error_chain(&error),
                        "cannot watch own service yet"
                    ),
                }
                if !crate::util::sleep_or_cancel(backoff.next_delay(), &cancel).await {
                    return;
                }
            }
        });
    }

    /// Unregisters `node` (matched by service key and address) and deletes it from the store.
    /// Consumers see it removed through their watch.
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the delete failed. The node is no longer wanted: when the
    /// store could not take the delete (unreachable, slow), the heartbeat task deletes it in
    /// the background until it does (its liveness is shared with this client's other nodes,
    /// so it would not expire on its own), unless it is registered again, and a graceful
    /// [`shutdown`](Self::shutdown) removes it too. A delete refused for good (a missing
    /// permission) is not retried.
    pub async fn unregister(&self, node: &ServiceMetaInfo) -> Result<(), RegistryError> {
        self.check_open()?;
        let path = self.inner.options.keys.node_path(node);
        let result = self.inner.registrar.unregister(&path).await;
        let backend = self.inner.backend.name();
        crate::metrics::unregister(backend, result.is_ok());
        crate::metrics::registered_nodes(backend, self.inner.registrar.len());
        match result {
            Ok(_) => {
                info!(node = %path, "unregistered");
                Ok(())
            }
            Err(source) => Err(RegistryError::Store {
                operation: format!("unregister {path}"),
                source,
            }),
        }
    }

    /// Where the registration of `node` (matched by service key and address) stands: `None`
    /// when this client does not keep it registered. See [`RegistrationState`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, RegistrationState, ServiceMetaInfo};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), registry_core::RegistryError> {
    /// let registry = Registry::new(Arc::new(MemoryBackend::new(MemoryStore::new())), RegistryOptions::default())?;
    /// let node = registry.register(ServiceMetaInfo::new("users", "127.0.0.1", 8080)).await?;
    /// assert_eq!(registry.registration_state(&node), Some(RegistrationState::Live));
    /// # registry.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn registration_state(&self, node: &ServiceMetaInfo) -> Option<RegistrationState> {
        let path = self.inner.options.keys.node_path(node);
        self.inner
            .registrar
            .registration(&path)
            .map(|rx| *rx.borrow())
    }

    /// The states of `node`'s registration as they change (the current one first), for a
    /// readiness probe: `None` when this client does not keep it registered. The stream ends
    /// when the node is unregistered or the registry shuts down.
    pub fn watch_registration(&self, node: &ServiceMetaInfo) -> Option<RegistrationWatch> {
        let path = self.inner.options.keys.node_path(node);
        self.inner
            .registrar
            .registration(&path)
            .map(RegistrationWatch::new)
    }

    /// The nodes this client keeps registered.
    pub fn registered(&self) -> Vec<Arc<ServiceMetaInfo>> {
        self.inner.registrar.registered()
    }

    /// The nodes of `service_key`, from the cache when the service was discovered before (no
    /// I/O, no lock), else listed from the store, which also starts the service's one watch.
    ///
    /// # Errors
    /// [`RegistryError::NoProvider`] when the service has no node (the watch stays, so later
    /// registrations are seen); [`RegistryError::Store`] when the first listing failed.
    pub fn discover<'a>(
        &'a self,
        service_key: &'a str,
    ) -> impl Future<Output = Result<ServiceNodes, RegistryError>> + Send + 'a {
        // The hit is answered before any future state exists; only a miss builds (and boxes)
        // the listing future, so a hit stays a few loads and one `Arc` clone. Errors are built
        // inside: the future carries a small `Hit`, not a `RegistryError`.
        let hit = if self.check_open().is_err() {
            Hit::Closed
        } else {
            let counters = &self.inner.lookups;
            match self.inner.cache.get(service_key) {
                Some(nodes) => {
                    counters.hits.increment(1);
                    Hit::Cached(nodes)
                }
                None => {
                    counters.misses.increment(1);
                    Hit::Miss
                }
            }
        };
        async move {
            match hit {
                Hit::Cached(nodes) => self.non_empty(service_key, nodes),
                Hit::Closed => Err(RegistryError::Shutdown),
                Hit::Miss => Box::pin(self.discover_from_store(service_key)).await,
            }
        }
    }

    async fn discover_from_store(&self, service_key: &str) -> Result<ServiceNodes, RegistryError> {
        let entry = self.inner.cache.load(service_key).await?;
        self.non_empty(service_key, ServiceNodes::from_registry(entry.snapshot()))
    }

    fn non_empty(
        &self,
        service_key: &str,
        nodes: ServiceNodes,
    ) -> Result<ServiceNodes, RegistryError> {
        if nodes.is_empty() {
            Err(self.no_provider(service_key))
        } else {
            Ok(nodes)
        }
    }

    /// The cached nodes of `service_key`, or `None` when it was never discovered: the
    /// lock-free, allocation-free hot path behind [`discover`](Self::discover) (a thread's
    /// first lookup in a registry sets up that thread's view of it, once).
    #[inline]
    pub fn cached(&self, service_key: &str) -> Option<ServiceNodes> {
        self.inner.cache.get(service_key)
    }

    /// The error for a service without nodes, naming this registry.
    fn no_provider(&self, service_key: &str) -> RegistryError {
        RegistryError::NoProvider {
            service: service_key.to_owned(),
            registry: self.inner.backend.name(),
        }
    }

    /// The service keys this client caches.
    pub fn cached_services(&self) -> Vec<String> {
        let mut keys = self.inner.cache.service_keys();
        keys.retain(|k| k != ALL_SERVICES);
        keys.sort();
        keys
    }

    /// Subscribes `listener` to the changes of `service_key`. It first receives the current
    /// list (every node as added), then each change.
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the service was not cached and listing it failed.
    pub async fn subscribe(
        &self,
        service_key: &str,
        listener: impl ServiceListener,
    ) -> Result<Subscription, RegistryError> {
        self.check_open()?;
        let entry = self.inner.cache.load(service_key).await?;
        listener::spawn(
            Arc::from(service_key),
            &entry,
            Arc::new(listener),
            &self.inner.tasks,
        )
        .ok_or(RegistryError::Shutdown)
    }

    /// Subscribes `listener` to the changes of every service under the root (for tools such as
    /// `registryctl watch`). One watch on the whole root, shared by every such listener.
    ///
    /// # Errors
    /// [`RegistryError::Store`] when listing the root failed.
    pub async fn subscribe_all(
        &self,
        listener: impl ServiceListener,
    ) -> Result<Subscription, RegistryError> {
        self.subscribe(ALL_SERVICES, listener).await
    }

    /// The changes of `service_key` as a [`Stream`](futures::Stream): the stream counterpart
    /// of [`subscribe`](Self::subscribe), on the same cache entry (one watch per service,
    /// whatever the number of streams and listeners). The first item is the current list
    /// (every node as added, marked `resync`); a consumer that falls behind gets one folded
    /// change marked `resync`. The stream ends when the registry shuts down or is dropped. See
    /// [`ServiceWatch`] for an example.
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the service was not cached and listing it failed;
    /// [`RegistryError::Shutdown`] after [`shutdown`](Self::shutdown).
    pub async fn watch(&self, service_key: &str) -> Result<ServiceWatch, RegistryError> {
        self.check_open()?;
        let entry = self.inner.cache.load(service_key).await?;
        Ok(ServiceWatch::new(
            Arc::from(service_key),
            &entry,
            self.inner.tasks.child_token(),
        ))
    }

    /// The changes of every service under the root as a stream, like
    /// [`subscribe_all`](Self::subscribe_all) (one watch on the whole root, shared); items
    /// carry an empty [`service_key`](crate::ServiceChange::service_key).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use futures::StreamExt as _;
    /// use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), registry_core::RegistryError> {
    /// let registry = Registry::new(
    ///     Arc::new(MemoryBackend::new(MemoryStore::new())),
    ///     RegistryOptions::default(),
    /// )?;
    /// registry.register(ServiceMetaInfo::new("users", "127.0.0.1", 8080)).await?;
    /// registry.register(ServiceMetaInfo::new("orders", "127.0.0.1", 8081)).await?;
    /// let mut all = registry.watch_all().await?;
    /// let first = all.next().await.expect("the current nodes");
    /// assert_eq!(first.nodes.len(), 2);
    /// registry.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RegistryError::Store`] when listing the root failed;
    /// [`RegistryError::Shutdown`] after [`shutdown`](Self::shutdown).
    pub async fn watch_all(&self) -> Result<ServiceWatch, RegistryError> {
        self.watch(ALL_SERVICES).await
    }

    /// Takes `address` (`host:port`) out of this client's cached list of `service_key` at once,
    /// and asks for the service to be listed again. Used by the RPC layer when a node refuses
    /// connections. The node stays out until the store shows it registered anew, or for one
    /// TTL (by then the store has dropped it if its owner is dead).
    pub fn evict(&self, service_key: &str, address: &str) {
        let Some(entry) = self.inner.cache.entry(service_key) else {
            return;
        };
        let now = tokio::time::Instant::now();
        {
            let mut state = entry.lock();
            if state
                .evict(address, now + self.inner.options.ttl, now)
                .is_some()
            {
                entry.publish(&state);
            }
        }
        info!(service = service_key, %address, "evicted node from the cache, relisting");
        entry.request_relist();
    }

    /// Reads the nodes of `service_key` (every service under the root when `None`) straight from
    /// the store, with the time each has left where the store can tell. Junk entries are skipped
    /// with a warning. For tools (`registryctl list`); RPC calls use [`discover`](Self::discover).
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the listing failed.
    pub async fn inspect(
        &self,
        service_key: Option<&str>,
    ) -> Result<Vec<NodeStatus>, RegistryError> {
        let keys = &self.inner.options.keys;
        let prefix = match service_key {
            Some(key) => keys.service_prefix(key),
            None => keys.root().to_owned(),
        };
        let store_error = |source| RegistryError::Store {
            operation: format!("list {prefix}"),
            source,
        };
        let timeout = self.inner.options.timeout;
        let backend = &*self.inner.backend;
        let listing = crate::cache::list(backend, &prefix, timeout)
            .await
            .map_err(store_error)?;
        // One request per liveness handle, not one per node.
        let ttls = timed(
            backend,
            timeout,
            || format!("ttls {prefix}"),
            backend.ttls(&prefix),
        )
        .await
        .map_err(store_error)?;
        let overrides = match service_key {
            Some(key) => HashMap::from([(key.to_owned(), self.overrides(key).await?)]),
            None => self.all_overrides().await?,
        };
        let nodes: Vec<NodeStatus> =
            crate::cache::decode_listing(keys, &prefix, &listing.entries, service_key)
                .into_iter()
                .map(|(kv, node)| {
                    let node = match overrides.get(&node.service_key()) {
                        Some(o) => Arc::unwrap_or_clone(o.apply(&Arc::new(node))),
                        None => node,
                    };
                    NodeStatus {
                        node,
                        ttl_remaining: ttls.get(&kv.key).copied(),
                    }
                })
                .collect();
        Ok(nodes)
    }

    /// Every service's overrides record, as the store holds them now.
    async fn all_overrides(&self) -> Result<HashMap<String, Overrides>, RegistryError> {
        let keys = &self.inner.options.keys;
        let prefix = keys.overrides_prefix();
        let listing = crate::cache::list(&*self.inner.backend, &prefix, self.inner.options.timeout)
            .await
            .map_err(|source| RegistryError::Store {
                operation: format!("list {prefix}"),
                source,
            })?;
        Ok(crate::cache::decode_overrides_listing(
            keys,
            &listing.entries,
        ))
    }

    /// The overrides record of `service_key`, as the store holds it now (see
    /// [`crate::overrides`]); empty when it has none.
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the store could not be read.
    pub async fn overrides(&self, service_key: &str) -> Result<Overrides, RegistryError> {
        // The tree holds one small record per overridden service: read it whole.
        Ok(self
            .all_overrides()
            .await?
            .remove(service_key)
            .unwrap_or_default())
    }

    /// Changes what an administrator overrides for node `address` (`host:port`) of
    /// `service_key`, with `change`, and writes the service's overrides record back; returns
    /// the node's override as written. Every consumer applies it through its watch, and the
    /// node's owner never undoes it (see [`crate::overrides`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), registry_core::RegistryError> {
    /// let store = MemoryStore::new();
    /// let provider = Registry::new(Arc::new(MemoryBackend::new(store.clone())), RegistryOptions::default())?;
    /// let admin = Registry::new(Arc::new(MemoryBackend::new(store)), RegistryOptions::default())?;
    /// provider.register(ServiceMetaInfo::new("users", "10.0.0.7", 8080)).await?;
    /// admin.set_override("users:1.0", "10.0.0.7:8080", |o| o.enabled = Some(false)).await?;
    /// let nodes = admin.inspect(Some("users:1.0")).await?;
    /// assert!(!nodes[0].node.enabled);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the record could not be read or written.
    pub async fn set_override(
        &self,
        service_key: &str,
        address: &str,
        change: impl FnOnce(&mut NodeOverride),
    ) -> Result<NodeOverride, RegistryError> {
        self.check_open()?;
        let mut record = self.overrides(service_key).await?;
        let mut node = record.nodes.get(address).copied().unwrap_or_default();
        change(&mut node);
        if node.is_empty() {
            record.nodes.remove(address);
        } else {
            record.nodes.insert(address.to_owned(), node);
        }
        let path = self.inner.options.keys.overrides_path(service_key);
        let value = if record.nodes.is_empty() {
            None
        } else {
            Some(
                serde_json::to_vec(&record).map_err(|e| RegistryError::Store {
                    operation: format!("encode {path}"),
                    source: BackendError::request(self.backend_name(), "encode", e),
                })?,
            )
        };
        let backend = &*self.inner.backend;
        timed(
            backend,
            self.inner.options.timeout,
            || format!("write {path}"),
            backend.admin_write(&path, value.as_deref()),
        )
        .await
        .map_err(|source| RegistryError::Store {
            operation: format!("write {path}"),
            source,
        })?;
        info!(service = service_key, %address, ?node, "override written");
        Ok(node)
    }

    /// Deletes node `address` of `service_key` from the store as an administrator, whoever
    /// holds it. Consumers see it go; an owner that is still alive registers it again within
    /// about a heartbeat (to take a node out of traffic for good, disable it with
    /// [`set_override`](Self::set_override)).
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the delete failed.
    pub async fn force_deregister(
        &self,
        service_key: &str,
        address: &str,
    ) -> Result<(), RegistryError> {
        self.check_open()?;
        let path = format!(
            "{}{address}",
            self.inner.options.keys.service_prefix(service_key)
        );
        let backend = &*self.inner.backend;
        timed(
            backend,
            self.inner.options.timeout,
            || format!("delete {path}"),
            backend.admin_write(&path, None),
        )
        .await
        .map_err(|source| RegistryError::Store {
            operation: format!("delete {path}"),
            source,
        })
    }

    /// Checks that the store answers **and that this client may write under the root**: a
    /// probe key three levels below the root (`<root>.health/<random>/probe`, never taken
    /// for a node) is written and deleted. A store that answers reads but refuses this
    /// client's writes (missing credentials, a read-only role, an ACL) fails the check.
    ///
    /// # Errors
    /// [`RegistryError::Store`] with the backend's error (an authentication or permission
    /// error is [`BackendError::Auth`](crate::BackendError::Auth)).
    pub async fn health(&self) -> Result<(), RegistryError> {
        let timeout = self.inner.options.timeout;
        let backend = &*self.inner.backend;
        let failed = |operation: &str| {
            let operation = operation.to_owned();
            move |source| RegistryError::Store { operation, source }
        };
        timed(backend, timeout, || "health".into(), backend.health())
            .await
            .map_err(failed("health check"))?;
        let probe = format!(
            "{}.health/{:016x}/probe",
            self.inner.options.keys.root(),
            rand::random::<u64>()
        );
        let ttl = self.inner.options.ttl;
        timed(
            backend,
            timeout,
            || format!("put {probe}"),
            backend.put(&probe, b"{}", ttl),
        )
        .await
        .map_err(failed("health check: writing under the root"))?;
        timed(
            backend,
            timeout,
            || format!("delete {probe}"),
            backend.delete(&probe),
        )
        .await
        .map_err(failed("health check: deleting the probe"))
    }

    /// Graceful shutdown: stops heart-beating, removes every node this client registered (in as
    /// few requests as the store allows), then stops every background task of this client
    /// (heartbeat, watches, listeners) and waits until they have ended. Later calls to the
    /// registry fail with [`RegistryError::Shutdown`], and streams from
    /// [`watch`](Self::watch) end; a second `shutdown` does nothing.
    ///
    /// # Time
    /// Removing the nodes is one store request bounded by the options'
    /// [`timeout`](RegistryOptions::timeout); waiting for the tasks is bounded by the same
    /// timeout again. The tasks end at once when told to, except a listener busy in its
    /// callback, which finishes that call first: when `shutdown` returns, no task of this
    /// registry runs and no listener is called any more, unless a listener blocked for longer
    /// than the timeout (logged as a warning; its task ends when the callback returns).
    ///
    /// # Errors
    /// [`RegistryError::Store`] when removing the nodes failed; they expire after their TTL.
    pub async fn shutdown(&self) -> Result<(), RegistryError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.heartbeat.cancel();
        // A repair write in flight must land before the nodes are removed, not after.
        if !self
            .inner
            .registrar
            .stopped(self.inner.options.timeout)
            .await
        {
            warn!("the heartbeat task did not stop within the timeout; removing the nodes anyway");
        }
        let keys = self.inner.registrar.drain();
        let timeout = self.inner.options.timeout;
        let backend = &self.inner.backend;
        let result = timed(&**backend, timeout, || "close".into(), backend.close(&keys)).await;
        let running = self.inner.tasks.stop(timeout).await;
        if running > 0 {
            warn!(
                tasks = running,
                ?timeout,
                "background tasks still running after shutdown (a listener blocking in its callback?)"
            );
        }
        match result {
            Ok(()) => {
                info!(nodes = keys.len(), "registry shut down, nodes removed");
                Ok(())
            }
            Err(source) => Err(RegistryError::Store {
                operation: format!("shutdown (removing {} nodes)", keys.len()),
                source,
            }),
        }
    }

    /// Background tasks of this client not ended yet (for tests).
    #[cfg(test)]
    pub(crate) fn running_tasks(&self) -> usize {
        self.inner.tasks.running()
    }

    /// How many times the served list of `service_key` was published (for tests).
    #[cfg(test)]
    pub(crate) fn publishes(&self, service_key: &str) -> Option<u64> {
        let entry = self.inner.cache.entry(service_key)?;
        let generation = entry.snapshot().generation;
        Some(generation)
    }
}

/// What [`Registry::discover`] found before its future runs.
enum Hit {
    Cached(ServiceNodes),
    Closed,
    Miss,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{MemoryBackend, MemoryStore, ServiceChange};

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_every_task_and_starts_none_after() {
        let store = MemoryStore::new();
        let registry = Registry::new(
            Arc::new(MemoryBackend::new(store)),
            RegistryOptions::default(),
        )
        .unwrap();
        // Heartbeat, the own-service watch (which starts the watcher of `users`), the watchers
        // of `orders` and of the root, the overrides watch, and two listeners.
        registry
            .register(ServiceMetaInfo::new("users", "127.0.0.1", 1))
            .await
            .unwrap();
        assert!(registry.discover("orders:1.0").await.is_err());
        let _one = registry
            .subscribe("users:1.0", |_: &ServiceChange| {})
            .await
            .unwrap();
        let _all = registry
            .subscribe_all(|_: &ServiceChange| {})
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(registry.running_tasks(), 7);

        registry.shutdown().await.unwrap();
        assert_eq!(registry.running_tasks(), 0);
        assert!(matches!(
            registry
                .subscribe("users:1.0", |_: &ServiceChange| {})
                .await,
            Err(RegistryError::Shutdown)
        ));
        assert_eq!(registry.running_tasks(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_last_clone_stops_every_task() {
        let store = MemoryStore::new();
        let registry = Registry::new(
            Arc::new(MemoryBackend::new(store)),
            RegistryOptions::default(),
        )
        .unwrap();
        let tasks = registry.inner.tasks.clone();
        registry
            .register(ServiceMetaInfo::new("users", "127.0.0.1", 1))
            .await
            .unwrap();
        let subscription = registry
            .subscribe("users:1.0", |_: &ServiceChange| {})
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(tasks.running(), 4);
        drop(registry);
        assert!(tasks.is_cancelled(), "the drop told every task to stop");
        assert_eq!(tasks.stop(Duration::from_secs(1)).await, 0);
        drop(subscription);
    }
}
