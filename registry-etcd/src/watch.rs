//! A watch on a prefix from a revision, on the core's watch-stream scaffold.
//!
//! The core lists at revision R and watches from R + 1. A compacted or cancelled watch, a
//! store whose revision went back (it lost data), and a response above the decode limit are
//! [`BackendError::HistoryLost`]: the core relists (in pages) and watches on from the
//! listing's revision. Should that revision be the undecodable one, the next watch of the
//! prefix starts one revision later (the listing holds it). A watch whose member dies can
//! stall silently, so the stream asks for a progress notification when it has been quiet for
//! a while and fails if none comes: the core then watches again from the last revision seen,
//! on the next member.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use registry_core::backend::{watch_stream, WatchSource};
use registry_core::{BackendError, KeyValue, Revision, WatchEvent, WatchStream};
use tracing::{debug, warn};

use crate::endpoints::Endpoints;
use crate::error::{classify, is_transport};
use crate::{oversized, NAME};

/// How long a watch may stay silent before it asks the server for a progress notification.
const WATCH_QUIET: Duration = Duration::from_secs(3);

/// The changes under `prefix` after revision `after`.
pub(crate) fn watch(endpoints: Arc<Endpoints>, prefix: &str, after: Revision) -> WatchStream {
    watch_stream(open(endpoints, prefix.to_owned(), after))
}

/// A watch stream that is open.
struct Watching {
    endpoints: Arc<Endpoints>,
    endpoint: usize,
    prefix: String,
    /// The revision the core asked for changes after.
    after: Revision,
    /// The revision the watch was created at (`after + 1`, or one more when that revision was
    /// found undecodable before).
    start: i64,
    stream: etcd_client::WatchStream,
    progress_requested: bool,
    /// Whether any event was decoded on this stream.
    seen_events: bool,
}

async fn open(
    endpoints: Arc<Endpoints>,
    prefix: String,
    after: Revision,
) -> Result<Watching, BackendError> {
    let (endpoint, watcher) = match endpoints.client(Client::watch_client).await {
        Ok(c) => c,
        Err(e) => {
            endpoints.rotate();
            return Err(e);
        }
    };
    let wanted = i64::try_from(after).unwrap_or(i64::MAX - 1) + 1;
    let (start, skipped) = endpoints.undecodable.start_for(&prefix, wanted);
    if skipped {
        debug!(%prefix, revision = wanted, "watching past a revision too large to decode (the listing holds it)");
    }
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify()
        .with_fragment();
    let mut watcher = watcher.max_decoding_message_size(endpoints.max_decoding);
    match watcher.watch(prefix.as_str(), Some(options)).await {
        Ok(stream) => Ok(Watching {
            endpoints,
            endpoint,
            prefix,
            after,
            start,
            stream,
            progress_requested: false,
            seen_events: false,
        }),
        Err(e) => {
            if is_transport(&e) {
                endpoints.rotate_from(endpoint);
            }
            Err(classify(e, || format!("watch {prefix}"), None))
        }
    }
}

fn lost(reason: String) -> BackendError {
    BackendError::HistoryLost { reason }
}

impl WatchSource for Watching {
    async fn next_batch(&mut self) -> Result<Option<Vec<WatchEvent>>, BackendError> {
        let message = match tokio::time::timeout(WATCH_QUIET, self.stream.message()).await {
            Ok(message) => message,
            Err(_) if !self.progress_requested => {
                // Quiet for a while: is the member still there?
                if self.stream.request_progress().await.is_err() {
                    self.endpoints.rotate_from(self.endpoint);
                    return Err(stalled());
                }
                self.progress_requested = true;
                return Ok(Some(Vec::new()));
            }
            Err(_) => {
                self.endpoints.rotate_from(self.endpoint);
                return Err(stalled());
            }
        };
        self.progress_requested = false;
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.failed(e)),
        };
        // A store whose revision is behind what we saw lost its data (restored from an old
        // snapshot, or restarted empty): watching on would wait for revisions that mean
        // something else. Relist.
        let after = self.after;
        let store_revision = response.header().map_or(i64::MAX, |h| h.revision());
        if store_revision < after as i64 {
            return Err(lost(format!(
                "etcd revision went back from {after} to {store_revision}: the store lost data"
            )));
        }
        if response.compact_revision() > 0 {
            return Err(lost(format!(
                "revisions up to {} are compacted",
                response.compact_revision()
            )));
        }
        if response.canceled() {
            return Err(lost(format!(
                "watch canceled by etcd: {}",
                response.cancel_reason()
            )));
        }
        let mut batch = Vec::with_capacity(response.events().len());
        for event in response.events() {
            self.seen_events = true;
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else {
                warn!("skipping a watch event for a key that is not UTF-8");
                continue;
            };
            let revision = kv.mod_revision().max(0) as Revision;
            batch.push(match event.event_type() {
                EventType::Put => WatchEvent::Put {
                    kv: KeyValue {
                        key: key.to_owned(),
                        value: kv.value().to_vec(),
                    },
                    revision,
                },
                EventType::Delete => WatchEvent::Delete {
                    key: key.to_owned(),
                    revision,
                },
            });
        }
        Ok(Some(batch))
    }
}

impl Watching {
    /// The error a failed watch stream yields. A response above the decode limit is reported
    /// as [`BackendError::HistoryLost`]: watching again from the same revision would meet the
    /// same response, while the core's relist (paged) reads past it and watches on from after
    /// it.
    fn failed(&self, error: etcd_client::Error) -> BackendError {
        if let Some(too_large) = oversized::too_large(&error) {
            if !self.seen_events {
                self.endpoints.undecodable.record(&self.prefix, self.start);
            }
            let size = |n: Option<usize>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
            return lost(format!(
                "a watch response under {} is larger than the decode limit ({} bytes, limit {}); \
                 listing again to continue past it (raise EtcdSettings::max_decoding_message_size \
                 to receive such responses)",
                self.prefix,
                size(too_large.found),
                size(too_large.limit.or(Some(self.endpoints.max_decoding))),
            ));
        }
        if is_transport(&error) {
            self.endpoints.rotate_from(self.endpoint);
        }
        classify(error, || "watch".into(), None)
    }
}

fn stalled() -> BackendError {
    BackendError::request(
        NAME,
        "watch",
        format!("no answer from the member for {:?}", WATCH_QUIET * 2),
    )
}
