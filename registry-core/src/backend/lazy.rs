//! A backend connected on first use, for a process that must start while its store is down
//! (a consumer with a disk snapshot serves what it knew meanwhile).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use tokio::sync::OnceCell;

use super::{
    watch_stream, Backend, BackendError, Listing, Liveness, Revision, WatchEvent, WatchSource,
    WatchStream,
};

type Connecting = Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send>>;
type Connect = dyn Fn() -> Connecting + Send + Sync;

struct Shared {
    name: &'static str,
    connect: Box<Connect>,
    backend: OnceCell<Arc<dyn Backend>>,
}

impl Shared {
    /// The connected backend, connecting now if needed (concurrent callers share one
    /// attempt; a failed one is tried again by the next call).
    async fn backend(&self) -> Result<&Arc<dyn Backend>, BackendError> {
        self.backend.get_or_try_init(|| (self.connect)()).await
    }
}

/// A [`Backend`] that connects on first use and, until it could, fails every request with the
/// connection's error (so a registry over it retries as over a store that is down).
///
/// ```
/// use std::sync::Arc;
/// use registry_core::backend::LazyBackend;
/// use registry_core::{Backend, MemoryBackend, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let lazy = LazyBackend::new("memory", || async {
///     Ok(Arc::new(MemoryBackend::new(MemoryStore::new())) as Arc<dyn Backend>)
/// });
/// assert!(lazy.health().await.is_ok()); // connected here
/// # }
/// ```
pub struct LazyBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LazyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyBackend")
            .field("name", &self.shared.name)
            .field("connected", &self.shared.backend.initialized())
            .finish()
    }
}

impl LazyBackend {
    /// A backend named `name` (what the connected one will report) connected by `connect`
    /// on first use.
    pub fn new<F, Fut>(name: &'static str, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send + 'static,
    {
        Self {
            shared: Arc::new(Shared {
                name,
                connect: Box::new(move || Box::pin(connect())),
                backend: OnceCell::new(),
            }),
        }
    }
}

/// The connected backend's own watch, as a source of batches.
struct Forward(WatchStream);

impl WatchSource for Forward {
    async fn next_batch(&mut self) -> Result<Option<Vec<WatchEvent>>, BackendError> {
        match self.0.next().await {
            Some(Ok(event)) => Ok(Some(vec![event])),
            Some(Err(error)) => Err(error),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Backend for LazyBackend {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.shared.backend().await?.put(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.shared.backend().await?.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        self.shared.backend().await?.list(prefix).await
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        let (shared, prefix) = (Arc::clone(&self.shared), prefix.to_owned());
        watch_stream(async move {
            let backend = shared.backend().await?;
            Ok(Forward(backend.watch(&prefix, after)))
        })
    }

    async fn keep_alive(&self, keys: &[String], ttl: Duration) -> Result<Liveness, BackendError> {
        self.shared.backend().await?.keep_alive(keys, ttl).await
    }

    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        self.shared.backend().await?.ttl_remaining(key).await
    }

    async fn ttls(&self, prefix: &str) -> Result<HashMap<String, Duration>, BackendError> {
        self.shared.backend().await?.ttls(prefix).await
    }

    async fn admin_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        self.shared.backend().await?.admin_write(key, value).await
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.shared.backend().await?.health().await
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        match self.shared.backend.get() {
            Some(backend) => backend.close(keys).await,
            // Never connected: nothing was written.
            None => Ok(()),
        }
    }
}
