//! ZooKeeper backend for `registry-core`: ephemeral nodes in a session, persistent recursive
//! watches.
//!
//! # Layout and liveness
//!
//! A node is an **ephemeral** znode at its key (`/rpc/users:1.0/10.0.0.7:8080`, data: the
//! node's JSON) under a **container** znode per service, so `zkCli.sh get` shows readable
//! nodes and empty service directories are cleaned up by the server. The session is the
//! liveness handle: its timeout is the TTL (the server clamps it to 2–20 × its `tickTime`),
//! the client library pings for it, and when it expires ZooKeeper removes every node of this
//! process at once. A heartbeat costs one request whatever the node count: `getEphemerals`
//! lists this session's nodes, and the ones missing (deleted behind our back) are put back.
//! An expired session is replaced by a new one and reported as lost, so the core puts every
//! node again. The client library also gives a session up when it reaches no server for 1.4
//! times its timeout, while the ensemble may still hold it (after losing its quorum, a new
//! leader gives every session a fresh timeout): such a session is taken back first, so its
//! nodes are never deleted and written again.
//!
//! # Watching
//!
//! ZooKeeper cannot replay history, so a watch works the other way round from etcd: it adds a
//! persistent recursive watch on the prefix first, then reads the prefix (revision: the
//! highest `pzxid`/`mzxid` in it). If something changed after the revision the caller listed,
//! the stream first delivers those changes itself: nodes changed since (by their `mzxid`) as
//! puts, and deletions found by comparing with the keys this client last told the caller
//! about for that prefix (kept per watched prefix: keys only). Every later change arrives
//! through the watch. Events carry no data: a created or changed node is read, a deleted one
//! reported with the last revision seen. After a disconnection the server may have dropped
//! events (ZOOKEEPER-4698), so reconnecting asks for a relist
//! ([`BackendError::HistoryLost`](registry_core::BackendError::HistoryLost)), as does an expired session.

//!
//! # Junk in the tree
//!
//! Registry nodes sit exactly two levels below the root (`/rpc/users:1.0/10.0.0.7:8080`):
//! listings and watches read nothing deeper and only `host:port` names at that level, so
//! znodes written there by anyone else (a chain thousands of levels deep, thousands of
//! children) are skipped without being read, with one warning per listing.
//!
//! # Ownership
//!
//! A node held by another live session (two providers on one address) is not taken over:
//! `put` reports it held and the core retries until that session's node is gone. Deleting
//! and closing remove only this session's nodes; a graceful shutdown deletes them in one
//! `multi`, and one by one when the `multi` fails (ZooKeeper applies it all-or-nothing).
//! ZooKeeper deletes conditionally on a node's data version only, not on its owner: a node
//! this session wrote and has not seen deleted since is deleted at the version its write
//! left, in one request; any other node is deleted only after its owner was read.
//!
//! # TLS
//!
//! With `rpc.registryConfig.tls.*` every server of the address is reached on its secure
//! client port (`secureClientPort`, Netty): the server's certificate must chain to `caFile`
//! (required: the client library has no system trust store) and carry the address's host
//! (`serverName` is refused); `certFile`/`keyFile` are presented for `ssl.clientAuth=need`.
//! Before the session opens, a handshake of this crate's own names a TLS failure at once
//! (the client library would retry until its deadline and report only that no server
//! answered). rustls with the `ring` provider, installed as the process default: the
//! library's `tls` feature also compiles `aws-lc-rs` (a C build with `cc`, no cmake).
//!
//! # Layout of this crate
//!
//! `path` (keys as znode paths, where nodes sit), `session` (the liveness handle and request
//! timeouts), `listing` (reading a prefix), `watch` (persistent watch with catch-up),
//! `writes` (create, put, delete and close under the ownership rule), `tls` (TLS options
//! and the handshake check), `backend` (the
//! [`Backend`](registry_core::Backend) implementation).

mod backend;
mod listing;
mod own;
mod path;
mod session;
mod tls;
mod watch;
mod writes;

pub use backend::ZkBackend;

const NAME: &str = "zookeeper";
/// The address used when none is configured.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2181";
