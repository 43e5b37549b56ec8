//! The audit of a lease: which of the nodes the client put the store lacks, which the lease
//! holds that the client did not ask for, and what becomes of those (taken back or deleted).

use std::collections::HashSet;

use registry_core::BackendError;
use tracing::info;

use super::Lease;
use crate::link::Link;
use crate::scripts::{lease_set, Scripts, CHECK_BATCH, OWNERS};

impl Lease {
    /// Which of `held` lease `id` lacks in the store, and which nodes it holds besides.
    pub(super) async fn audit(
        &self,
        link: &Link,
        scripts: &Scripts,
        id: &str,
        held: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), BackendError> {
        let mut lacking = Vec::new();
        let mut given = HashSet::new();
        let mut members = Vec::new();
        // The node set is listed whole by each call; only the last chunk's list is kept
        // (every chunk sees the same set, give or take concurrent puts).
        let chunks: Vec<&[String]> = if held.is_empty() {
            vec![&[][..]]
        } else {
            held.chunks(CHECK_BATCH).collect()
        };
        for chunk in chunks {
            let mut invocation = scripts.audit.prepare_invoke();
            invocation.key(OWNERS).key(lease_set(id));
            for key in chunk {
                invocation.key(key.as_str());
                given.insert(key.clone());
            }
            invocation.arg(id);
            let (missing, unexpected): (Vec<String>, Vec<String>) = link
                .run(
                    || format!("audit of {} nodes", chunk.len()),
                    |mut conn, _| async move { invocation.invoke_async(&mut conn).await },
                )
                .await?;
            lacking.extend(missing);
            members = unexpected;
        }
        members.retain(|k| !given.contains(k));
        Ok((lacking, members))
    }

    /// Nodes the lease holds that this client did not know of: taken back when wanted (a put
    /// that failed for the client but was written), deleted otherwise (a delete the store
    /// lost), unless this client put them since the audit or is putting them.
    pub(super) async fn settle(
        &self,
        link: &Link,
        scripts: &Scripts,
        id: &str,
        wanted: &[String],
        unasked: Vec<String>,
    ) -> Result<(), BackendError> {
        if unasked.is_empty() {
            return Ok(());
        }
        let wanted: HashSet<&str> = wanted.iter().map(String::as_str).collect();
        let stale: Vec<String> = {
            let mut state = self.state();
            let mut stale = Vec::new();
            for key in unasked {
                // Put since the audit ran, or being put.
                if state.held.contains(&key) || state.putting.contains_key(&key) {
                    continue;
                }
                if wanted.contains(key.as_str()) {
                    state.held.insert(key);
                } else {
                    stale.push(key);
                }
            }
            stale
        };
        if stale.is_empty() {
            return Ok(());
        }
        info!(
            nodes = stale.len(),
            "the store holds nodes this client deleted (a write lost by a failover?): deleting them again"
        );
        self.delete(link, scripts, id, &stale, false).await
    }
}
