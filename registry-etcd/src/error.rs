//! The etcd backend's own error causes, and the classification of the client's errors.

use registry_core::BackendError;

use crate::NAME;

/// A failure of the etcd backend beyond one failed request, the source of a
/// [`BackendError::Request`](registry_core::BackendError::Request).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// An entry is larger than the decode limit: even a page of one key cannot be read.
    #[error(
        "an entry under `{prefix}` is larger than the decode limit of {limit} bytes \
         (raise EtcdSettings::max_decoding_message_size)"
    )]
    EntryTooLarge {
        /// The prefix listed.
        prefix: String,
        /// The decode limit, in bytes.
        limit: usize,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// The listing's revision was compacted before its last page, every time it was tried.
    #[error("listing `{prefix}` started over {restarts} times: its revision kept being compacted")]
    CompactedWhileListing {
        /// The prefix listed.
        prefix: String,
        /// How many times the listing started over.
        restarts: u32,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
}

// ---- classification of the client's errors, in one place ----

/// Whether the error means the member could not serve the request (try another one): transport
/// failures, and `Unavailable` / deadline answers (a member without a leader answers so).
pub(crate) fn is_transport(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => tonic_code::of(error).is_some_and(|(code, message)| match code {
            // A request cut off by the client's deadline ("Timeout expired") is CANCELLED.
            tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED | tonic_code::CANCELLED => true,
            tonic_code::UNKNOWN => !message.starts_with("etcdserver:"),
            _ => false,
        }),
    }
}

/// gRPC codes, by number (avoids depending on tonic directly).
pub(crate) mod tonic_code {
    use etcd_client::Error;
    pub(crate) type Code = i32;
    pub(crate) const CANCELLED: Code = 1;
    pub(crate) const UNKNOWN: Code = 2;
    pub(crate) const INVALID_ARGUMENT: Code = 3;
    pub(crate) const DEADLINE_EXCEEDED: Code = 4;
    pub(crate) const NOT_FOUND: Code = 5;
    pub(crate) const PERMISSION_DENIED: Code = 7;
    pub(crate) const RESOURCE_EXHAUSTED: Code = 8;
    pub(crate) const OUT_OF_RANGE: Code = 11;
    pub(crate) const INTERNAL: Code = 13;
    pub(crate) const UNAVAILABLE: Code = 14;
    pub(crate) const UNAUTHENTICATED: Code = 16;

    pub(crate) fn of(error: &Error) -> Option<(Code, &str)> {
        match error {
            Error::GRpcStatus(status) => Some((status.code() as i32, status.message())),
            _ => None,
        }
    }
}

/// Maps a client error to the core's error kinds.
pub(crate) fn classify(
    error: etcd_client::Error,
    what: impl FnOnce() -> String,
    address: Option<&str>,
) -> BackendError {
    if let Some((code, message)) = tonic_code::of(&error) {
        if code == tonic_code::PERMISSION_DENIED {
            return BackendError::Denied {
                backend: NAME,
                operation: what(),
                source: Box::new(error),
            };
        }
        let auth = code == tonic_code::UNAUTHENTICATED
            || (code == tonic_code::INVALID_ARGUMENT && message.contains("authentication failed"));
        if auth {
            return BackendError::Auth {
                backend: NAME,
                source: Box::new(error),
            };
        }
    }
    if is_tls(&error) {
        if let Some(address) = address {
            return BackendError::Tls {
                backend: NAME,
                address: address.to_owned(),
                source: Box::new(error),
            };
        }
    }
    if is_transport(&error) {
        if let Some(address) = address {
            return BackendError::Connect {
                backend: NAME,
                address: address.to_owned(),
                source: Box::new(error),
            };
        }
    }
    BackendError::request(NAME, what(), error)
}

/// The errors an etcd client error wraps, outermost first. The client's error has no
/// `source()`: the chain starts from what it wraps.
fn causes(error: &etcd_client::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    let first: Option<&(dyn std::error::Error + 'static)> = match error {
        etcd_client::Error::GRpcStatus(status) => {
            std::error::Error::source(status).map(|e| e as &(dyn std::error::Error + 'static))
        }
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::IoError(e) => Some(e),
        _ => None,
    };
    std::iter::successors(first, |e| e.source())
}

/// Whether the error comes from the TLS layer (rustls refused the handshake: untrusted,
/// expired or misnamed certificate, a refused client certificate, a peer that does not speak
/// TLS).
pub(crate) fn is_tls(error: &etcd_client::Error) -> bool {
    causes(error).any(|e| {
        e.is::<rustls::Error>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>())
    })
}

/// Whether the connection was closed by the peer during or right after the handshake (the
/// request was canceled, the TLS handshake met an end of file, the first write a broken
/// pipe or a reset).
pub(crate) fn closed_early(error: &etcd_client::Error) -> bool {
    if tonic_code::of(error).is_some_and(|(code, _)| code == tonic_code::CANCELLED) {
        return true;
    }
    causes(error).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    // A TLS alert read after the handshake ("received fatal alert:
                    // BadCertificate"), which the transport passes on as text.
                    | std::io::ErrorKind::InvalidData
            )
        })
    })
}

/// Whether a read at a revision failed because that revision was compacted.
pub(crate) fn revision_compacted(error: &etcd_client::Error) -> bool {
    tonic_code::of(error).is_some_and(|(code, message)| {
        code == tonic_code::OUT_OF_RANGE && message.contains("required revision has been compacted")
    })
}

pub(crate) fn lease_not_found(error: &etcd_client::Error) -> bool {
    tonic_code::of(error).is_some_and(|(code, message)| {
        code == tonic_code::NOT_FOUND || message.contains("lease not found")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<super::EtcdError>();
    }
}
