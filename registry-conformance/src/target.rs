//! The store a backend's tests run against: its address and how the backend connects to it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use registry_core::{
    error_chain, Backend, BackendError, ConnectOptions, Registry, RegistryOptions,
};

type Connecting = Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send>>;
type ConnectFn = dyn Fn(ConnectOptions) -> Connecting + Send + Sync;

/// A store under test: an address and the backend's connect function. Every backend's tests
/// build one (a line in their `support` module) and get from it what is the same for every
/// backend: clients as separate processes would have them, with the test's options.
///
/// ```
/// use registry_conformance::{default_options, Target};
/// use registry_core::{MemoryBackend, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let target = Target::new("doc-store", |options| async move {
///     Ok(MemoryBackend::new(MemoryStore::named(&options.address)))
/// });
/// let registry = target.registry(default_options()).await;
/// assert_eq!(registry.backend_name(), "memory");
/// registry.shutdown().await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct Target {
    address: String,
    connect: Arc<ConnectFn>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The store at `address`, connected to with `connect` (say
    /// `|o| async move { EtcdBackend::connect(&o).await }`).
    pub fn new<B, F, Fut>(address: impl Into<String>, connect: F) -> Self
    where
        B: Backend,
        F: Fn(ConnectOptions) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B, BackendError>> + Send + 'static,
    {
        let connect = move |options| {
            let connecting = connect(options);
            Box::pin(async move { Ok(Arc::new(connecting.await?) as Arc<dyn Backend>) })
                as Connecting
        };
        Self {
            address: address.into(),
            connect: Arc::new(connect),
        }
    }

    /// The store's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// What a registry with `options` passes its backend to connect here.
    pub fn connect_options(&self, options: &RegistryOptions) -> ConnectOptions {
        ConnectOptions::for_registry(&self.address, options)
    }

    /// Connects a backend as a registry with `options` would.
    ///
    /// # Errors
    /// What the backend's connect returned.
    pub async fn try_backend(
        &self,
        options: &RegistryOptions,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        (self.connect)(self.connect_options(options)).await
    }

    /// [`try_backend`](Self::try_backend); panics with the whole error chain when it fails.
    pub async fn backend(&self, options: &RegistryOptions) -> Arc<dyn Backend> {
        self.try_backend(options)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {}", self.address, error_chain(&e)))
    }

    /// A new registry client with `options`, as a separate process would have; panics when it
    /// cannot connect.
    pub async fn registry(&self, options: RegistryOptions) -> Registry {
        let backend = self.backend(&options).await;
        Registry::new(backend, options).expect("valid options")
    }

    /// [`registry`](Self::registry) logged in as `user` with `password` (the store's user, ACL
    /// identity or role, as each backend maps credentials).
    pub async fn registry_as(
        &self,
        user: &str,
        password: &str,
        options: RegistryOptions,
    ) -> Registry {
        let connect = ConnectOptions {
            username: Some(user.to_owned()),
            password: Some(password.to_owned()),
            ..self.connect_options(&options)
        };
        let backend = (self.connect)(connect).await.unwrap_or_else(|e| {
            panic!("connect to {} as {user}: {}", self.address, error_chain(&e))
        });
        Registry::new(backend, options).expect("valid options")
    }
}
