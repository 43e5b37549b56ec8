//! The etcd backend of `registry-core`: one lease per client, a keep-alive request per
//! heartbeat, and watches that resume from a revision.
//!
//! # Design
//! - **One lease per registry client.** It is granted at the first put, with the configured TTL,
//!   and every node this process registers is attached to it. Registering N nodes costs N puts
//!   once; each heartbeat then costs one `LeaseKeepAlive` request whatever N is, and no put.
//!   When the lease is gone (a keep-alive answers TTL 0: it expired during a partition, or the
//!   server came back without its data), [`keep_alive`](Backend::keep_alive) reports
//!   [`Liveness::Lost`] and forgets it; the core puts every node again and the first put grants a
//!   new lease.
//! - **Keep-alive** is driven by the core's heartbeat (default TTL/3): each call sends one
//!   request on a kept keep-alive stream and waits for its answer with a timeout. A closed or
//!   failing stream is dropped and re-created, on another member when the current one fails.
//! - **Paged listings, one snapshot.** [`list`](Backend::list) reads the prefix in range
//!   requests of at most [`EtcdSettings::list_page_keys`] keys (default
//!   [`DEFAULT_LIST_PAGE_KEYS`]), each next page starting right after the last key read
//!   (`key + "\0"`), and every page after the first at the first page's revision, which is
//!   the listing's revision: the listing is one consistent snapshot however many pages it
//!   takes. Pages are sized by bytes too: after each page the next asks for as many keys as fit
//!   in a quarter of the decode limit at the average entry size seen; a page still too large to
//!   decode is asked again with fewer keys (half, or less when the error tells its size). If
//!   the first page's revision is compacted before the last page is read, the listing starts
//!   over (at most three times). Only a single entry above the decode limit fails a listing.
//! - **Decode limit.** The client decodes responses up to
//!   [`EtcdSettings::max_decoding_message_size`] (default
//!   [`DEFAULT_MAX_DECODING_MESSAGE_SIZE`], 64 MiB, instead of tonic's 4 MiB, which three
//!   1.4 MB values exceed although etcd accepts each). Watches ask etcd to fragment revisions
//!   larger than its request limit, so one watch response stays near etcd's
//!   `--max-request-bytes` whatever a transaction or a catch-up carries (one revision may then
//!   reach the cache in more than one batch).
//! - **Watch from a revision.** The core lists at revision R and watches from R + 1. A compacted
//!   or cancelled watch yields [`BackendError::HistoryLost`] and the core relists. A watch
//!   response above the decode limit yields [`BackendError::HistoryLost`] as well (instead of
//!   an error that would make the core watch into the same response again, forever): the core
//!   relists, in pages, and watches on from the listing's revision. Should the listing's
//!   revision be the undecodable one, the next watch of that prefix starts one revision later
//!   (the listing holds it). A watch whose member dies can stall silently, so the stream asks
//!   for a progress notification when it has been quiet for a while and ends with an error if
//!   none comes: the core then watches again from the last revision seen, on the next member.
//! - **Several endpoints.** `etcd-client` keeps sending requests to a dead member and lets
//!   streams on it stop silently, so this backend keeps one client per endpoint and a current
//!   one. A request that fails with a transport error moves to the next endpoint and is retried
//!   there (each endpoint once); watches and keep-alive streams are created on the current
//!   endpoint.
//! - **Ownership.** A put is a transaction that writes only a key without a lease (absent, or
//!   written by a tool) or already bound to this client's lease; a key bound to another live
//!   lease is reported [`BackendError::Held`] and left alone. A delete is a transaction too:
//!   it deletes the key only while it is bound to this client's lease.
//! - **Graceful shutdown** revokes the lease: all of this process's nodes go in one request.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use registry_core::{ConnectOptions, Registry, RegistryOptions};
//! use registry_etcd::EtcdBackend;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = EtcdBackend::connect(&ConnectOptions {
//!     address: "http://127.0.0.1:2379,http://127.0.0.1:22379".into(),
//!     timeout: Duration::from_secs(3),
//!     ttl: Duration::from_secs(30),
//!     ..ConnectOptions::default()
//! })
//! .await?;
//! let registry = Registry::new(Arc::new(backend), RegistryOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! With a store that accepts large values (`--max-request-bytes` raised), raise the decode
//! limit with it: [`EtcdBackend::connect_with`] takes [`EtcdSettings`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions as EtcdOptions, DeleteOptions, EventType,
    GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures::StreamExt as _;
use registry_core::{
    Backend, BackendError, ConnectOptions, KeyValue, Listing, Liveness, Revision, WatchEvent,
    WatchStream,
};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

mod error;
mod oversized;
mod paging;
mod settings;

pub use error::EtcdError;
pub use settings::{EtcdSettings, DEFAULT_LIST_PAGE_KEYS, DEFAULT_MAX_DECODING_MESSAGE_SIZE};

use oversized::UndecodableStarts;
use paging::Pager;

const NAME: &str = "etcd";
/// The address used when none is configured.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:2379";
/// How long a watch may stay silent before it asks the server for a progress notification.
const WATCH_QUIET: Duration = Duration::from_secs(3);

/// The endpoints and their clients.
struct Endpoints {
    urls: Vec<String>,
    options: EtcdOptions,
    clients: Mutex<Vec<Option<Client>>>,
    current: AtomicUsize,
    /// Most bytes of one listing page or watch response the client decodes.
    max_decoding: usize,
    /// Watch starts whose first response could not be decoded.
    undecodable: UndecodableStarts,
}

impl Endpoints {
    /// A client for the current endpoint (connecting it if needed), and its index.
    async fn client(&self) -> Result<(usize, Client), BackendError> {
        let index = self.current.load(Ordering::Relaxed) % self.urls.len();
        self.client_at(index).await.map(|c| (index, c))
    }

    async fn client_at(&self, index: usize) -> Result<Client, BackendError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = &clients[index] {
            return Ok(client.clone());
        }
        let url = &self.urls[index];
        let client = Client::connect([url.as_str()], Some(self.options.clone()))
            .await
            .map_err(|e| classify(e, || format!("connect {url}"), Some(url)))?;
        clients[index] = Some(client.clone());
        Ok(client)
    }

    /// Moves off `index` after a transport failure (unless another caller already did).
    fn rotate_from(&self, index: usize) {
        if self.urls.len() > 1 {
            let _ = self.current.compare_exchange(
                index,
                (index + 1) % self.urls.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            debug!(from = %self.urls[index], "moving to the next etcd endpoint");
        }
    }

    /// Runs `op` on the current endpoint, moving to the next one on transport errors, each
    /// endpoint at most once.
    async fn call<T, F, Fut>(&self, what: impl Fn() -> String, op: F) -> Result<T, BackendError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.urls.len() {
            let (index, client) = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    let index = self.current.load(Ordering::Relaxed) % self.urls.len();
                    self.rotate_from(index);
                    last = Some(e);
                    continue;
                }
            };
            match op(client).await {
                Ok(value) => return Ok(value),
                Err(e) if is_transport(&e) => {
                    self.rotate_from(index);
                    last = Some(classify(e, &what, Some(&self.urls[index])));
                }
                Err(e) => return Err(classify(e, &what, None)),
            }
        }
        Err(last.unwrap_or(BackendError::Closed { backend: NAME }))
    }
}

/// Whether the error means the member could not serve the request (try another one): transport
/// failures, and `Unavailable` / deadline answers (a member without a leader answers so).
fn is_transport(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => tonic_code::of(error).is_some_and(|(code, message)| match code {
            tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED => true,
            tonic_code::UNKNOWN => !message.starts_with("etcdserver:"),
            _ => false,
        }),
    }
}

/// gRPC codes, by number (avoids depending on tonic directly).
mod tonic_code {
    use etcd_client::Error;
    pub(crate) type Code = i32;
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
fn classify(
    error: etcd_client::Error,
    what: impl FnOnce() -> String,
    address: Option<&str>,
) -> BackendError {
    if let Some((code, message)) = tonic_code::of(&error) {
        let auth = code == tonic_code::UNAUTHENTICATED
            || code == tonic_code::PERMISSION_DENIED
            || (code == tonic_code::INVALID_ARGUMENT && message.contains("authentication failed"));
        if auth {
            return BackendError::Auth {
                backend: NAME,
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

/// Whether a read at a revision failed because that revision was compacted.
fn revision_compacted(error: &etcd_client::Error) -> bool {
    tonic_code::of(error).is_some_and(|(code, message)| {
        code == tonic_code::OUT_OF_RANGE && message.contains("required revision has been compacted")
    })
}

fn lease_not_found(error: &etcd_client::Error) -> bool {
    tonic_code::of(error).is_some_and(|(code, message)| {
        code == tonic_code::NOT_FOUND || message.contains("lease not found")
    })
}

/// Why [`EtcdBackend::put_owned`] did not write.
enum PutError {
    /// Another live lease holds the key.
    Held(i64),
    /// The key changed between two steps: try again.
    Changed,
    /// No endpoint could be reached.
    Backend(BackendError),
    /// The request failed.
    Etcd(etcd_client::Error),
}

/// The keep-alive stream of the current lease.
struct KeepAlive {
    lease: i64,
    endpoint: usize,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

/// The `etcd` [`Backend`]. See the [crate docs](crate).
pub struct EtcdBackend {
    endpoints: Arc<Endpoints>,
    timeout: Duration,
    /// The lease of this client, once granted.
    lease: Mutex<Option<i64>>,
    keep_alive: Mutex<Option<KeepAlive>>,
    /// Set when a put found the lease gone and granted a new one: the other nodes of the old
    /// lease are gone too, so the next keep-alive reports the liveness lost.
    lease_replaced: std::sync::atomic::AtomicBool,
    settings: EtcdSettings,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.endpoints.urls)
            .finish_non_exhaustive()
    }
}

/// Splits `address` into endpoint URLs (`http://` added when missing).
pub fn parse_endpoints(address: &str) -> Vec<String> {
    let address = if address.trim().is_empty() {
        DEFAULT_ADDRESS
    } else {
        address
    };
    address
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_owned()
            } else {
                format!("http://{s}")
            }
        })
        .collect()
}

impl EtcdBackend {
    /// Connects to the endpoints in `options.address` (comma-separated; default
    /// [`DEFAULT_ADDRESS`]) with the credentials given, and checks that one answers.
    ///
    /// # Errors
    /// [`BackendError::Auth`] for wrong credentials, [`BackendError::Connect`] when no
    /// endpoint answers.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, BackendError> {
        Self::connect_with(options, EtcdSettings::default()).await
    }

    /// [`connect`](Self::connect) with [`EtcdSettings`] (decode limit, listing page size).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(
        options: &ConnectOptions,
        settings: EtcdSettings,
    ) -> Result<Self, BackendError> {
        let urls = parse_endpoints(&options.address);
        let timeout = if options.timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            options.timeout
        };
        let mut etcd = EtcdOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout)
            .with_require_leader(true);
        if let (Some(user), Some(password)) = (&options.username, &options.password) {
            etcd = etcd.with_user(user.clone(), password.clone());
        }
        let endpoints = Arc::new(Endpoints {
            clients: Mutex::new(vec![None; urls.len()]),
            urls,
            options: etcd,
            current: AtomicUsize::new(0),
            max_decoding: settings.max_decoding_message_size(),
            undecodable: UndecodableStarts::default(),
        });
        let backend = Self {
            endpoints,
            timeout,
            lease: Mutex::new(None),
            keep_alive: Mutex::new(None),
            lease_replaced: std::sync::atomic::AtomicBool::new(false),
            settings,
        };
        // One request now, so wrong credentials or no reachable member fail at startup.
        backend.health().await?;
        Ok(backend)
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints.urls
    }

    /// The lease of this client, when one is granted.
    pub async fn lease_id(&self) -> Option<i64> {
        *self.lease.lock().await
    }

    async fn ensure_lease(&self, ttl: Duration) -> Result<i64, BackendError> {
        let mut lease = self.lease.lock().await;
        if let Some(id) = *lease {
            return Ok(id);
        }
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let granted = self
            .endpoints
            .call(
                || "lease grant".into(),
                |mut c| async move { c.lease_grant(seconds, None).await },
            )
            .await?;
        info!(
            lease = granted.id(),
            ttl = granted.ttl(),
            "granted etcd lease"
        );
        *lease = Some(granted.id());
        Ok(granted.id())
    }

    async fn forget_lease(&self, id: i64) {
        let mut lease = self.lease.lock().await;
        if *lease == Some(id) {
            *lease = None;
        }
        let mut keep_alive = self.keep_alive.lock().await;
        if keep_alive.as_ref().is_some_and(|k| k.lease == id) {
            *keep_alive = None;
        }
    }

    /// Puts `key` with `lease` unless another live lease holds it: one transaction, "if the
    /// key has no lease (absent, or written without one) put it, else read it", and a second
    /// one only when the key turns out to be ours already (an update).
    async fn put_owned(&self, key: &str, value: &[u8], lease: i64) -> Result<(), PutError> {
        let put = || TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        let (index, mut client) = self.endpoints.client().await.map_err(PutError::Backend)?;
        let fail = |e: etcd_client::Error| {
            if is_transport(&e) {
                self.endpoints.rotate_from(index);
            }
            PutError::Etcd(e)
        };
        let unleased = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(key, None)]);
        let response = client.txn(unleased).await.map_err(fail)?;
        if response.succeeded() {
            return Ok(());
        }
        let holder = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
            _ => None,
        });
        match holder {
            Some(holder) if holder == lease => {
                let ours = Txn::new()
                    .when([Compare::lease(key, CompareOp::Equal, lease)])
                    .and_then([put()]);
                if client.txn(ours).await.map_err(fail)?.succeeded() {
                    Ok(())
                } else {
                    Err(PutError::Changed)
                }
            }
            Some(holder) if holder != 0 => Err(PutError::Held(holder)),
            // Gone (or unleased) between the compare and the read: try again.
            _ => Err(PutError::Changed),
        }
    }

    /// One keep-alive round trip on the kept stream.
    async fn keep_alive_once(&self, lease: i64) -> Result<i64, etcd_client::Error> {
        let mut guard = self.keep_alive.lock().await;
        // (Creating the stream sends one keep-alive request and consumes its answer itself.)
        let fresh = guard.as_ref().is_none_or(|k| k.lease != lease);
        if fresh {
            let (endpoint, mut client) = self
                .endpoints
                .client()
                .await
                .map_err(|e| etcd_client::Error::EndpointError(e.to_string()))?;
            let (keeper, stream) = match client.lease_keep_alive(lease).await {
                Ok(pair) => pair,
                // The client answers an expired lease with this error at stream creation.
                Err(etcd_client::Error::LeaseKeepAliveError(message))
                    if message.contains("lease not found") =>
                {
                    return Ok(0);
                }
                Err(e) => {
                    if is_transport(&e) {
                        self.endpoints.rotate_from(endpoint);
                    }
                    return Err(e);
                }
            };
            *guard = Some(KeepAlive {
                lease,
                endpoint,
                keeper,
                stream,
            });
        }
        let Some(ka) = guard.as_mut() else {
            return Err(etcd_client::Error::LeaseKeepAliveError("no stream".into()));
        };
        let round_trip = async {
            ka.keeper.keep_alive().await?;
            match ka.stream.message().await? {
                Some(response) => Ok(response.ttl()),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keep-alive stream closed".into(),
                )),
            }
        };
        let result = match tokio::time::timeout(self.timeout, round_trip).await {
            Ok(result) => result,
            Err(_) => Err(etcd_client::Error::LeaseKeepAliveError(format!(
                "no keep-alive answer within {:?}",
                self.timeout
            ))),
        };
        if result.is_err() {
            // The stream is broken (or its member is gone): next time, a new one elsewhere.
            let endpoint = ka.endpoint;
            *guard = None;
            self.endpoints.rotate_from(endpoint);
        }
        result
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let lease = self.ensure_lease(ttl).await?;
            let error = match self.put_owned(key, value, lease).await {
                Ok(()) => return Ok(()),
                Err(PutError::Held(holder)) => {
                    return Err(BackendError::Held {
                        backend: NAME,
                        key: key.to_owned(),
                        holder: format!("lease {holder:x}"),
                    })
                }
                Err(PutError::Backend(e)) => return Err(e),
                Err(PutError::Changed) if attempts < 4 => continue,
                Err(PutError::Changed) => {
                    return Err(BackendError::request(
                        NAME,
                        format!("put {key}"),
                        "the key kept changing under us",
                    ))
                }
                Err(PutError::Etcd(e)) => e,
            };
            match error {
                e if lease_not_found(&e) && attempts < 3 => {
                    warn!(lease, "etcd lease is gone, granting a new one");
                    self.forget_lease(lease).await;
                    self.lease_replaced.store(true, Ordering::Release);
                }
                e if is_transport(&e) && attempts < self.endpoints.urls.len() + 1 => {
                    debug!(error = %e, "put failed on this endpoint, trying the next");
                }
                e => return Err(classify(e, || format!("put {key}"), None)),
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        // Only a key bound to this client's lease is ours to delete.
        let Some(lease) = *self.lease.lock().await else {
            return Ok(());
        };
        let key = key.to_owned();
        self.endpoints
            .call(
                || format!("delete {key}"),
                |mut c| {
                    let txn = Txn::new()
                        .when([Compare::lease(key.as_str(), CompareOp::Equal, lease)])
                        .and_then([TxnOp::delete(key.as_str(), None::<DeleteOptions>)]);
                    async move { c.txn(txn).await }
                },
            )
            .await
            .map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        let limit = self.endpoints.max_decoding;
        let mut pager = Pager::new(prefix, self.settings.list_page_keys(), limit);
        loop {
            let request = pager.request();
            let outcome = self
                .endpoints
                .call(
                    || format!("list {prefix}"),
                    |client| {
                        let request = request.clone();
                        async move { read_page(client, limit, request).await }
                    },
                )
                .await?;
            match outcome {
                Page::Read(response) => {
                    let revision = response.header().map_or(0, |h| h.revision());
                    let kvs = response.kvs().iter().map(|kv| (kv.key(), kv.value()));
                    if pager.page(revision, kvs, response.more()) {
                        break;
                    }
                }
                Page::TooLarge(too_large, error) => {
                    let keys = pager.page_keys();
                    if !pager.too_large(too_large.found) {
                        warn!(
                            %prefix, limit, found = ?too_large.found,
                            "an etcd entry is larger than the decode limit: raise EtcdSettings::max_decoding_message_size"
                        );
                        return Err(BackendError::request(
                            NAME,
                            format!("list {prefix}"),
                            EtcdError::EntryTooLarge {
                                prefix: prefix.to_owned(),
                                limit,
                                source: error,
                            },
                        ));
                    }
                    debug!(%prefix, keys, next = pager.page_keys(), found = ?too_large.found, "listing page too large, asking for fewer keys");
                }
                Page::Compacted(error) => {
                    if !pager.compacted() {
                        return Err(BackendError::request(
                            NAME,
                            format!("list {prefix}"),
                            EtcdError::CompactedWhileListing {
                                prefix: prefix.to_owned(),
                                restarts: paging::MAX_RESTARTS,
                                source: error,
                            },
                        ));
                    }
                    debug!(%prefix, "listing revision compacted meanwhile, listing again");
                }
            }
        }
        let pages = pager.pages();
        let listing = pager.finish();
        debug!(%prefix, pages, entries = listing.entries.len(), revision = listing.revision, "listed");
        Ok(listing)
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        let state = WatchState::Start {
            endpoints: self.endpoints.clone(),
            prefix: prefix.to_owned(),
            after,
        };
        futures::stream::unfold(state, next_watch_item).boxed()
    }

    async fn keep_alive(&self, keys: &[String], _ttl: Duration) -> Result<Liveness, BackendError> {
        if self.lease_replaced.swap(false, Ordering::AcqRel) {
            // Nodes written under the lost lease must be written again under the new one.
            return Ok(Liveness::Lost);
        }
        let Some(lease) = *self.lease.lock().await else {
            // Nothing was written with a lease yet: every node must be put.
            return Ok(if keys.is_empty() {
                Liveness::Alive {
                    missing: Vec::new(),
                }
            } else {
                Liveness::Lost
            });
        };
        let mut last_error = None;
        // Try on up to two streams: the kept one, then a fresh one on the next endpoint.
        for _ in 0..2 {
            match self.keep_alive_once(lease).await {
                Ok(ttl) if ttl > 0 => {
                    return Ok(Liveness::Alive {
                        missing: Vec::new(),
                    })
                }
                Ok(_) => {
                    warn!(lease, "etcd lease expired; nodes will be registered again");
                    self.forget_lease(lease).await;
                    return Ok(Liveness::Lost);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(e) => classify(e, || format!("keep-alive of lease {lease}"), None),
            None => BackendError::Closed { backend: NAME },
        })
    }

    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        let key = key.to_owned();
        let response = self
            .endpoints
            .call(
                || format!("get {key}"),
                |mut c| {
                    let key = key.clone();
                    // Only the lease is wanted: leave the value (up to etcd's request limit) out.
                    async move { c.get(key, Some(GetOptions::new().with_keys_only())).await }
                },
            )
            .await?;
        let Some(lease) = response
            .kvs()
            .first()
            .map(|kv| kv.lease())
            .filter(|l| *l != 0)
        else {
            return Ok(None);
        };
        let ttl = self
            .endpoints
            .call(
                || format!("lease time-to-live {lease}"),
                |mut c| async move { c.lease_time_to_live(lease, None).await },
            )
            .await?;
        Ok((ttl.ttl() >= 0).then(|| Duration::from_secs(ttl.ttl() as u64)))
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.endpoints
            .call(|| "status".into(), |mut c| async move { c.status().await })
            .await
            .map(|_| ())
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        *self.keep_alive.lock().await = None;
        let lease = self.lease.lock().await.take();
        // No lease: nothing was ever written by this client.
        if let Some(id) = lease {
            self.endpoints
                .call(
                    || format!("revoke lease {id}"),
                    |mut c| async move { c.lease_revoke(id).await },
                )
                .await?;
            debug!(lease = id, nodes = keys.len(), "revoked etcd lease");
        }
        Ok(())
    }
}

/// How a listing page read ended, beside the failures [`Endpoints::call`] handles.
enum Page {
    Read(etcd_client::GetResponse),
    TooLarge(oversized::TooLarge, etcd_client::Error),
    Compacted(etcd_client::Error),
}

/// Reads one page of a listing with the decode limit `limit`.
async fn read_page(
    client: Client,
    limit: usize,
    request: paging::PageRequest,
) -> Result<Page, etcd_client::Error> {
    let mut options = GetOptions::new()
        .with_range(request.range_end)
        .with_limit(request.limit);
    if let Some(revision) = request.revision {
        options = options.with_revision(revision);
    }
    let result = client
        .kv_client()
        .max_decoding_message_size(limit)
        .get(request.key, Some(options))
        .await;
    match result {
        Ok(response) => Ok(Page::Read(response)),
        Err(error) => {
            if let Some(too_large) = oversized::too_large(&error) {
                Ok(Page::TooLarge(too_large, error))
            } else if request.revision.is_some() && revision_compacted(&error) {
                Ok(Page::Compacted(error))
            } else {
                Err(error)
            }
        }
    }
}

/// The state of one watch stream.
enum WatchState {
    Start {
        endpoints: Arc<Endpoints>,
        prefix: String,
        after: Revision,
    },
    // Boxed: the stream is large and the other states are small.
    Watching(Box<Watching>),
    Done,
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
    pending: VecDeque<WatchEvent>,
    progress_requested: bool,
    /// Whether any event was decoded on this stream.
    seen_events: bool,
}

type Item = Result<WatchEvent, BackendError>;

async fn next_watch_item(state: WatchState) -> Option<(Item, WatchState)> {
    let mut state = state;
    loop {
        match state {
            WatchState::Done => return None,
            WatchState::Start {
                endpoints,
                prefix,
                after,
            } => {
                let (endpoint, client) = match endpoints.client().await {
                    Ok(c) => c,
                    Err(e) => {
                        let index =
                            endpoints.current.load(Ordering::Relaxed) % endpoints.urls.len();
                        endpoints.rotate_from(index);
                        return Some((Err(e), WatchState::Done));
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
                let mut watcher = client
                    .watch_client()
                    .max_decoding_message_size(endpoints.max_decoding);
                match watcher.watch(prefix.as_str(), Some(options)).await {
                    Ok(stream) => {
                        state = WatchState::Watching(Box::new(Watching {
                            endpoints,
                            endpoint,
                            prefix,
                            after,
                            start,
                            stream,
                            pending: VecDeque::new(),
                            progress_requested: false,
                            seen_events: false,
                        }));
                    }
                    Err(e) => {
                        if is_transport(&e) {
                            endpoints.rotate_from(endpoint);
                        }
                        let error = classify(e, || format!("watch {prefix}"), None);
                        return Some((Err(error), WatchState::Done));
                    }
                }
            }
            WatchState::Watching(mut w) => {
                if let Some(event) = w.pending.pop_front() {
                    return Some((Ok(event), WatchState::Watching(w)));
                }
                let message = match tokio::time::timeout(WATCH_QUIET, w.stream.message()).await {
                    Ok(message) => message,
                    Err(_) if !w.progress_requested => {
                        // Quiet for a while: is the member still there?
                        if w.stream.request_progress().await.is_err() {
                            w.endpoints.rotate_from(w.endpoint);
                            return Some((Err(stalled()), WatchState::Done));
                        }
                        w.progress_requested = true;
                        state = WatchState::Watching(w);
                        continue;
                    }
                    Err(_) => {
                        w.endpoints.rotate_from(w.endpoint);
                        return Some((Err(stalled()), WatchState::Done));
                    }
                };
                w.progress_requested = false;
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return None,
                    Err(e) => return Some((Err(watch_failed(&w, e)), WatchState::Done)),
                };
                // A store whose revision is behind what we saw lost its data (restored from an
                // old snapshot, or restarted empty): watching on would wait for revisions that
                // mean something else. Relist.
                let after = w.after;
                let store_revision = response.header().map_or(i64::MAX, |h| h.revision());
                if store_revision < after as i64 {
                    let reason = format!(
                        "etcd revision went back from {after} to {store_revision}: the store lost data"
                    );
                    return Some((Err(BackendError::HistoryLost { reason }), WatchState::Done));
                }
                if response.compact_revision() > 0 {
                    let reason = format!(
                        "revisions up to {} are compacted",
                        response.compact_revision()
                    );
                    return Some((Err(BackendError::HistoryLost { reason }), WatchState::Done));
                }
                if response.canceled() {
                    let reason = format!("watch canceled by etcd: {}", response.cancel_reason());
                    return Some((Err(BackendError::HistoryLost { reason }), WatchState::Done));
                }
                for event in response.events() {
                    w.seen_events = true;
                    let Some(kv) = event.kv() else { continue };
                    let Ok(key) = kv.key_str() else {
                        warn!("skipping a watch event for a key that is not UTF-8");
                        continue;
                    };
                    let revision = kv.mod_revision().max(0) as Revision;
                    w.pending.push_back(match event.event_type() {
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
                state = WatchState::Watching(w);
            }
        }
    }
}

/// The error a failed watch stream yields. A response above the decode limit is reported as
/// [`BackendError::HistoryLost`]: watching again from the same revision would meet the same
/// response, while the core's relist (paged) reads past it and watches on from after it.
fn watch_failed(w: &Watching, error: etcd_client::Error) -> BackendError {
    if let Some(too_large) = oversized::too_large(&error) {
        if !w.seen_events {
            w.endpoints.undecodable.record(&w.prefix, w.start);
        }
        let size = |n: Option<usize>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let reason = format!(
            "a watch response under {} is larger than the decode limit ({} bytes, limit {}); \
             listing again to continue past it (raise EtcdSettings::max_decoding_message_size \
             to receive such responses)",
            w.prefix,
            size(too_large.found),
            size(too_large.limit.or(Some(w.endpoints.max_decoding))),
        );
        return BackendError::HistoryLost { reason };
    }
    if is_transport(&error) {
        w.endpoints.rotate_from(w.endpoint);
    }
    classify(error, || "watch".into(), None)
}

fn stalled() -> BackendError {
    BackendError::request(
        NAME,
        "watch",
        format!("no answer from the member for {:?}", WATCH_QUIET * 2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_a_default() {
        assert_eq!(parse_endpoints(""), vec![DEFAULT_ADDRESS.to_owned()]);
        assert_eq!(
            parse_endpoints("127.0.0.1:1, http://h:2 ,"),
            vec!["http://127.0.0.1:1".to_owned(), "http://h:2".to_owned()]
        );
    }
}
