//! Small helpers shared by the background tasks.

use std::future::Future;
use std::time::Duration;

use crate::backend::{Backend, BackendError};

use tokio_util::sync::CancellationToken;

/// Sleeps, or returns false at once when cancelled.
pub(crate) async fn sleep_or_cancel(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

/// Runs one backend request under `timeout`, turning a timeout into
/// [`BackendError::Timeout`] naming `operation`.
pub(crate) async fn timed<T>(
    backend: &dyn Backend,
    timeout: Duration,
    operation: impl FnOnce() -> String,
    request: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    crate::backend::with_timeout(backend.name(), timeout, operation, request).await?
}

/// `error: cause: cause` on one line, for logs and command-line tools.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
