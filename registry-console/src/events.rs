//! `GET /api/events`: the live stream, as server-sent events. A page first gets a `snapshot`
//! (everything, with its `seq`), then `change`, `ttl` and `health` events; one that falls
//! more than a broadcast's capacity behind gets a fresh `snapshot` instead of what it missed.
//! A reconnecting `EventSource` starts over with a snapshot.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use crate::hub::{Hub, Outgoing};

/// How soon a browser reconnects after the stream broke.
const RETRY: Duration = Duration::from_secs(1);

/// The stream of one page.
pub(crate) async fn stream(
    State(hub): State<Arc<Hub>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (rx, snapshot) = hub.subscribe();
    let first = Event::default()
        .event("snapshot")
        .retry(RETRY)
        .data(snapshot);
    let state = (hub, rx, Some(first));
    let events = futures::stream::unfold(state, |(hub, mut rx, first)| async move {
        if let Some(first) = first {
            return Some((Ok(first), (hub, rx, None)));
        }
        let received = tokio::select! {
            () = hub.stop.cancelled() => return None,
            received = rx.recv() => received,
        };
        let event = match received {
            Ok(message) => render(&message),
            Err(RecvError::Lagged(missed)) => {
                debug!(missed, "a console page fell behind; sending it a snapshot");
                Event::default().event("snapshot").data(hub.snapshot())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (hub, rx, None)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn render(message: &Outgoing) -> Event {
    Event::default().event(message.kind).data(&message.data)
}
