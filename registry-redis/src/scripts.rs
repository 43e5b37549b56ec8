//! The Lua scripts every write and listing runs as (one script call is atomic), and the
//! bookkeeping keys they take.
//!
//! Each script is its own file under `scripts/`, prefixed with the shared `prelude.lua`. The
//! first five `KEYS` of `put`, `delete`, `reap`, `admin` and `list` are the bookkeeping keys, in the
//! order [`meta_keys`] passes them; `keep_alive`, `audit`, `ttl` and `ttls` take only the keys
//! they read. A writing script is all or nothing: it checks before it writes (see
//! `prelude.lua`), and `put`, `delete`, `reap` and `admin` report a re-based revision counter as the
//! first item of their reply, which [`report_rebase`] logs.

use redis::{Script, ScriptInvocation};
use registry_core::Revision;
use tracing::warn;

/// The revision counter: the last revision given to a change.
pub(crate) const REVISION: &str = "rpc-registry:revision";
/// The change stream: one entry per change, id `<revision>-<n>`.
pub(crate) const CHANGES: &str = "rpc-registry:changes";
/// Every node key (a sorted set, so a prefix is a lexicographic range).
pub(crate) const INDEX: &str = "rpc-registry:index";
/// Lease id -> time (ms, server clock) the lease ends: one entry per client, whatever the
/// number of its nodes.
pub(crate) const LEASES: &str = "rpc-registry:leases";
/// Node key -> id of the lease that holds it.
pub(crate) const OWNERS: &str = "rpc-registry:owners";
/// Prefix of a lease's node set (`rpc-registry:lease:<lease id>`, a set of node keys). The
/// scripts build the same name (`LEASE_SET` in `prelude.lua`).
const LEASE_SET: &str = "rpc-registry:lease:";

/// The key of the node set of lease `id`.
pub(crate) fn lease_set(id: &str) -> String {
    format!("{LEASE_SET}{id}")
}

/// Approximate cap of the change stream.
pub(crate) const MAX_CHANGES: u64 = 100_000;
/// Nodes reaped per script call (more are reaped by the next call).
pub(crate) const REAP_BATCH: u64 = 1000;
/// Node keys per `audit` call or `MGET`.
pub(crate) const CHECK_BATCH: usize = 1000;

const PRELUDE: &str = include_str!("scripts/prelude.lua");

/// The scripts, each with the prelude, hashed once.
pub(crate) struct Scripts {
    /// Writes one node (see `scripts/put.lua`).
    pub(crate) put: Script,
    /// Deletes nodes this client holds (see `scripts/delete.lua`).
    pub(crate) delete: Script,
    /// Removes the nodes of expired leases, reports the revision and the stream's first one
    /// (see `scripts/reap.lua`).
    pub(crate) reap: Script,
    /// Pushes the deadline of this client's lease (see `scripts/keep_alive.lua`).
    pub(crate) keep_alive: Script,
    /// Which nodes the lease does not hold, and which it holds unasked (see
    /// `scripts/audit.lua`).
    pub(crate) audit: Script,
    /// Lists a prefix with its revision (see `scripts/list.lua`).
    pub(crate) list: Script,
    /// Writes or deletes a key as an administrator, without a lease (see `scripts/admin.lua`).
    pub(crate) admin: Script,
    /// Time left of one node (see `scripts/ttl.lua`).
    pub(crate) ttl: Script,
    /// Time left of every node under a prefix (see `scripts/ttls.lua`).
    pub(crate) ttls: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            put: script(include_str!("scripts/put.lua")),
            delete: script(include_str!("scripts/delete.lua")),
            reap: script(include_str!("scripts/reap.lua")),
            keep_alive: script(include_str!("scripts/keep_alive.lua")),
            audit: script(include_str!("scripts/audit.lua")),
            list: script(include_str!("scripts/list.lua")),
            admin: script(include_str!("scripts/admin.lua")),
            ttl: script(include_str!("scripts/ttl.lua")),
            ttls: script(include_str!("scripts/ttls.lua")),
        }
    }
}

/// Passes the bookkeeping keys, as `KEYS[1..5]` of the writing scripts.
pub(crate) fn meta_keys(invocation: &mut ScriptInvocation<'_>) {
    invocation
        .key(REVISION)
        .key(CHANGES)
        .key(INDEX)
        .key(LEASES)
        .key(OWNERS);
}

/// A revision as a script returns it (decimal digits); 0 when it is not one.
pub(crate) fn revision(digits: &[u8]) -> Revision {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Logs what a writing script re-based: its report is empty, or
/// `[what, counter before, revision now, the stream's last id]`. Only the script that
/// re-based reports it, so the condition is said once, by the client that repaired it.
pub(crate) fn report_rebase(report: &[Vec<u8>]) {
    let [what, from, to, last_id] = report else {
        return;
    };
    let text = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
    let (from, to, last_id) = (text(from), text(to), text(last_id));
    match what.as_slice() {
        b"restarted" => warn!(
            %last_id, revision = %to,
            "the change stream's last id {last_id} left no revision above it (a stray entry): \
             the stream was restarted at revision {to}, watchers relist"
        ),
        b"junk" => warn!(
            counter = %from, revision = %to,
            "the revision counter held {from}, not a revision (tampered with): re-based to {to}"
        ),
        _ => warn!(
            counter = %from, revision = %to, %last_id,
            "the revision counter was behind the change stream (lost or tampered with): \
             re-based from {from} to {to}, above the stream's last id {last_id}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_from_scripts() {
        assert_eq!(revision(b"42"), 42);
        assert_eq!(revision(b"18446744073709551615"), u64::MAX);
        assert_eq!(revision(b""), 0);
        assert_eq!(revision(b"x"), 0);
    }
}
