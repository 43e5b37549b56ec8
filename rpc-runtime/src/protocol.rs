//! The wire protocol: a fixed 18-byte header and a body, over TCP.
//!
//! ```text
//! 0      2    3      4     5      6            14          18
//! +------+----+------+-----+------+------------+-----------+------------------+
//! |magic |ver |serial|kind |status| request id | body len  | body ...         |
//! |u16   |u8  |u8    |u8   |u8    | u64        | u32       | body len bytes   |
//! +------+----+------+-----+------+------------+-----------+------------------+
//! ```
//!
//! All integers are big-endian. The body length is checked against the configured maximum
//! *before* anything is allocated for the body, so a peer announcing a 4 GiB frame costs
//! nothing but the closing of its connection.
//!
//! A request body is the service key and the method name, each prefixed by its length
//! (`u16`), followed by the arguments encoded with the header's serializer. A response body
//! is the result encoded with that serializer when the status is [`Status::Ok`], otherwise
//! the error as described by [`Status`].
//!
//! Request id [`CONNECTION_ID`] (0) is never a request's: clients number requests from 1. A
//! response with that id and [`Status::Unavailable`] is a *go-away* ([`Frame::go_away`]): the
//! server has read nothing on the connection since its last answer and reads nothing more, so
//! every request still waiting for an answer on it was not run and may be sent elsewhere. A
//! server sends one when it refuses a connection at its connection limit and when it closes an
//! idle one; its body is a UTF-8 reason. Older clients drop it as the answer to no call.
//!
//! ```
//! use bytes::BytesMut;
//! use rpc_runtime::protocol::{Frame, FrameCodec, Kind, Status};
//! use rpc_runtime::serializer::Serializer;
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = FrameCodec::new(1024);
//! let frame = Frame::request(7, Serializer::Json, "UserService:1.0", "get_number", b"null");
//! let mut buf = BytesMut::new();
//! codec.encode(frame.clone(), &mut buf).unwrap();
//! let decoded = codec.decode(&mut buf).unwrap().unwrap();
//! assert_eq!(decoded, frame);
//! assert_eq!(decoded.kind, Kind::Request);
//! assert_eq!(decoded.status, Status::Ok);
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::serializer::Serializer;

/// The first two bytes of every frame.
pub const MAGIC: u16 = 0x5250; // "RP"
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 18;
/// Default maximum body size: 4 MiB.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;
/// The request id of connection-level messages (a go-away); no request has it.
pub const CONNECTION_ID: u64 = 0;
/// The reason of the go-away that closes an idle connection: the node serves, a new
/// connection will do.
pub const GO_AWAY_IDLE: &str = "idle";
/// The reason of the go-away that refuses a connection at the server's connection limit.
pub const GO_AWAY_FULL: &str = "too many connections";

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A call.
    Request = 1,
    /// The answer to the call with the same request id.
    Response = 2,
}

/// The outcome carried by a response (always [`Status::Ok`] on requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The body is the encoded result.
    Ok = 0,
    /// The server has no such service; the body is a UTF-8 message.
    UnknownService = 1,
    /// The service has no such method; the body is a UTF-8 message.
    UnknownMethod = 2,
    /// The arguments could not be decoded; the body is a UTF-8 message.
    BadRequest = 3,
    /// The handler returned an error; the body is the encoded `ServiceError`.
    HandlerError = 4,
    /// The server failed (a handler panicked, a result could not be encoded); UTF-8 message.
    ServerError = 5,
    /// The server is shutting down and did not run the call; UTF-8 message.
    Unavailable = 6,
}

impl Status {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Status::Ok,
            1 => Status::UnknownService,
            2 => Status::UnknownMethod,
            3 => Status::BadRequest,
            4 => Status::HandlerError,
            5 => Status::ServerError,
            6 => Status::Unavailable,
            _ => return None,
        })
    }
}

/// One message on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Serializer of the body (arguments or result).
    pub serializer: Serializer,
    /// Request or response.
    pub kind: Kind,
    /// Outcome (responses).
    pub status: Status,
    /// Matches a response to its request on a multiplexed connection.
    pub request_id: u64,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A request frame calling `method` of `service_key` with already encoded `args`.
    pub fn request(
        request_id: u64,
        serializer: Serializer,
        service_key: &str,
        method: &str,
        args: &[u8],
    ) -> Self {
        let mut body = Frame::request_body(service_key, method, args.len());
        body.put_slice(args);
        Frame::request_with_body(request_id, serializer, body.freeze())
    }

    /// The start of a request's body: `service_key` and `method`, with room for `args` more
    /// bytes. The encoded arguments are appended to it (see
    /// [`Serializer::encode_into`](crate::serializer::Serializer::encode_into)), and the body
    /// is shared by every attempt of the call ([`request_with_body`](Self::request_with_body)).
    pub fn request_body(service_key: &str, method: &str, args: usize) -> BytesMut {
        let mut body = BytesMut::with_capacity(4 + service_key.len() + method.len() + args);
        put_str(&mut body, service_key);
        put_str(&mut body, method);
        body
    }

    /// A request frame with a body made by [`request_body`](Self::request_body) and the
    /// encoded arguments.
    pub fn request_with_body(request_id: u64, serializer: Serializer, body: Bytes) -> Self {
        Frame {
            serializer,
            kind: Kind::Request,
            status: Status::Ok,
            request_id,
            body,
        }
    }

    /// A response frame.
    pub fn response(request_id: u64, serializer: Serializer, status: Status, body: Bytes) -> Self {
        Frame {
            serializer,
            kind: Kind::Response,
            status,
            request_id,
            body,
        }
    }

    /// A go-away: the server read nothing on this connection since its last answer and will
    /// read nothing more (see the [module docs](self)); `reason` says why.
    pub fn go_away(reason: &'static str) -> Self {
        Frame::response(
            CONNECTION_ID,
            Serializer::Json,
            Status::Unavailable,
            Bytes::from_static(reason.as_bytes()),
        )
    }

    /// True for a [go-away](Self::go_away).
    pub fn is_go_away(&self) -> bool {
        self.kind == Kind::Response
            && self.request_id == CONNECTION_ID
            && self.status == Status::Unavailable
    }

    /// Splits a request body into service key, method and encoded arguments.
    ///
    /// # Errors
    /// [`FrameError::BadRequestBody`] when the body is truncated or a name is not UTF-8.
    pub fn request_parts(&self) -> Result<(&str, &str, Bytes), FrameError> {
        let body = &self.body[..];
        let (service, rest) = take_str(body)?;
        let (method, rest) = take_str(rest)?;
        let offset = body.len() - rest.len();
        Ok((service, method, self.body.slice(offset..)))
    }
}

// Names are at most u16::MAX bytes; longer ones are cut at a char boundary (service keys and
// method names are short identifiers, so this never happens in practice).
fn put_str(buf: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_u16(end as u16);
    buf.put_slice(&s.as_bytes()[..end]);
}

fn take_str(buf: &[u8]) -> Result<(&str, &[u8]), FrameError> {
    if buf.len() < 2 {
        return Err(FrameError::BadRequestBody("truncated name length"));
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    let rest = &buf[2..];
    if rest.len() < len {
        return Err(FrameError::BadRequestBody("truncated name"));
    }
    let name = std::str::from_utf8(&rest[..len])
        .map_err(|_| FrameError::BadRequestBody("name is not UTF-8"))?;
    Ok((name, &rest[len..]))
}

/// Why bytes on a connection are not a valid frame. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame does not start with [`MAGIC`]: not our protocol.
    #[error("bad magic {found:#06x} (expected {MAGIC:#06x}): not an RPC frame")]
    BadMagic {
        /// What was found.
        found: u16,
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// Unknown serializer id.
    #[error("unknown serializer id {0}")]
    UnknownSerializer(u8),
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Unknown status.
    #[error("unknown status {0}")]
    UnknownStatus(u8),
    /// The announced body is larger than allowed; nothing was allocated for it.
    #[error("frame body of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A request body that does not hold a service key and a method.
    #[error("malformed request body: {0}")]
    BadRequestBody(&'static str),
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Frame`]s, refusing bodies larger than `max_frame` before allocating.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec accepting bodies up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

/// The fixed header of a frame, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) serializer: Serializer,
    pub(crate) kind: Kind,
    pub(crate) status: Status,
    pub(crate) request_id: u64,
    /// The announced body length, at most the maximum it was parsed with.
    pub(crate) len: usize,
}

impl Header {
    /// Checks the start of a header (fewer than [`HEADER_LEN`] bytes), so junk is refused
    /// without waiting for more.
    ///
    /// # Errors
    /// [`FrameError::BadMagic`].
    pub(crate) fn check_prefix(src: &[u8]) -> Result<(), FrameError> {
        if let [a, b, ..] = src {
            let magic = u16::from_be_bytes([*a, *b]);
            if magic != MAGIC {
                return Err(FrameError::BadMagic { found: magic });
            }
        }
        Ok(())
    }

    /// Parses the header at the start of `src` (at least [`HEADER_LEN`] bytes), refusing a
    /// body longer than `max_frame` before anything is allocated for it.
    ///
    /// # Errors
    /// A [`FrameError`] naming what is wrong; `Ok(None)` when `src` is shorter than a header.
    pub(crate) fn parse(src: &[u8], max_frame: usize) -> Result<Option<Header>, FrameError> {
        Header::check_prefix(src)?;
        let Some(src) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if src[2] != VERSION {
            return Err(FrameError::UnsupportedVersion(src[2]));
        }
        let serializer =
            Serializer::from_id(src[3]).ok_or(FrameError::UnknownSerializer(src[3]))?;
        let kind = match src[4] {
            1 => Kind::Request,
            2 => Kind::Response,
            other => return Err(FrameError::UnknownKind(other)),
        };
        let status = Status::from_u8(src[5]).ok_or(FrameError::UnknownStatus(src[5]))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&src[6..14]);
        let request_id = u64::from_be_bytes(id);
        let len = u32::from_be_bytes([src[14], src[15], src[16], src[17]]) as usize;
        if len > max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame,
            });
        }
        Ok(Some(Header {
            serializer,
            kind,
            status,
            request_id,
            len,
        }))
    }

    /// The frame this header starts, with its body.
    pub(crate) fn into_frame(self, body: Bytes) -> Frame {
        Frame {
            serializer: self.serializer,
            kind: self.kind,
            status: self.status,
            request_id: self.request_id,
            body,
        }
    }

    /// Appends the header of `frame` to `dst`.
    pub(crate) fn put(frame: &Frame, dst: &mut BytesMut) {
        dst.put_u16(MAGIC);
        dst.put_u8(VERSION);
        dst.put_u8(frame.serializer.id());
        dst.put_u8(frame.kind as u8);
        dst.put_u8(frame.status as u8);
        dst.put_u64(frame.request_id);
        dst.put_u32(frame.body.len() as u32);
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = Header::parse(src, self.max_frame)? else {
            return Ok(None);
        };
        if src.len() < HEADER_LEN + header.len {
            src.reserve(HEADER_LEN + header.len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(header.len).freeze();
        Ok(Some(header.into_frame(body)))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        if frame.body.len() > self.max_frame {
            return Err(FrameError::TooLarge {
                len: frame.body.len(),
                max: self.max_frame,
            });
        }
        dst.reserve(HEADER_LEN + frame.body.len());
        Header::put(&frame, dst);
        dst.put_slice(&frame.body);
        Ok(())
    }
}

/// Writes the frames arriving on `rx` until it closes, batching whatever is ready into one
/// write and one flush (many small calls cost few syscalls): the client's writer (the
/// server has its own, which also bounds each write in time).
///
/// # Errors
/// The first write error; the connection is then unusable.
pub(crate) async fn write_frames<W>(
    sink: &mut tokio_util::codec::FramedWrite<W, FrameCodec>,
    rx: &mut tokio::sync::mpsc::Receiver<Frame>,
    others_running: impl Fn() -> bool,
) -> Result<(), FrameError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use futures::SinkExt;
    while let Some(frame) = rx.recv().await {
        sink.feed(frame).await?;
        if others_running() {
            // Frames of the tasks that run now join this write instead of each making its
            // own (one write per frame costs more than the rest of a call); a lone frame
            // leaves at once.
            tokio::task::yield_now().await;
        }
        while let Ok(frame) = rx.try_recv() {
            sink.feed(frame).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn request_round_trip_and_parts() {
        let frame = Frame::request(42, Serializer::Bincode, "Svc:1.0", "echo", b"\x01\x02");
        let mut buf = encoded(frame.clone());
        assert_eq!(buf.len(), HEADER_LEN + 2 + 7 + 2 + 4 + 2);
        let got = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, frame);
        let (service, method, args) = got.request_parts().unwrap();
        assert_eq!(
            (service, method, &args[..]),
            ("Svc:1.0", "echo", &b"\x01\x02"[..])
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_input_waits_for_more() {
        let frame = Frame::response(1, Serializer::Json, Status::Ok, Bytes::from_static(b"[1]"));
        let full = encoded(frame.clone());
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (i, byte) in full.iter().enumerate() {
            buf.put_u8(*byte);
            let got = codec.decode(&mut buf).unwrap();
            if i + 1 < full.len() {
                assert!(
                    got.is_none(),
                    "complete after {} of {} bytes",
                    i + 1,
                    full.len()
                );
            } else {
                assert_eq!(got, Some(frame.clone()));
            }
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u16(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(Serializer::Json.id());
        buf.put_u8(Kind::Request as u8);
        buf.put_u8(0);
        buf.put_u64(9);
        buf.put_u32(u32::MAX);
        let capacity = buf.capacity();
        let err = FrameCodec::new(1024).decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u32::MAX as usize));
        assert_eq!(buf.capacity(), capacity, "nothing reserved for the body");
    }

    #[test]
    fn junk_is_refused_at_once() {
        let mut buf = BytesMut::from(&b"GE"[..]);
        assert!(matches!(
            FrameCodec::default().decode(&mut buf),
            Err(FrameError::BadMagic { found: 0x4745 })
        ));
        let mut buf = encoded(Frame::request(1, Serializer::Json, "a", "b", b""));
        buf[2] = 9;
        assert!(matches!(
            FrameCodec::default().decode(&mut buf),
            Err(FrameError::UnsupportedVersion(9))
        ));
        let mut buf = encoded(Frame::request(1, Serializer::Json, "a", "b", b""));
        buf[3] = 200;
        assert!(matches!(
            FrameCodec::default().decode(&mut buf),
            Err(FrameError::UnknownSerializer(200))
        ));
    }

    #[test]
    fn truncated_request_body_is_an_error_not_a_panic() {
        let frame = Frame {
            serializer: Serializer::Json,
            kind: Kind::Request,
            status: Status::Ok,
            request_id: 1,
            body: Bytes::from_static(b"\x00\x09abc"),
        };
        assert!(matches!(
            frame.request_parts(),
            Err(FrameError::BadRequestBody(_))
        ));
    }

    #[test]
    fn go_away_round_trips_and_is_no_answer_to_a_request() {
        let mut buf = encoded(Frame::go_away("idle"));
        let got = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert!(got.is_go_away());
        assert_eq!(&got.body[..], b"idle");
        let answer = Frame::response(1, Serializer::Json, Status::Unavailable, Bytes::new());
        assert!(!answer.is_go_away());
        let request = Frame::request(CONNECTION_ID, Serializer::Json, "a", "b", b"");
        assert!(!request.is_go_away());
    }

    proptest! {
        /// Any byte string: the decoder returns frames, asks for more, or errors; it never
        /// panics, never yields a body above the maximum, and never consumes more than it has.
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut codec = FrameCodec::new(64);
            let mut buf = BytesMut::from(&data[..]);
            for _ in 0..16 {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.body.len() <= 64);
                        let _ = frame.request_parts();
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// Every frame survives encode + decode, even when split at an arbitrary point.
        #[test]
        fn round_trip_with_arbitrary_split(
            id in any::<u64>(),
            service in "[a-zA-Z:.0-9]{0,40}",
            method in "[a-z_]{0,20}",
            args in proptest::collection::vec(any::<u8>(), 0..200),
            split in 0usize..400,
        ) {
            let frame = Frame::request(id, Serializer::Bincode, &service, &method, &args);
            let full = encoded(frame.clone());
            let split = split.min(full.len());
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::from(&full[..split]);
            let first = codec.decode(&mut buf).unwrap();
            let got = match first {
                Some(f) => f,
                None => {
                    buf.extend_from_slice(&full[split..]);
                    codec.decode(&mut buf).unwrap().unwrap()
                }
            };
            let (s, m, a) = got.request_parts().unwrap();
            prop_assert_eq!(s, service.as_str());
            prop_assert_eq!(m, method.as_str());
            prop_assert_eq!(&a[..], &args[..]);
            prop_assert_eq!(got, frame);
        }
    }
}
