//! One request to a store, bounded in time.

use std::future::Future;
use std::time::Duration;

use super::BackendError;

/// Runs one store request under `timeout`.
///
/// A request that takes longer is dropped and reported as [`BackendError::Timeout`] naming
/// `operation` (built only then); otherwise the request's own result is returned for the
/// backend to classify: `Ok(Err(store_error))` is a store error, not a timeout.
///
/// ```
/// use std::time::Duration;
/// use registry_core::backend::{with_timeout, BackendError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let slow = tokio::time::sleep(Duration::from_secs(60));
/// let err = with_timeout("my-store", Duration::from_millis(10), || "get /k".into(), slow)
///     .await
///     .unwrap_err();
/// assert!(matches!(err, BackendError::Timeout { backend: "my-store", .. }));
/// let answer = with_timeout("my-store", Duration::from_secs(1), || "get /k".into(), async { Ok::<_, std::io::Error>(7) })
///     .await;
/// assert_eq!(answer.unwrap().unwrap(), 7);
/// # }
/// ```
///
/// # Errors
/// [`BackendError::Timeout`] when `request` does not finish within `timeout`.
pub async fn with_timeout<F: Future>(
    backend: &'static str,
    timeout: Duration,
    operation: impl FnOnce() -> String,
    request: F,
) -> Result<F::Output, BackendError> {
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| BackendError::Timeout {
            backend,
            operation: operation(),
            timeout,
        })
}
