//! "Is my registration live?": the state of each node this process registered, and a stream
//! of its changes, to drive a readiness probe or an alert.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use tokio::sync::watch;

/// Where one registration stands, as seen by the process that registered it.
///
/// | state | meaning |
/// |---|---|
/// | `Pending` | wanted, never taken by the store yet (store down, refused, or held by another registration); retried in the background |
/// | `Live` | written to the store, kept alive by the heartbeats |
/// | `Repairing` | was live, the store lost it (liveness lost, deleted behind our back); being written again |
/// | `Lost` | repairing for longer than the TTL: consumers have certainly dropped it; still retried |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegistrationState {
    /// Never taken by the store yet.
    Pending,
    /// In the store, kept alive.
    Live,
    /// Lost by the store, being written again.
    Repairing,
    /// Repairing for longer than the TTL.
    Lost,
}

impl RegistrationState {
    /// `pending`, `live`, `repairing` or `lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationState::Pending => "pending",
            RegistrationState::Live => "live",
            RegistrationState::Repairing => "repairing",
            RegistrationState::Lost => "lost",
        }
    }
}

impl std::fmt::Display for RegistrationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The states of one registration: the current one first, then each change; ends when the
/// node is unregistered or the registry shuts down. From
/// [`Registry::watch_registration`](crate::Registry::watch_registration).
#[must_use = "a stream does nothing unless polled"]
pub struct RegistrationWatch {
    inner: BoxStream<'static, RegistrationState>,
}

impl std::fmt::Debug for RegistrationWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationWatch").finish_non_exhaustive()
    }
}

impl RegistrationWatch {
    pub(crate) fn new(rx: watch::Receiver<RegistrationState>) -> Self {
        let inner = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let state = *rx.borrow_and_update();
            Some((state, (rx, false)))
        })
        .boxed();
        Self { inner }
    }
}

impl Stream for RegistrationWatch {
    type Item = RegistrationState;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
