//! Reading a prefix: directories level by level down to the node level, then the nodes.

use futures::stream::{self, StreamExt, TryStreamExt};
use registry_core::{KeyValue, Revision};
use zookeeper_client as zk;

use registry_core::backend::Junk;

use crate::path::{is_entry, join, parent, path};

/// Requests in flight at once while listing (pipelined on the session's one connection).
const CONCURRENCY: usize = 64;

/// A listing with the zxid of each entry's last change.
pub(crate) struct Snapshot {
    /// Node entries, sorted by key, each with the zxid of its last change.
    pub(crate) entries: Vec<(KeyValue, Revision)>,
    /// The highest zxid seen: the `pzxid` of the prefix's parent and of the directories, the
    /// nodes' `mzxid`.
    pub(crate) revision: Revision,
    /// What was skipped.
    pub(crate) junk: Junk,
}

/// Reads the nodes `depth` levels below `prefix` (see [`crate::path`]): one `getChildren` per
/// directory above the node level, one `getData` per child named like `host:port` at it.
/// Nothing deeper is read, whatever is there.
pub(crate) async fn snapshot(
    client: &zk::Client,
    prefix: &str,
    depth: usize,
) -> Result<Snapshot, zk::Error> {
    let mut junk = Junk::default();
    // The parent's `pzxid` covers the prefix's own creation and deletion (an empty service
    // directory is a container the server removes), so the revision never goes back while
    // the store keeps its history; it does when the store lost it (see the watch).
    let mut revision: i64 = match parent(prefix) {
        Some(dir) => match client.check_stat(dir).await? {
            Some(stat) => stat.pzxid,
            None => 0,
        },
        None => 0,
    };
    let mut dirs = vec![path(prefix).to_owned()];
    let mut candidates = Vec::new();
    for level in 1..=depth {
        let listed: Vec<_> = stream::iter(std::mem::take(&mut dirs))
            .map(|dir| async move {
                match client.get_children(&dir).await {
                    Ok((children, stat)) => Ok(Some((dir, children, stat))),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (dir, children, stat) in listed.into_iter().flatten() {
            revision = revision.max(stat.pzxid);
            for child in children {
                let key = join(&dir, &child);
                if level < depth {
                    dirs.push(key);
                } else if is_entry(&dir, &child) {
                    candidates.push(key);
                } else {
                    junk.note(
                        &key,
                        "not `host:port` two levels below the root; never read",
                    );
                }
            }
        }
    }
    let read: Vec<_> = stream::iter(candidates)
        .map(|key| async move {
            match client.get_data(&key).await {
                Ok((data, stat)) => Ok(Some((key, data, stat))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut entries = Vec::with_capacity(read.len());
    for (key, value, stat) in read.into_iter().flatten() {
        revision = revision.max(stat.mzxid);
        if value.is_empty() {
            // A directory named like a node: nothing to decode.
            junk.note(&key, "a directory named like a node");
            continue;
        }
        entries.push((KeyValue { key, value }, stat.mzxid.max(0) as Revision));
    }
    entries.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(Snapshot {
        entries,
        revision: revision.max(0) as Revision,
        junk,
    })
}
