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

/// `address` with the password of every `scheme://user:password@host` part replaced by
/// `***`, for printing (logs, errors, command-line output). Addresses without credentials
/// come back unchanged.
///
/// ```
/// use registry_core::redact_address;
///
/// assert_eq!(redact_address("redis://:s3cret@10.0.0.1:6379/0"), "redis://:***@10.0.0.1:6379/0");
/// assert_eq!(redact_address("redis+sentinel://app:pw@h1:26379,h2:26379/main"), "redis+sentinel://app:***@h1:26379,h2:26379/main");
/// assert_eq!(redact_address("http://a:2379,http://u:p@b:2379"), "http://a:2379,http://u:***@b:2379");
/// assert_eq!(redact_address("127.0.0.1:2181/chroot"), "127.0.0.1:2181/chroot");
/// ```
pub fn redact_address(address: &str) -> std::borrow::Cow<'_, str> {
    if !address.contains('@') {
        return std::borrow::Cow::Borrowed(address);
    }
    let parts: Vec<String> = address.split(',').map(redact_part).collect();
    std::borrow::Cow::Owned(parts.join(","))
}

fn redact_part(part: &str) -> String {
    let (scheme, rest) = match part.find("://") {
        Some(i) => part.split_at(i + 3),
        None => ("", part),
    };
    // The user info ends at the last `@` before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return part.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if userinfo.contains(':') {
        format!("{scheme}{user}:***{}", &rest[at..])
    } else {
        // A bare `secret@host` is a password for some clients: hide it too.
        format!("{scheme}***{}", &rest[at..])
    }
}
