//! Redis errors as the core's kinds: one classification, one timed request.

use std::future::Future;
use std::time::Duration;

use registry_core::backend::with_timeout;
use registry_core::BackendError;

use crate::NAME;

/// Maps a client error to the core's kinds: refused credentials are
/// [`BackendError::Auth`], anything else a failed request naming `operation` (built only
/// then), the Redis error kept as its source.
pub(crate) fn classify(
    error: redis::RedisError,
    operation: impl FnOnce() -> String,
) -> BackendError {
    if error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
    {
        return BackendError::Auth {
            backend: NAME,
            source: Box::new(error),
        };
    }
    if error.code() == Some("NOPERM") || is_script_noperm(&error) {
        return BackendError::Denied {
            backend: NAME,
            operation: operation(),
            source: Box::new(error),
        };
    }
    BackendError::request(NAME, operation(), error)
}

/// A command a script ran was refused by the user's ACL (Redis reports it as a script error).
fn is_script_noperm(error: &redis::RedisError) -> bool {
    error
        .detail()
        .is_some_and(|d| d.contains("NOPERM") || d.contains("can't run this command or subcommand"))
        || error.to_string().contains("NOPERM")
}

/// Whether the error comes from the TLS layer (rustls refused the handshake: untrusted,
/// expired or misnamed certificate, a peer that does not speak TLS).
pub(crate) fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    fn rustls_in(e: &(dyn std::error::Error + 'static)) -> bool {
        e.is::<rustls::Error>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>())
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        // The client keeps its causes behind an `Arc`, whose `source()` skips the cause
        // itself: look inside.
        let shared = e.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>();
        if rustls_in(e) || shared.is_some_and(|inner| rustls_in(&**inner)) {
            return true;
        }
        next = e.source();
    }
    false
}
/// Whether `error` shows a connection is no good any more: it broke or timed out, or the
/// server is not a primary ready for writes (`READONLY`: a replica, say a primary demoted by
/// a failover; `MASTERDOWN`; `LOADING`). The connection is then made again, to wherever the
/// primary is.
pub(crate) fn needs_reconnect(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_unrecoverable_error()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

/// Runs one request under `timeout`, its error classified.
///
/// # Errors
/// [`BackendError::Timeout`] when it takes longer, [`classify`] of its error otherwise.
pub(crate) async fn request<T, F>(
    timeout: Duration,
    operation: impl Fn() -> String,
    call: F,
) -> Result<T, BackendError>
where
    F: Future<Output = redis::RedisResult<T>>,
{
    with_timeout(NAME, timeout, &operation, call)
        .await?
        .map_err(|e| classify(e, operation))
}

/// A connection failure as [`BackendError::Connect`] (or [`BackendError::Tls`] when the TLS
/// handshake failed), refused credentials and permissions as they are.
pub(crate) fn connect_error(error: BackendError, address: &str) -> BackendError {
    match error {
        auth @ (BackendError::Auth { .. } | BackendError::Denied { .. }) => auth,
        other if is_tls(&other) => BackendError::Tls {
            backend: NAME,
            address: address.to_owned(),
            source: Box::new(other),
        },
        other => BackendError::Connect {
            backend: NAME,
            address: address.to_owned(),
            source: Box::new(other),
        },
    }
}

/// A server that does not answer a TLS handshake within the timeout most likely does not
/// speak TLS on that port (a plain Redis port waits for the end of a line that a TLS hello
/// never sends): said so in the error.
pub(crate) fn silent_tls_peer(error: BackendError, timeout: Duration) -> BackendError {
    match error {
        BackendError::Connect {
            backend,
            address,
            source,
        } if source
            .downcast_ref::<BackendError>()
            .is_some_and(|e| matches!(e, BackendError::Timeout { .. }))
            || registry_core::error_chain(&*source).contains("timed out") =>
        {
            BackendError::Connect {
                backend,
                address,
                source: format!(
                    "no answer to the TLS handshake within {timeout:?} (rpc.registryConfig.timeout): \
                     the server may not speak TLS on this port"
                )
                .into(),
            }
        }
        other => other,
    }
}
