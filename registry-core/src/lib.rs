//! Service registry and discovery for a Rust RPC framework.
//!
//! Providers [`register`](Registry::register) themselves and are kept alive by heartbeats;
//! consumers [`discover`](Registry::discover) live providers through a per-service cache kept
//! current by one watch per service, and may [`subscribe`](Registry::subscribe) listeners or
//! [`watch`](Registry::watch) the changes as a stream.
//!
//! The store is pluggable: a [`Backend`] implements a small contract (write with liveness,
//! delete, list with a revision, watch from a revision, keep alive). Everything else lives here
//! once, for every backend:
//!
//! - [`instance`]: the service model [`ServiceMetaInfo`] and the key layout [`KeySpace`].
//! - [`backend`]: the [`Backend`] contract and its error type.
//! - the registrar (internal): the nodes this process wants registered, heartbeats,
//!   re-registration that never gives up, graceful shutdown.
//! - the cache (internal): one entry per service key, lock-free reads, events applied one
//!   by one, relists swapped in whole, [`EmptyProtection`].
//! - [`listener`]: observers and streams of one service's changes, with diffs.
//! - [`registration`]: a guard that registers a server this process runs itself (tonic,
//!   axum, anything) and deregisters it in the safe order when the server stops.
//! - [`memory`]: the embedded in-memory backend, the default.
//!
//! ```
//! use std::sync::Arc;
//! use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo, Origin};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), registry_core::RegistryError> {
//! let registry = Registry::new(
//!     Arc::new(MemoryBackend::new(MemoryStore::new())),
//!     RegistryOptions::default(),
//! )?;
//! registry.register(ServiceMetaInfo::new("users", "127.0.0.1", 8080)).await?;
//! let nodes = registry.discover("users:1.0").await?;
//! assert_eq!(nodes.len(), 1);
//! // The second lookup is served by the cache.
//! assert_eq!(registry.discover("users:1.0").await?.origin(), Origin::Cache);
//! registry.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod backend;
pub mod backoff;
mod cache;
pub mod error;
pub mod guard;
pub mod instance;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod options;
pub mod overrides;
mod registrar;
pub mod registration;
mod registry;
pub mod signal;
mod tasks;
mod truth;
mod util;

pub use backend::{
    Backend, BackendError, BoxError, ConnectOptions, KeyValue, Listing, Liveness, Revision,
    SecretBytes, TlsFiles, TlsPem, WatchEvent, WatchStream,
};
pub use backoff::Backoff;
pub use cache::{Node, NodeDiff, Origin, ServiceNodes};
pub use error::RegistryError;
pub use guard::{Registration, DEFAULT_DEREGISTER_GRACE};
pub use instance::{
    service_key, InvalidService, KeySpace, ServiceMetaInfo, DEFAULT_GROUP, DEFAULT_VERSION,
};
pub use listener::{ServiceChange, ServiceListener, ServiceWatch, Subscription};
pub use memory::{MemoryBackend, MemoryStore};
pub use options::{EmptyProtection, RegistryOptions};
pub use overrides::{NodeOverride, Overrides};
pub use registration::{RegistrationState, RegistrationWatch};
pub use registry::{NodeStatus, Registry};
pub use util::{error_chain, redact_address};

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::RegistryError>();
        assert_send_sync::<crate::BackendError>();
        assert_send_sync::<crate::Registry>();
        assert_send_sync::<crate::ServiceNodes>();
        assert_send_sync::<crate::ServiceWatch>();
        assert_send_sync::<crate::Registration>();
    }
}
