//! Our Redis backend's own scripts, for a raw client to run: the same write as ours, without
//! our client (shared by the benches through `#[path]`).

/// The registration script (`registry-redis/src/scripts/put.lua`).
pub fn put() -> redis::Script {
    redis::Script::new(concat!(
        include_str!("../../../registry-redis/src/scripts/prelude.lua"),
        include_str!("../../../registry-redis/src/scripts/put.lua")
    ))
}

/// The owner-checked delete script (`registry-redis/src/scripts/delete.lua`).
#[allow(dead_code)] // (not every bench deletes)
pub fn delete() -> redis::Script {
    redis::Script::new(concat!(
        include_str!("../../../registry-redis/src/scripts/prelude.lua"),
        include_str!("../../../registry-redis/src/scripts/delete.lua")
    ))
}

/// The server's replication id, as our client passes it to the scripts.
pub async fn replid(connection: &mut redis::aio::MultiplexedConnection) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("master_replid:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The keys a raw client's scripts take, in our order: revision, changes (`stream`), index,
/// leases, owners, the lease's node set (lease `raw-1`).
pub fn meta_keys(invocation: &mut redis::ScriptInvocation<'_>, stream: &str) {
    invocation
        .key("raw:revision")
        .key(stream)
        .key("raw:index")
        .key("raw:leases")
        .key("raw:owners")
        .key("rpc-registry:lease:raw-1");
}
