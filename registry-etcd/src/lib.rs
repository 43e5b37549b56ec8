//! The etcd backend of `registry-core`: one lease per client, a keep-alive request per
//! heartbeat, and watches that resume from a revision.
//!
//! # Design
//! - **One lease per registry client.** It is granted at the first put, with the configured TTL,
//!   and every node this process registers is attached to it. Registering N nodes costs N puts
//!   once; each heartbeat then costs one `LeaseKeepAlive` request whatever N is, and no put.
//!   When the lease is gone (a keep-alive answers TTL 0: it expired during a partition, or the
//!   server came back without its data), [`keep_alive`](registry_core::Backend::keep_alive) reports
//!   [`Liveness::Lost`](registry_core::Liveness::Lost) and forgets it; the core puts every node again and the first put grants a
//!   new lease.
//! - **Keep-alive** is driven by the core's heartbeat (default TTL/3): each call sends one
//!   request on a kept keep-alive stream and waits for its answer with a timeout. A closed or
//!   failing stream is dropped and re-created, on another member when the current one fails.
//! - **Self-repair without puts.** Each heartbeat also reads the keys bound to the lease
//!   (`LeaseTimeToLive` with keys, one read): a node deleted behind our back while the lease
//!   lives is reported missing and put back by the core at that beat, whether or not this
//!   process watches its service. Steady state costs no put.
//! - **Paged listings, one snapshot.** [`list`](registry_core::Backend::list) reads the prefix in range
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
//!   or cancelled watch yields [`BackendError::HistoryLost`](registry_core::BackendError::HistoryLost) and the core relists. A watch
//!   response above the decode limit yields [`BackendError::HistoryLost`](registry_core::BackendError::HistoryLost) as well (instead of
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
//!   lease is reported [`BackendError::Held`](registry_core::BackendError::Held) and left alone. A delete is a transaction too:
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

//!
//! # Layout of this crate
//!
//! `endpoints` (members, rotation on transport errors), `error` (the client's errors
//! classified in one place), `lease` (grant, keep-alive, keys still bound), `listing` and
//! `paging` (paged snapshots), `watch` and `oversized` (watch from a revision, responses
//! above the decode limit), `ownership` (puts that never take over another lease's key), `settings`, `backend` (the
//! [`Backend`](registry_core::Backend) implementation).

mod backend;
mod endpoints;
mod error;
mod lease;
mod listing;
mod oversized;
mod ownership;
mod paging;
mod settings;
mod tls;
mod watch;

pub use backend::{EtcdBackend, MIN_TTL};
pub use error::EtcdError;
pub use settings::{EtcdSettings, DEFAULT_LIST_PAGE_KEYS, DEFAULT_MAX_DECODING_MESSAGE_SIZE};

const NAME: &str = "etcd";
/// The address used when none is configured.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:2379";
