//! Register any server: a guard that keeps one node registered for a server this process runs
//! itself (tonic, axum, hyper, anything), and takes it out in the safe order when the server
//! stops.
//!
//! [`Registry::register_guard`] registers a [`ServiceMetaInfo`] (kept alive by the registry's
//! heartbeats, like [`Registry::register`]) and returns a [`Registration`]. Stopping a server
//! in the same order as the RPC runtime's provider:
//!
//! 1. deregister the node (consumers' watches drop it and stop sending new calls),
//! 2. wait a short grace ([`DEFAULT_DEREGISTER_GRACE`], see
//!    [`with_grace`](Registration::with_grace)) so that consumers notice,
//! 3. let the server stop (stop accepting, finish in-flight requests).
//!
//! [`Registration::shutdown_on_signal`] is a future that does steps 1 and 2 on SIGINT or
//! SIGTERM and then resolves: hand it to the server's graceful shutdown (axum's
//! `with_graceful_shutdown`, tonic's `serve_with_shutdown`), which does step 3.
//!
//! ```no_run
//! # async fn serve(listener: tokio::net::TcpListener) {}
//! # async fn demo(registry: registry_core::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use registry_core::ServiceMetaInfo;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let port = listener.local_addr()?.port();
//! let registration = registry
//!     .register_guard(ServiceMetaInfo::new("greeter", "127.0.0.1", port))
//!     .await?;
//! let stop = registration.shutdown_on_signal(); // deregisters, waits the grace, resolves
//! // e.g. axum::serve(listener, app).with_graceful_shutdown(stop).await?;
//! tokio::select! { () = serve(listener) => {}, () = stop => {} }
//! registry.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Dropped without deregistering
//! Dropping a [`Registration`] that was not deregistered spawns the deregistration on the
//! current Tokio runtime (without the grace: nothing waits for a drop). Outside a runtime, or
//! when the runtime is shutting down and the spawned task does not run, the node leaves the
//! store with [`Registry::shutdown`], or expires one TTL after the registry stops heart-beating
//! (when its last clone is dropped or the process ends). [`detach`](Registration::detach)
//! gives the node back without deregistering it.

use std::future::Future;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::error::RegistryError;
use crate::instance::ServiceMetaInfo;
use crate::registry::Registry;

/// Default time between deregistering a node and letting its server stop: long enough for
/// consumers' watches to see the node go on any backend (milliseconds on a healthy store),
/// short enough not to delay a deployment.
pub const DEFAULT_DEREGISTER_GRACE: Duration = Duration::from_millis(300);

impl Registry {
    /// Registers `node` like [`register`](Self::register) and returns a guard that deregisters
    /// it: explicitly ([`Registration::deregister`]), when a shutdown future resolves
    /// ([`Registration::shutdown_on`], [`Registration::shutdown_on_signal`]), or when dropped.
    ///
    /// A store that does not take the first write is not an error here: the node stays wanted
    /// and the registry keeps writing it in the background, as for
    /// [`register`](Self::register); [`Registration::pending`] tells why it is not written yet.
    ///
    /// # Errors
    /// [`RegistryError::InvalidService`] when the node cannot be stored as described,
    /// [`RegistryError::Shutdown`] after [`shutdown`](Self::shutdown). Nothing stays wanted
    /// then.
    pub async fn register_guard(
        &self,
        node: ServiceMetaInfo,
    ) -> Result<Registration, RegistryError> {
        let (node, pending) = match self.register(node.clone()).await {
            Ok(stored) => (stored, None),
            Err(error @ RegistryError::Store { .. }) => (node, Some(error)),
            Err(error) => return Err(error),
        };
        Ok(Registration {
            registry: self.clone(),
            node,
            grace: DEFAULT_DEREGISTER_GRACE,
            pending,
            armed: true,
        })
    }
}

/// Keeps one node registered for a server this process runs; see the [module docs](self).
///
/// The node is kept alive by the registry's heartbeats while the guard lives. Deregister it
/// with [`deregister`](Self::deregister) (then wait the grace), or hand
/// [`shutdown_on_signal`](Self::shutdown_on_signal) to the server's graceful shutdown. A guard
/// dropped without deregistering spawns the deregistration (see the module docs for when that
/// cannot happen).
///
/// Registering the same address twice (two guards, or a guard and
/// [`Registry::register`]) is one node in the store: the first deregistration removes it.
#[must_use = "dropping the registration deregisters the node"]
pub struct Registration {
    registry: Registry,
    node: ServiceMetaInfo,
    grace: Duration,
    pending: Option<RegistryError>,
    /// False once deregistered or detached: nothing to do on drop.
    armed: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("node", &self.node.node_key())
            .field("grace", &self.grace)
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Sets the time [`deregister`](Self::deregister) waits after taking the node out of the
    /// store, before it returns and the server may stop (default
    /// [`DEFAULT_DEREGISTER_GRACE`]). Pick at least the time consumers take to see a
    /// deregistration (their watch latency; `BENCHMARKS.md` has figures per backend).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The node as registered (with its registration time when the store took it).
    pub fn node(&self) -> &ServiceMetaInfo {
        &self.node
    }

    /// The grace waited after deregistering.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The registry the node is registered in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Why the store had not taken the node when it was registered (it is retried in the
    /// background until written or deregistered), or `None` when it had.
    pub fn pending(&self) -> Option<&RegistryError> {
        self.pending.as_ref()
    }

    /// Takes the node out of the store, then waits the [grace](Self::with_grace) so that
    /// consumers see it go before the caller stops its server.
    ///
    /// # Errors
    /// [`RegistryError::Store`] when the delete failed (after the grace): the node is no longer
    /// kept alive and expires after its TTL. A registry already shut down is not an error (its
    /// shutdown removed the node).
    pub async fn deregister(mut self) -> Result<(), RegistryError> {
        self.armed = false;
        let result = match self.registry.unregister(&self.node).await {
            Ok(()) | Err(RegistryError::Shutdown) => Ok(()),
            Err(error) => Err(error),
        };
        debug!(node = %self.node.node_key(), grace = ?self.grace, "deregistered, waiting for consumers to notice");
        tokio::time::sleep(self.grace).await;
        result
    }

    /// A future that waits for `signal`, then [deregisters](Self::deregister) (waiting the
    /// grace) and resolves: the graceful-shutdown future of a server (axum's
    /// `with_graceful_shutdown`, tonic's `serve_with_shutdown`), which then stops accepting and
    /// finishes its in-flight requests. A failed deregistration is logged (the node expires
    /// after its TTL). Dropping the future before it resolves drops the guard, which
    /// deregisters.
    // Not an `async fn`: the signature promises `Send + 'static` to servers' shutdown hooks.
    #[allow(clippy::manual_async_fn)]
    pub fn shutdown_on<F>(self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        async move {
            signal.await;
            let node = self.node.node_key();
            info!(%node, "shutting down: deregistering before the server stops");
            if let Err(error) = self.deregister().await {
                warn!(%node, error = %crate::util::error_chain(&error), "deregistration failed; the node expires after its TTL");
            }
        }
    }

    /// [`shutdown_on`](Self::shutdown_on) SIGINT or SIGTERM (the handlers are installed when
    /// this is called, so a signal arriving before the future is first polled is not lost).
    pub fn shutdown_on_signal(self) -> impl Future<Output = ()> + Send + 'static {
        self.shutdown_on(crate::signal::shutdown_signal())
    }

    /// Gives the node back without deregistering it: it stays registered, kept alive by the
    /// registry, until [`Registry::unregister`] or [`Registry::shutdown`].
    pub fn detach(mut self) -> ServiceMetaInfo {
        self.armed = false;
        std::mem::replace(&mut self.node, ServiceMetaInfo::new("", "", 0))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let node = std::mem::replace(&mut self.node, ServiceMetaInfo::new("", "", 0));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(node = %node.node_key(), "registration dropped outside a Tokio runtime: the node stays until the registry shuts down or its TTL runs out");
            return;
        };
        let registry = self.registry.clone();
        debug!(node = %node.node_key(), "registration dropped, deregistering");
        runtime.spawn(async move {
            match registry.unregister(&node).await {
                Ok(()) | Err(RegistryError::Shutdown) => {}
                Err(error) => warn!(
                    node = %node.node_key(),
                    error = %crate::util::error_chain(&error),
                    "deregistration of a dropped registration failed; the node expires after its TTL"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::{MemoryBackend, MemoryStore, RegistryOptions};

    fn registry(store: &Arc<MemoryStore>) -> Registry {
        Registry::new(
            Arc::new(MemoryBackend::new(store.clone())),
            RegistryOptions::default(),
        )
        .unwrap()
    }

    async fn addresses(registry: &Registry) -> Vec<String> {
        registry
            .inspect(Some("web:1.0"))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.node.address())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn deregister_removes_the_node_then_waits_the_grace() {
        let store = MemoryStore::new();
        let provider = registry(&store);
        let registration = provider
            .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 80))
            .await
            .unwrap()
            .with_grace(Duration::from_secs(2));
        assert!(registration.pending().is_none());
        assert!(registration.node().register_time.is_some());
        assert_eq!(addresses(&provider).await, ["127.0.0.1:80"]);

        let started = tokio::time::Instant::now();
        let observer = provider.clone();
        let done = tokio::spawn(registration.deregister());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            addresses(&observer).await.is_empty(),
            "gone before the grace"
        );
        done.await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2));
        // The node is not wanted any more: heartbeats do not put it back.
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(addresses(&provider).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_on_resolves_after_deregistering() {
        let store = MemoryStore::new();
        let provider = registry(&store);
        let registration = provider
            .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 80))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = tokio::spawn(registration.shutdown_on(async {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(addresses(&provider).await, ["127.0.0.1:80"]);
        tx.send(()).unwrap();
        let started = tokio::time::Instant::now();
        stop.await.unwrap();
        assert!(started.elapsed() >= DEFAULT_DEREGISTER_GRACE);
        assert!(addresses(&provider).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn drop_deregisters_and_detach_does_not() {
        let store = MemoryStore::new();
        let provider = registry(&store);
        let registration = provider
            .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 80))
            .await
            .unwrap();
        drop(registration);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(addresses(&provider).await.is_empty());

        let node = provider
            .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 81))
            .await
            .unwrap()
            .detach();
        assert_eq!(node.address(), "127.0.0.1:81");
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(addresses(&provider).await, ["127.0.0.1:81"]);
        provider.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_nodes_and_a_shut_down_registry_are_errors() {
        let store = MemoryStore::new();
        let provider = registry(&store);
        assert!(matches!(
            provider
                .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 0))
                .await,
            Err(RegistryError::InvalidService(_))
        ));
        let registration = provider
            .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 80))
            .await
            .unwrap()
            .with_grace(Duration::ZERO);
        provider.shutdown().await.unwrap();
        assert!(matches!(
            provider
                .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 81))
                .await,
            Err(RegistryError::Shutdown)
        ));
        // The shutdown removed the node: deregistering afterwards is not an error.
        registration.deregister().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_outage_at_registration_is_pending_not_an_error() {
        let store = MemoryStore::new();
        let provider = registry(&store);
        store.set_down(true);
        let registration = provider
            .register_guard(ServiceMetaInfo::new("web", "127.0.0.1", 80))
            .await
            .unwrap();
        assert!(matches!(
            registration.pending(),
            Some(RegistryError::Store { .. })
        ));
        store.set_down(false);
        // Written in the background.
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(addresses(&provider).await, ["127.0.0.1:80"]);
        registration
            .with_grace(Duration::ZERO)
            .deregister()
            .await
            .unwrap();
        assert!(addresses(&provider).await.is_empty());
    }
}
