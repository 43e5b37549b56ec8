//! The ceiling of this RPC design on this machine: the same frames over one multiplexed TCP
//! connection, with nothing else. The server answers each request frame with its body as is
//! (no routing, no decoding, no handler task); the client matches answers to callers by request
//! id (no registry, no balancer, no serializer: the caller hands over encoded bytes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use rpc_runtime::protocol::{Frame, FrameCodec, Kind, Status};
use rpc_runtime::serializer::Serializer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

/// Most frames read (or written) before one flush.
const BATCH: usize = 256;

/// Serves echo frames on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener) {
    serve_answering(listener, None).await;
}

/// Like [`serve`], but answers every request with `answer` when given (a response our client
/// decodes), instead of its own body.
pub async fn serve_answering(listener: TcpListener, answer: Option<Bytes>) {
    while let Ok((stream, _)) = listener.accept().await {
        let answer = answer.clone();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (mut sink, stream) = Framed::new(stream, FrameCodec::default()).split();
            // Every frame already read is answered, then one flush.
            let mut batches = stream.ready_chunks(BATCH);
            while let Some(batch) = batches.next().await {
                for frame in batch {
                    let Ok(frame) = frame else { return };
                    let body = answer.clone().unwrap_or(frame.body);
                    let answer =
                        Frame::response(frame.request_id, frame.serializer, Status::Ok, body);
                    if sink.feed(answer).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// One connection shared by every caller.
#[derive(Clone)]
pub struct Client {
    requests: mpsc::UnboundedSender<(Frame, oneshot::Sender<Bytes>)>,
}

impl Client {
    /// Connects to a [`serve`]r.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sink, mut answers) = Framed::new(stream, FrameCodec::default()).split();
        let pending: Pending = Arc::default();
        let (requests, rx) = mpsc::unbounded_channel::<(Frame, oneshot::Sender<Bytes>)>();
        let writer_pending = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut rx = rx;
            let mut batches =
                futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).ready_chunks(BATCH);
            while let Some(batch) = batches.next().await {
                for (frame, reply) in batch {
                    writer_pending
                        .lock()
                        .unwrap()
                        .insert(frame.request_id, reply);
                    if sink.feed(frame).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(Ok(frame)) = answers.next().await {
                if let Some(reply) = pending.lock().unwrap().remove(&frame.request_id) {
                    let _ = reply.send(frame.body);
                }
            }
        });
        Ok(Self { requests })
    }

    /// Sends `body` as request `id` (unique among calls in flight) and waits for its answer.
    pub async fn call(&self, id: u64, body: Bytes) -> Option<Bytes> {
        let frame = Frame {
            serializer: Serializer::Bincode,
            kind: Kind::Request,
            status: Status::Ok,
            request_id: id,
            body,
        };
        let (tx, rx) = oneshot::channel();
        self.requests.send((frame, tx)).ok()?;
        rx.await.ok()
    }
}
