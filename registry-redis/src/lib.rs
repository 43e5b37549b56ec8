//! Redis backend for `registry-core`: a lease per client instead of a session, and a change
//! stream with revisions, so consumers can watch "from a revision" as on etcd. A standalone
//! server or a primary watched by Redis Sentinel.
//!
//! # Addresses
//!
//! | address | what |
//! |---|---|
//! | `redis://[user:pass@]host:port[/db]` (or `host:port`) | one server |
//! | `redis+sentinel://[user:pass@]host:port[,host:port...]/MASTER_NAME[/db]` | the primary the Sentinels (default port 26379) name `MASTER_NAME` |
//!
//! The credentials and the database of a Sentinel address are the data nodes'; the Sentinels
//! are asked without credentials. `rpc.registryConfig.username/password` replace the
//! address's credentials.
//!
//! With `rpc.registryConfig.tls.*`, `host:port` becomes `rediss://host:port`; with a Sentinel
//! address the Sentinels are reached on the ports listed (their `tls-port`) and the primary
//! they name over TLS too, with the same CA and client certificate: run every node and
//! Sentinel with `tls-replication yes`, so the Sentinels monitor and name the nodes' TLS
//! ports. `serverName` is refused: the certificates must carry the hosts the client connects
//! to (for the data nodes, the address the Sentinels name).
//!
//! # Layout
//!
//! Every node is a plain string key holding its JSON (`GET /rpc/users:1.0/10.0.0.7:8080` is
//! readable with `redis-cli`). The bookkeeping keys sit next to them:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `rpc-registry:revision` | string | the last revision given to a change |
//! | `rpc-registry:changes` | stream | one entry per change, id `<revision>-<n>` (`op`, `key`, `value`) |
//! | `rpc-registry:index` | sorted set | every node key (listing a prefix is a lexicographic range) |
//! | `rpc-registry:leases` | sorted set | lease id -> time (ms, server clock) the lease ends: one entry per client |
//! | `rpc-registry:owners` | hash | node key -> id of the lease that holds it |
//! | `rpc-registry:lease:<lease id>` | set | the node keys attached to that lease |
//! | `rpc-registry:history` | string | the replication id of the server the lease deadlines were last counted on |
//!
//! A lease id is `<client id>.<generation>`: each client has a random id, and takes a new
//! lease (the next generation) when its lease was lost.
//!
//! Every write is one Lua script, so a change and its stream entry are atomic, and all or
//! nothing: a script reads and checks first, and writes only once nothing it writes can fail
//! (see [Recovery](#recovery)).
//!
//! # Liveness: a lease per client
//!
//! A put attaches the node to the client's lease (creating the lease, or pushing its
//! deadline). A node lives as long as its lease: a heartbeat is one short script that pushes
//! the lease's deadline and returns how many nodes the lease holds: `EVALSHA` with `TIME`,
//! `SCARD`, `GET` (the history, see [Failover](#failover)), `ZSCORE` and `ZADD`, six commands
//! whatever the number of nodes (measured by `tests/faults.rs` from `INFO commandstats`: the
//! same per beat for 1 and 1,000 nodes).
//! A lease that is gone, or whose deadline passed, is reported
//! [`Liveness::Lost`](registry_core::Liveness::Lost): the client takes a new lease and the
//! core puts every node again.
//!
//! Expiry needs no server setting (keyspace notifications are off by default and lossy):
//! every watching client *reaps* a few times per TTL, a script that removes the nodes of
//! leases whose deadline passed (at most 1,000 nodes per call, the next call goes on),
//! records each removal in the change stream, and ends a lease once no node is left on it.
//! A dead provider disappears for every consumer within its TTL plus one reaping period.
//! A registry nobody runs keeps its last nodes until a client starts and reaps them (node
//! keys have no Redis expiry: renewing one per node would cost a command per node per beat).
//!
//! # Nodes lost behind the registry's back
//!
//! The client remembers the nodes it put on its lease. What it notices, and how:
//!
//! - **A node taken away by a script** (another client's put or reaper after this client's
//!   lease expired, a delete by a client that found the node dead): the node leaves the
//!   lease's set, so the heartbeat's count differs from the client's. Only then does the
//!   client ask which nodes (one `audit` script over its nodes): those missing are reported
//!   to the core, which puts them back (or waits, with `Held`, for their new holder to go).
//! - **A node key deleted by a command outside the scripts** (a bare `DEL`, an eviction,
//!   `FLUSHALL`): the count does not change (the set still names the node). Client tracking
//!   tells instead: a registering client reads its node keys once on a RESP3 connection with
//!   `CLIENT TRACKING ON`, and Redis pushes an invalidation when one of them changes. The next
//!   heartbeat reads the invalidated keys again and reports those without a value: the node
//!   is back within about one heartbeat, at no cost while nothing changes. A server that
//!   refuses tracking (before Redis 6, some proxies) gets one warning, and such a deletion is
//!   then repaired only when a relist misses the node.
//! - **A server that lost writes** (restarted from an older snapshot, or a replica promoted
//!   before it received the last writes, see [Failover](#failover)): the client meets a server
//!   with another replication id and checks every node once (`audit`): missing ones are put
//!   back, and nodes this client had deleted but the store brought back are deleted again.
//!   A server that lost everything has no lease: the heartbeat reports it lost.
//!
//! A node removed from its lease's set by hand (`SREM`) changes the count: it is noticed as
//! above. Not noticed: an index or owner entry removed by hand (`ZREM rpc-registry:index`,
//! `HDEL rpc-registry:owners`) while the node key stays: the node is then unlisted, or listed
//! without expiry, until the client's next put of it.
//!
//! # Ownership
//!
//! A put takes a node only when nobody holds it, this client does (on any of its leases),
//! the node key has no value, or the holder's lease expired; a node another client holds
//! alive is reported [`BackendError::Held`](registry_core::BackendError::Held) and left as it
//! is. Deletes and the graceful shutdown remove only nodes this client holds (or nobody does,
//! or whose lease expired). A node key without a holder (written by a tool) is listed and
//! never expires, as a key without a lease on etcd.
//!
//! # Watching
//!
//! Each client reads the change stream once, whatever the number of services it watches: one
//! task with its own connection reads it with `XREAD BLOCK` and hands every batch to the
//! client's watches, each of which keeps the changes under its prefix (200 watched services
//! cost Redis one blocking read, not 200). A new watch joins that reader, then catches up from
//! its revision with `XRANGE`. The stream is capped (about 100,000 entries): a watcher that
//! falls further behind, or a server that lost its data (the revision went back), gets
//! [`BackendError::HistoryLost`](registry_core::BackendError::HistoryLost) and the core
//! relists; nothing else makes a watch relist (tested with 4 writers, 2,000 registrations and
//! 200 services watched by one consumer: no relist).
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
//! # Failover
//!
//! With a Sentinel address the client asks the Sentinels for the primary (and checks that the
//! server they name calls itself a master), and asks again whenever a connection to it
//! fails: a broken or timed-out connection, or a server answering `READONLY` (a primary
//! demoted to replica), `MASTERDOWN` or `LOADING`. The request that met it fails, the core
//! retries it with backoff, and the retry goes to the new primary; watches, whose blocking
//! reads have their own connections, reconnect the same way.
//!
//! Redis replication is asynchronous: a promoted replica may lack the last writes its old
//! primary acknowledged, and its revisions then go on from an older one, reusing revision
//! numbers a watcher has seen for other changes. Revisions alone cannot tell, so every
//! connection reads the server's replication id (`INFO replication`), which a server changes
//! when it starts and when it is promoted:
//!
//! - a watch relists when its server's id is not the id of the server its prefix was listed
//!   on, or no longer the id of the server this client writes to;
//! - the registrar checks every node once (see above): lost puts are put again, lost deletes
//!   deleted again, a lost lease reported lost.
//!
//! A failover takes a while (the Sentinels' `down-after-milliseconds`, then an election), and
//! no client can renew its lease meanwhile. So that leases do not expire for the outage alone
//! (as etcd extends leases on a leader change), the first writing script on a server with a
//! replication id other than the one in `rpc-registry:history` gives every lease that
//! expired less than a TTL ago (the TTL of the client running the script) a deadline one TTL
//! from now, and records the id; listings count such leases alive until then. A lease that
//! expired longer ago stays expired: its client's heartbeat reports it lost and the nodes
//! are put again.
//!
//! No node is lost for good and no consumer cache is emptied by it: the relist is a resync,
//! and the empty protection keeps the last nodes over it. A server whose `INFO` is refused to
//! this user gives no id: a failover is then noticed by the revisions only (the revision went
//! back, or a gap).
//!
//! # Recovery
//!
//! The bookkeeping keys are plain keys anyone can touch. What the scripts do about it:
//!
//! - **A bookkeeping key of the wrong type** (say `SET rpc-registry:changes x`): every write
//!   is refused whole, before it writes anything, with an error naming the key; deleting the
//!   key lets writes go on. A lease's node set of the wrong type is refused the same way for
//!   the client that owns it, and forgotten (its lease ended) by the reaper.
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
//! The layout of this version is not the previous one's (which kept a deadline per node in
//! `rpc-registry:deadlines`): nodes written by an older client are not listed; run one
//! version at a time.
//!
//! # Layout of this crate
//!
//! `address` (the configured address: one server or Sentinels), `link` (connections that
//! follow the primary, replication ids), `scripts` (the Lua scripts, one file each under
//! `scripts/`, and the bookkeeping keys), `error` (Redis errors as the core's kinds, which
//! ones call for a new connection), `lease` (the client's lease: heartbeat, audit),
//! `tracking` (client tracking of the node keys), `backend` (the
//! [`Backend`](registry_core::Backend) implementation), `hub` (the client's one reader of the
//! change stream), `watch` (a watch on a prefix: catch-up, gaps, histories), `stream`
//! (`XREAD`/`XRANGE` replies as entries and watch events), `reap` (expiry and the history
//! check).

mod address;
mod backend;
mod error;
mod hub;
mod lease;
mod link;
mod locator;
mod reap;
mod scripts;
mod stream;
mod tracking;
mod watch;

pub use backend::RedisBackend;

const NAME: &str = "redis";
/// The address used when none is configured.
pub const DEFAULT_ADDRESS: &str = "redis://127.0.0.1:6379";

/// The rules of a Redis ACL user that can run this backend, for the key root `root`
/// (e.g. `/rpc/`): the keys under the root (overrides records included), the bookkeeping keys
/// `rpc-registry:*`, and only the commands the backend and its scripts run (scripts run with
/// the caller's permissions). Consumers need the same rules: every watching client reaps
/// expired nodes.
///
/// ```
/// let rules = registry_redis::acl_rules("/rpc/");
/// assert!(rules.starts_with("resetkeys ~rpc-registry:* ~/rpc/* resetchannels -@all +ping"));
/// // redis-cli ACL SETUSER registry on '>PASSWORD' <rules>
/// ```
pub fn acl_rules(root: &str) -> String {
    // The overrides records (`<root>~overrides/...`) are under the root too.
    let keys = registry_core::KeySpace::new(root);
    let root = keys.root();
    format!("resetkeys ~rpc-registry:* ~{root}* resetchannels -@all {ACL_COMMANDS}")
}

/// The commands of [`acl_rules`].
const ACL_COMMANDS: &str = "+ping +hello +auth +select +info +client|tracking \
+eval +evalsha +script|load +get +mget +set +del +exists +type +time +xread +xrange +xrevrange \
+xadd +xinfo|stream +hget +hset +hdel +sadd +srem +scard +sismember +smembers +srandmember \
+zadd +zrem +zscore +zrangebylex +zrangebyscore";
