//! Serializers, chosen by `rpc.serializer`: `json` (readable, for debugging and other
//! languages) and `bincode` (compact and fast). Every frame names its serializer in the
//! header, so a server answers each call in the format it was asked in.
//!
//! ```
//! use rpc_runtime::serializer::Serializer;
//!
//! let s: Serializer = "bincode".parse().unwrap();
//! let bytes = s.encode(&(7u32, "seven".to_string())).unwrap();
//! let back: (u32, String) = s.decode(&bytes).unwrap();
//! assert_eq!(back, (7, "seven".to_string()));
//! assert!("xml".parse::<Serializer>().unwrap_err().to_string().contains("json, bincode"));
//! ```

use std::fmt;
use std::str::FromStr;

use rpc_config::config::SerializerKind;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Serializer {
    /// `serde_json`.
    #[default]
    Json,
    /// `bincode` 1.x with its default (little-endian, fixed-width integers) options.
    Bincode,
}

/// Encoding or decoding a body failed; the serializer's own error is the
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{serializer} {op} failed")]
pub struct SerializeError {
    serializer: Serializer,
    op: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl SerializeError {
    /// The serializer that failed.
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }
}

/// An unknown serializer name.
#[derive(Debug, thiserror::Error)]
#[error("unknown serializer `{0}` (known: json, bincode)")]
pub struct UnknownSerializer(String);

impl Serializer {
    /// Every serializer, by config name.
    pub const ALL: [Serializer; 2] = [Serializer::Json, Serializer::Bincode];

    /// The name used in `rpc.serializer`.
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::Bincode => "bincode",
        }
    }

    /// The id in the frame header.
    pub fn id(self) -> u8 {
        match self {
            Serializer::Json => 1,
            Serializer::Bincode => 2,
        }
    }

    /// The serializer with header id `id`.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Serializer::Json),
            2 => Some(Serializer::Bincode),
            _ => None,
        }
    }

    /// Encodes `value`.
    ///
    /// # Errors
    /// [`SerializeError`] when the value cannot be represented (e.g. a map with non-string
    /// keys in JSON).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, SerializeError> {
        match self {
            Serializer::Json => serde_json::to_vec(value).map_err(|e| self.error("encode", e)),
            Serializer::Bincode => bincode::serialize(value).map_err(|e| self.error("encode", e)),
        }
    }

    /// Encodes `value` at the end of `buf`, without a buffer of its own (a request's body:
    /// see [`Frame::request_body`](crate::protocol::Frame::request_body)). On error `buf` is
    /// left as it was.
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        buf: &mut bytes::BytesMut,
    ) -> Result<(), SerializeError> {
        use bytes::BufMut;
        let start = buf.len();
        let encoded = match self {
            Serializer::Json => {
                serde_json::to_writer(buf.writer(), value).map_err(|e| self.error("encode", e))
            }
            Serializer::Bincode => {
                // Sized first (cheap next to copying): one allocation, as `encode` makes.
                if let Ok(size) = bincode::serialized_size(value) {
                    buf.reserve(usize::try_from(size).unwrap_or(0));
                }
                bincode::serialize_into(buf.writer(), value).map_err(|e| self.error("encode", e))
            }
        };
        if encoded.is_err() {
            buf.truncate(start);
        }
        encoded
    }

    /// Decodes a `T`.
    ///
    /// # Errors
    /// [`SerializeError`] when `bytes` are not a valid `T`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, SerializeError> {
        match self {
            Serializer::Json => serde_json::from_slice(bytes).map_err(|e| self.error("decode", e)),
            Serializer::Bincode => {
                // A length prefix inside the data must not make bincode allocate more than
                // the frame could possibly hold.
                use bincode::Options;
                bincode::DefaultOptions::new()
                    .with_fixint_encoding()
                    .allow_trailing_bytes()
                    .with_limit(bytes.len() as u64 * 8 + 1024)
                    .deserialize(bytes)
                    .map_err(|e| self.error("decode", e))
            }
        }
    }

    fn error(
        self,
        op: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> SerializeError {
        SerializeError {
            serializer: self,
            op,
            source: source.into(),
        }
    }
}

impl fmt::Display for Serializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<SerializerKind> for Serializer {
    fn from(kind: SerializerKind) -> Self {
        match kind {
            SerializerKind::Bincode => Serializer::Bincode,
            _ => Serializer::Json,
        }
    }
}

impl FromStr for Serializer {
    type Err = UnknownSerializer;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Serializer::ALL
            .into_iter()
            .find(|x| x.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSerializer(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize, Default)]
    struct User {
        name: String,
        age: u32,
        tags: Vec<String>,
        extra: BTreeMap<String, i64>,
        nick: Option<String>,
    }

    #[test]
    fn both_round_trip_a_struct_and_unit() {
        let user = User {
            name: "ada".into(),
            age: 36,
            tags: vec!["x".into()],
            extra: [("k".to_string(), -1)].into(),
            nick: None,
        };
        for s in Serializer::ALL {
            let bytes = s.encode(&(&user,)).unwrap();
            let (back,): (User,) = s.decode(&bytes).unwrap();
            assert_eq!(back, user, "{s}");
            let unit = s.encode(&()).unwrap();
            s.decode::<()>(&unit).unwrap();
            assert_eq!(Serializer::from_id(s.id()), Some(s));
            assert_eq!(s.name().parse::<Serializer>().unwrap(), s);
        }
    }

    /// Encoding into a buffer gives the bytes `encode` gives, after what the buffer held; a
    /// value that cannot be encoded leaves the buffer as it was.
    #[test]
    fn encode_into_appends_the_same_bytes_or_nothing() {
        let user = User {
            name: "ada".into(),
            ..User::default()
        };
        for s in Serializer::ALL {
            let mut buf = bytes::BytesMut::from(&b"head"[..]);
            s.encode_into(&(&user,), &mut buf).unwrap();
            assert_eq!(&buf[..4], b"head");
            assert_eq!(buf[4..], s.encode(&(&user,)).unwrap()[..], "{s}");
        }
        // JSON map keys must be strings.
        let bad: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let mut buf = bytes::BytesMut::from(&b"head"[..]);
        assert!(Serializer::Json.encode_into(&bad, &mut buf).is_err());
        assert_eq!(&buf[..], b"head");
    }

    #[test]
    fn bincode_is_smaller_than_json() {
        let user = User {
            name: "ada".into(),
            age: 36,
            ..User::default()
        };
        let json = Serializer::Json.encode(&user).unwrap();
        let bin = Serializer::Bincode.encode(&user).unwrap();
        assert!(bin.len() < json.len(), "{} vs {}", bin.len(), json.len());
    }

    #[test]
    fn garbage_is_an_error_for_both_that_keeps_its_cause() {
        for s in Serializer::ALL {
            let err = s
                .decode::<User>(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff")
                .unwrap_err();
            assert_eq!(err.to_string(), format!("{s} decode failed"));
            assert_eq!(err.serializer(), s);
            let cause = std::error::Error::source(&err).expect("the serializer's error");
            assert!(!cause.to_string().is_empty());
        }
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate_it() {
        // A Vec<u8> claiming u64::MAX/2 elements in 8 bytes of input.
        let bytes = (u64::MAX / 2).to_le_bytes();
        assert!(Serializer::Bincode.decode::<Vec<u8>>(&bytes).is_err());
    }
}
