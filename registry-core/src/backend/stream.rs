//! The watch-stream scaffold every backend shares.
//!
//! A backend says how to *open* a watch (a future that yields a [`WatchSource`]) and how to read
//! its *next batch* of events; [`watch_stream`] does the rest: it delivers each batch event by
//! event, and ends the stream after delivering the first error (the core then watches again,
//! or relists on [`BackendError::HistoryLost`]).

use std::collections::VecDeque;
use std::future::Future;

use futures::StreamExt as _;

use super::{BackendError, WatchEvent, WatchStream};

/// An open watch on a store: where [`watch_stream`] reads batches from.
pub trait WatchSource: Send + 'static {
    /// The next batch of changes, in revision order (empty when something arrived that is not
    /// a change, such as a progress notification). `Ok(None)` when the store ended the watch.
    /// An error ends the stream after it is delivered.
    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<WatchEvent>>, BackendError>> + Send;
}

enum State<F, S> {
    Opening(F),
    Watching {
        source: S,
        pending: VecDeque<WatchEvent>,
    },
    Done,
}

/// A [`WatchStream`] reading the source `open` yields. An error from `open` is the stream's
/// only item.
///
/// ```
/// use futures::StreamExt as _;
/// use registry_core::backend::{watch_stream, BackendError, WatchSource};
/// use registry_core::{KeyValue, WatchEvent};
///
/// /// Two batches, then the store ends the watch.
/// struct Scripted(Vec<Vec<WatchEvent>>);
///
/// impl WatchSource for Scripted {
///     async fn next_batch(&mut self) -> Result<Option<Vec<WatchEvent>>, BackendError> {
///         Ok(if self.0.is_empty() { None } else { Some(self.0.remove(0)) })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let put = |revision| WatchEvent::Put { kv: KeyValue { key: "/k".into(), value: vec![] }, revision };
/// let stream = watch_stream(async move { Ok(Scripted(vec![vec![put(1), put(2)], vec![], vec![put(3)]])) });
/// let revisions: Vec<u64> = stream.map(|e| e.unwrap().revision()).collect().await;
/// assert_eq!(revisions, [1, 2, 3]);
/// # }
/// ```
pub fn watch_stream<F, S>(open: F) -> WatchStream
where
    F: Future<Output = Result<S, BackendError>> + Send + 'static,
    S: WatchSource,
{
    futures::stream::unfold(State::Opening(open), |state| async move {
        let (mut source, mut pending) = match state {
            State::Done => return None,
            State::Opening(open) => match open.await {
                Ok(source) => (source, VecDeque::new()),
                Err(error) => return Some((Err(error), State::Done)),
            },
            State::Watching { source, pending } => (source, pending),
        };
        loop {
            if let Some(event) = pending.pop_front() {
                return Some((Ok(event), State::Watching { source, pending }));
            }
            match source.next_batch().await {
                Ok(Some(batch)) => pending.extend(batch),
                Ok(None) => return None,
                Err(error) => return Some((Err(error), State::Done)),
            }
        }
    })
    .boxed()
}
