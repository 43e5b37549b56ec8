//! Registry backends by name: our stand-in for Java's SPI.
//!
//! `rpc.registryConfig.registry` names a backend; the [`BackendFactory`] turns the name and the
//! connection options into a connected [`Backend`]. Built-in backends are compiled in by cargo
//! features (one per backend) and registered on first use; another crate adds its own backend
//! under a new name with [`BackendFactory::register`], without editing this crate:
//!
//! ```
//! use std::sync::Arc;
//! use registry_core::{Backend, MemoryBackend, MemoryStore};
//! use rpc_config::factory::BackendFactory;
//!
//! BackendFactory::global().register("my-store", |_options| async move {
//!     // Connect to the store here.
//!     Ok(Arc::new(MemoryBackend::new(MemoryStore::new())) as Arc<dyn Backend>)
//! });
//! assert!(BackendFactory::global().names().contains(&"my-store".to_owned()));
//! ```
//!
//! An unknown name is an error that lists the known ones.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use futures::future::BoxFuture;
use futures::FutureExt as _;
use registry_core::{Backend, BackendError, ConnectOptions, MemoryBackend, MemoryStore};

/// Builds a connected backend from connection options.
pub type Constructor = Arc<
    dyn Fn(ConnectOptions) -> BoxFuture<'static, Result<Arc<dyn Backend>, BackendError>>
        + Send
        + Sync,
>;

/// Why the factory could not provide a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FactoryError {
    /// No backend is known under this name.
    #[error("unknown registry `{name}` in rpc.registryConfig.registry; known registries: {}", .known.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The names known, sorted.
        known: Vec<String>,
    },
    /// The backend could not connect.
    #[error("cannot connect to the `{name}` registry at `{address}`")]
    Connect {
        /// The backend name.
        name: String,
        /// The configured address, its password redacted (empty: the backend's default).
        address: String,
        /// Cause.
        #[source]
        source: BackendError,
    },
}

/// Name -> backend constructor.
#[derive(Default)]
pub struct BackendFactory {
    constructors: RwLock<BTreeMap<String, Constructor>>,
}

impl std::fmt::Debug for BackendFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendFactory")
            .field("names", &self.names())
            .finish()
    }
}

impl BackendFactory {
    /// An empty factory (no backend at all).
    pub fn empty() -> Self {
        Self::default()
    }

    /// A factory with every backend compiled into this build.
    pub fn with_builtins() -> Self {
        let factory = Self::empty();
        #[cfg(feature = "memory")]
        factory.register("memory", |options: ConnectOptions| async move {
            // The address names a process-wide store; empty is the store `default`.
            let store = MemoryStore::named(options.address.trim());
            Ok(Arc::new(MemoryBackend::new(store)) as Arc<dyn Backend>)
        });
        #[cfg(feature = "etcd")]
        factory.register("etcd", |options: ConnectOptions| async move {
            let backend = registry_etcd::EtcdBackend::connect(&options).await?;
            Ok(Arc::new(backend) as Arc<dyn Backend>)
        });
        #[cfg(feature = "zookeeper")]
        factory.register("zookeeper", |options: ConnectOptions| async move {
            let backend = registry_zookeeper::ZkBackend::connect(&options).await?;
            Ok(Arc::new(backend) as Arc<dyn Backend>)
        });
        #[cfg(feature = "redis")]
        factory.register("redis", |options: ConnectOptions| async move {
            let backend = registry_redis::RedisBackend::connect(&options).await?;
            Ok(Arc::new(backend) as Arc<dyn Backend>)
        });
        factory
    }

    /// The process-wide factory, holding the built-in backends plus whatever was registered.
    pub fn global() -> &'static Self {
        static GLOBAL: OnceLock<BackendFactory> = OnceLock::new();
        GLOBAL.get_or_init(Self::with_builtins)
    }

    /// Adds (or replaces) the backend called `name`.
    pub fn register<F, Fut>(&self, name: &str, constructor: F)
    where
        F: Fn(ConnectOptions) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send + 'static,
    {
        let constructor: Constructor = Arc::new(move |options| constructor(options).boxed());
        self.constructors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), constructor);
    }

    /// The known names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.constructors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The constructor of the backend called `name`, for connecting later or again.
    pub fn constructor(&self, name: &str) -> Option<Constructor> {
        self.constructors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Whether `name` is known.
    pub fn contains(&self, name: &str) -> bool {
        self.constructors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
    }

    /// Checks that `name` is known without connecting.
    ///
    /// # Errors
    /// [`FactoryError::UnknownBackend`] listing the known names.
    pub fn check(&self, name: &str) -> Result<(), FactoryError> {
        if self.contains(name) {
            Ok(())
        } else {
            Err(FactoryError::UnknownBackend {
                name: name.to_owned(),
                known: self.names(),
            })
        }
    }

    /// Connects the backend called `name`.
    ///
    /// # Errors
    /// [`FactoryError::UnknownBackend`] listing the known names, or [`FactoryError::Connect`].
    pub async fn connect(
        &self,
        name: &str,
        options: ConnectOptions,
    ) -> Result<Arc<dyn Backend>, FactoryError> {
        let constructor = self
            .constructors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        let Some(constructor) = constructor else {
            return Err(FactoryError::UnknownBackend {
                name: name.to_owned(),
                known: self.names(),
            });
        };
        let address = if options.address.trim().is_empty() {
            "(its default address)".to_owned()
        } else {
            registry_core::redact_address(&options.address).into_owned()
        };
        constructor(options)
            .await
            .map_err(|source| FactoryError::Connect {
                name: name.to_owned(),
                address,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn unknown_names_list_the_known_ones() {
        let factory = BackendFactory::with_builtins();
        let Err(err) = factory
            .connect("zoo-keeper", ConnectOptions::default())
            .await
        else {
            panic!("an unknown name must fail");
        };
        let text = err.to_string();
        assert!(text.contains("unknown registry `zoo-keeper`"), "{text}");
        assert!(text.contains("memory"), "{text}");
        assert!(factory.check("memory").is_ok());
    }

    #[tokio::test]
    async fn third_party_backends_plug_in_by_name() {
        let factory = BackendFactory::empty();
        assert!(factory.names().is_empty());
        factory.register("custom", |options: ConnectOptions| async move {
            assert_eq!(options.address, "somewhere");
            Ok(Arc::new(MemoryBackend::new(MemoryStore::new())) as Arc<dyn Backend>)
        });
        let backend = factory
            .connect(
                "custom",
                ConnectOptions {
                    address: "somewhere".into(),
                    ..ConnectOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(backend.name(), "memory");
    }

    #[tokio::test]
    async fn memory_addresses_name_shared_stores() {
        let factory = BackendFactory::with_builtins();
        let named = |address: &str| ConnectOptions {
            address: address.into(),
            ..ConnectOptions::default()
        };
        let a = factory
            .connect("memory", named("factory-test"))
            .await
            .unwrap();
        let b = factory
            .connect("memory", named("factory-test"))
            .await
            .unwrap();
        a.put("/k", b"v", std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(b.list("/").await.unwrap().entries.len(), 1);
    }
}
