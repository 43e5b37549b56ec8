//! The Lua scripts every write and listing runs as (one script call is atomic), and the
//! bookkeeping keys they take.
//!
//! Each script is its own file under `scripts/`, prefixed with the shared `prelude.lua`. The
//! first five `KEYS` of the writing scripts are always the bookkeeping keys, in the order
//! [`meta_keys`] passes them.

use redis::{Script, ScriptInvocation};

/// The revision counter: the last revision given to a change.
pub(crate) const REVISION: &str = "rpc-registry:revision";
/// The change stream: one entry per change, id `<revision>-<n>`.
pub(crate) const CHANGES: &str = "rpc-registry:changes";
/// Every node key (a sorted set, so a prefix is a lexicographic range).
pub(crate) const INDEX: &str = "rpc-registry:index";
/// Node key -> time (ms, server clock) its liveness ends.
pub(crate) const DEADLINES: &str = "rpc-registry:deadlines";
/// Node key -> id of the client that holds it.
pub(crate) const OWNERS: &str = "rpc-registry:owners";

/// Approximate cap of the change stream.
pub(crate) const MAX_CHANGES: u64 = 100_000;
/// Nodes reaped per script call (more are reaped by the next call).
pub(crate) const REAP_BATCH: u64 = 1000;

const PRELUDE: &str = include_str!("scripts/prelude.lua");

/// The scripts, each with the prelude, hashed once.
pub(crate) struct Scripts {
    /// Writes one node (see `scripts/put.lua`).
    pub(crate) put: Script,
    /// Deletes nodes this client holds (see `scripts/delete.lua`).
    pub(crate) delete: Script,
    /// Removes expired nodes and reports the stream's extent (see `scripts/reap.lua`).
    pub(crate) reap: Script,
    /// Pushes the deadlines of this client's nodes (see `scripts/keep_alive.lua`).
    pub(crate) keep_alive: Script,
    /// Lists a prefix with its revision (see `scripts/list.lua`).
    pub(crate) list: Script,
    /// Time left of one node (see `scripts/ttl.lua`).
    pub(crate) ttl: Script,
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
            list: script(include_str!("scripts/list.lua")),
            ttl: script(include_str!("scripts/ttl.lua")),
        }
    }
}

/// Passes the bookkeeping keys, as `KEYS[1..5]` of the writing scripts.
pub(crate) fn meta_keys(invocation: &mut ScriptInvocation<'_>) {
    invocation
        .key(REVISION)
        .key(CHANGES)
        .key(INDEX)
        .key(DEADLINES)
        .key(OWNERS);
}
