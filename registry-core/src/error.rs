//! Errors of the registry API.

use crate::backend::BackendError;
use crate::instance::InvalidService;

/// An error from the [`Registry`](crate::Registry) API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The node cannot be registered as described.
    #[error("invalid service: {0}")]
    InvalidService(#[from] InvalidService),
    /// An option is out of range.
    #[error("invalid registry option `{key}`: {reason}")]
    InvalidOptions {
        /// The option.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Discovery found no node for the service.
    #[error("no provider for service {service} (registry: {registry})")]
    NoProvider {
        /// The service key.
        service: String,
        /// The backend name.
        registry: &'static str,
    },
    /// A store operation failed. For `register`, the node stays wanted and is retried in the
    /// background until it is written or unregistered.
    #[error("{operation} failed")]
    Store {
        /// What the registry was doing.
        operation: String,
        /// Cause.
        #[source]
        source: BackendError,
    },
    /// The registry was created outside a Tokio runtime.
    #[error("the registry must be created inside a Tokio runtime")]
    NoRuntime,
    /// The registry was shut down.
    #[error("the registry is shut down")]
    Shutdown,
}

impl RegistryError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Store { source, .. } => source.is_retryable(),
            RegistryError::NoProvider { .. } => true,
            _ => false,
        }
    }
}
