//! The error of a backend: [`BackendError`], one variant per kind of failure, cause kept.

use std::time::Duration;

/// A boxed error from a store client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The store could not be reached.
    #[error("cannot connect to {backend} at `{}`", crate::redact_address(address))]
    Connect {
        /// Backend name.
        backend: &'static str,
        /// Address tried (printed with its password redacted).
        address: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// The store refused the credentials.
    #[error("authentication to {backend} failed (check rpc.registryConfig.username/password)")]
    Auth {
        /// Backend name.
        backend: &'static str,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake with the store failed: an untrusted or expired certificate, a name
    /// that does not match, a client certificate the store refused, or one side speaking TLS
    /// and the other not.
    #[error(
        "TLS with {backend} at `{}` failed (check rpc.registryConfig.tls.* and the address scheme)",
        crate::redact_address(address)
    )]
    Tls {
        /// Backend name.
        backend: &'static str,
        /// Address tried (printed with its password redacted).
        address: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// The store authenticated the client but its user may not do this (etcd RBAC, a Redis
    /// ACL, a ZooKeeper node ACL).
    #[error("{operation} on {backend}: permission denied to this user")]
    Denied {
        /// Backend name.
        backend: &'static str,
        /// The operation, e.g. `put /rpc/a:1.0/h:1`.
        operation: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// One request failed.
    #[error("{operation} on {backend} failed")]
    Request {
        /// Backend name.
        backend: &'static str,
        /// The operation, e.g. `put /rpc/a:1.0/h:1`.
        operation: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// A request did not finish within the configured timeout.
    #[error("{operation} on {backend} timed out after {timeout:?}")]
    Timeout {
        /// Backend name.
        backend: &'static str,
        /// The operation.
        operation: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The watch cannot continue from the requested revision (compacted history, canceled
    /// watch, expired session): the caller must list again.
    #[error("watch history lost: {reason}")]
    HistoryLost {
        /// What happened.
        reason: String,
    },
    /// The address or options are not usable by this backend.
    #[error("invalid configuration for {backend}: {reason}")]
    Config {
        /// Backend name.
        backend: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The key is held by another client's live liveness handle (another process registered
    /// the same node): it is not taken over. The core keeps the node wanted and writes it once
    /// the other registration is gone.
    #[error(
        "{key} is held by another live registration ({holder}) on {backend}; waiting for it to go"
    )]
    Held {
        /// Backend name.
        backend: &'static str,
        /// The key.
        key: String,
        /// The holder, as the store names it (an etcd lease, a ZooKeeper session, ...).
        holder: String,
    },
    /// The client was closed.
    #[error("{backend} client is closed")]
    Closed {
        /// Backend name.
        backend: &'static str,
    },
}

impl BackendError {
    /// Whether trying again later may succeed (connection and request failures, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BackendError::Connect { .. }
                | BackendError::Tls { .. }
                | BackendError::Request { .. }
                | BackendError::Timeout { .. }
                | BackendError::HistoryLost { .. }
                | BackendError::Held { .. }
        )
    }

    /// Whether the configuration is at fault rather than the store's availability: refused
    /// credentials, a missing permission, a failed TLS handshake, an unusable address or
    /// option. Programs exit with a configuration error (`registryctl`: 2) for these.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            BackendError::Auth { .. }
                | BackendError::Denied { .. }
                | BackendError::Tls { .. }
                | BackendError::Config { .. }
        )
    }

    /// Shorthand for a [`BackendError::Request`].
    pub fn request(
        backend: &'static str,
        operation: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        BackendError::Request {
            backend,
            operation: operation.into(),
            source: source.into(),
        }
    }
}
