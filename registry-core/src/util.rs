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

/// The consecutive failures of one retry loop, for its logs: a warning on the first failure of
/// an episode, `debug!` while it keeps failing, one line when it works again.
#[derive(Debug, Default)]
pub(crate) struct Failures(u32);

impl Failures {
    /// Counts one more failure; returns the count, 1 for the first of an episode.
    pub(crate) fn record(&mut self) -> u32 {
        self.0 = self.0.saturating_add(1);
        self.0
    }

    /// Ends the episode; returns how many failures it had (0 when there was none).
    pub(crate) fn reset(&mut self) -> u32 {
        std::mem::take(&mut self.0)
    }

    /// Whether the loop is failing now.
    pub(crate) fn ongoing(&self) -> bool {
        self.0 > 0
    }
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
