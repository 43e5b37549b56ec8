//! Tuning of the etcd backend beyond the backend-neutral [`ConnectOptions`](registry_core::ConnectOptions).

/// Default most bytes of one response the client decodes: 64 MiB.
///
/// etcd accepts a value up to its `--max-request-bytes` (1.5 MiB by default, often raised to
/// a few MiB) and packs many of them in one response: a listing page, or a watch response
/// carrying every event of a transaction or of a catch-up. `tonic`'s default of 4 MiB is
/// reached by three values of 1.4 MiB. Listings are paged to stay well below this limit and
/// watches ask etcd to fragment large revisions, so it is only reached by a single entry (or
/// a watch response from a server that does not fragment) larger than this.
pub const DEFAULT_MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Default most keys one listing page asks for.
///
/// Pages are also sized by bytes: after each page the next one asks for as many keys as fit in
/// a quarter of the decode limit at the average entry size seen so far (never more than this).
pub const DEFAULT_LIST_PAGE_KEYS: usize = 1000;

/// Tuning of [`EtcdBackend`](crate::EtcdBackend): response size limit and listing page size.
///
/// ```
/// use registry_etcd::EtcdSettings;
///
/// let settings = EtcdSettings::default()
///     .with_max_decoding_message_size(256 * 1024 * 1024)
///     .with_list_page_keys(500);
/// assert_eq!(settings.list_page_keys(), 500);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    max_decoding_message_size: usize,
    list_page_keys: usize,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        Self {
            max_decoding_message_size: DEFAULT_MAX_DECODING_MESSAGE_SIZE,
            list_page_keys: DEFAULT_LIST_PAGE_KEYS,
        }
    }
}

impl EtcdSettings {
    /// Most bytes of one listing page or watch response the client decodes (at least 64 KiB).
    /// See [`DEFAULT_MAX_DECODING_MESSAGE_SIZE`].
    ///
    /// A listing page above it is asked again with fewer keys; a watch response above it makes
    /// the watch report [`BackendError::HistoryLost`](registry_core::BackendError::HistoryLost),
    /// so the core lists again (in pages) and watches on past it.
    #[must_use]
    pub fn with_max_decoding_message_size(mut self, bytes: usize) -> Self {
        self.max_decoding_message_size = bytes.max(64 * 1024);
        self
    }

    /// Most keys one listing page asks for (at least 1). See [`DEFAULT_LIST_PAGE_KEYS`].
    #[must_use]
    pub fn with_list_page_keys(mut self, keys: usize) -> Self {
        self.list_page_keys = keys.max(1);
        self
    }

    /// The decode limit, in bytes.
    pub fn max_decoding_message_size(&self) -> usize {
        self.max_decoding_message_size
    }

    /// The most keys of one listing page.
    pub fn list_page_keys(&self) -> usize {
        self.list_page_keys
    }
}
