//! Redis backend for `registry-core`: deadlines instead of sessions, and a change stream with
//! revisions, so consumers can watch "from a revision" as on etcd.
//!
//! # Layout
//!
//! Every node is a plain string key holding its JSON (`GET /rpc/users:1.0/10.0.0.7:8080` is
//! readable with `redis-cli`). Five bookkeeping keys sit next to them:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `rpc-registry:revision` | string | the last revision given to a change |
//! | `rpc-registry:changes` | stream | one entry per change, id `<revision>-<n>` (`op`, `key`, `value`) |
//! | `rpc-registry:index` | sorted set | every node key (listing a prefix is a lexicographic range) |
//! | `rpc-registry:deadlines` | sorted set | node key -> time (ms, server clock) its liveness ends |
//! | `rpc-registry:owners` | hash | node key -> id of the client that holds it |
//!
//! Every write is one Lua script, so a change and its stream entry are atomic, and all or
//! nothing: a script reads and checks first, and writes only once nothing it writes can fail
//! (see [Recovery](#recovery)).
//!
//! # Ownership
//!
//! Each client has a random id. A put takes a node only when nobody holds it, this client
//! does, or the holder's deadline passed; a node another client holds alive is reported
//! [`BackendError::Held`](registry_core::BackendError::Held) and left as it is. Deletes and
//! the graceful shutdown remove only nodes this client holds (or nobody does).
//!
//! # Liveness without sessions
//!
//! A node lives until its deadline; a heartbeat pushes the deadlines of all of this client's
//! nodes in **one** script call, whatever their number, and reports the nodes Redis no longer
//! holds (deleted behind our back, or a server restarted without its data) so the core puts
//! them back. Expiry needs no server setting (keyspace notifications are off by default and
//! lossy): every watching client *reaps* (a script that deletes the nodes whose deadline passed
//! and records each removal in the change stream) a few times per TTL, so a dead provider
//! disappears for every consumer within its TTL plus one reaping period. The node key also
//! gets a Redis expiry well after its deadline, so nothing outlives a registry nobody runs.
//!
//! # Watching
//!
//! A watch reads the change stream with `XREAD BLOCK` from `revision + 1` on its own
//! connection and keeps the changes under its prefix. The stream is capped (about 100,000
//! entries): a watcher that falls further behind, or a server that lost its data (the
//! revision went back), gets
//! [`BackendError::HistoryLost`](registry_core::BackendError::HistoryLost) and the core
//! relists.
//!
//! Every revision has entries, so a revision more than one above the last one read is a gap
//! (the stream was trimmed past the watch, or the revisions jumped): the watch asks for a
//! relist. An entry that records no change (unknown `op`, missing fields) is skipped, with
//! one warning per client.
//!
//! Keys written outside these scripts (a bare `SET` under the root) are not in the index and
//! stay invisible to the registry. Redis Cluster is not supported (the scripts touch keys of
//! several slots); a standalone server or a Sentinel-managed primary is.
//!
//! # Recovery
//!
//! The bookkeeping keys are plain keys anyone can touch. What the scripts do about it:
//!
//! - **A bookkeeping key of the wrong type** (say `SET rpc-registry:changes x`): every write
//!   is refused whole, before it writes anything, with an error naming the key; deleting the
//!   key lets writes go on.
//! - **A revision counter behind the change stream**: lost (`DEL rpc-registry:revision`, a
//!   partial restore), set back, holding junk, or passed by a stray entry with a larger id
//!   (`XADD rpc-registry:changes 1000000000-1 op x`, even if deleted again since). A script's
//!   first write is its stream entry; when the stream refuses the next revision, the script
//!   *re-bases* the counter just above the stream's last id (the last one the stream ever
//!   gave) and goes on. The client that did it logs one warning ("re-based from X to Y").
//! - **A stream whose last id leaves no revision above it** (revisions stay below 10^15, so
//!   they are exact in Lua): the stream is restarted and revisions go on from the counter;
//!   a watch that had read that entry sees the revision go back and relists.
//!
//! Listings and reaps take the store's revision as the counter's or the stream's last
//! entry's, whichever is higher, so a lost counter makes no watch believe the server lost its
//! data. After a re-base that skips revisions, a watch meets the gap and relists once; the
//! listing's revision is at or above the jump, so it then goes on normally. A re-base after
//! a lost counter continues right after the stream's last entry: no watch relists.
//!
//! # Layout of this crate
//!
//! `address` (the configured address as a Redis URL), `scripts` (the Lua scripts, one file
//! each under `scripts/`, and the bookkeeping keys), `error` (Redis errors as the core's
//! kinds, requests under the timeout), `backend` (the [`Backend`](registry_core::Backend)
//! implementation), `watch` (the change-stream watch), `stream` (`XREAD` replies as watch
//! events), `reap` (expiry and the history check the watches share).

mod address;
mod backend;
mod error;
mod reap;
mod scripts;
mod stream;
mod watch;

pub use backend::RedisBackend;

const NAME: &str = "redis";
/// The address used when none is configured.
pub const DEFAULT_ADDRESS: &str = "redis://127.0.0.1:6379";
