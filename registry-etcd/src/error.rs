//! The etcd backend's own error causes.

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

#[cfg(test)]
mod tests {
    #[test]
    fn errors_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<super::EtcdError>();
    }
}
