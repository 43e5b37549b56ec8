//! The disk snapshot of the cache (opt-in, `RegistryOptions::snapshot_dir`): each service's
//! nodes written to one file, so a consumer that starts while the store is down serves the
//! nodes it knew, marked stale, until the store answers (as Nacos' failover cache, Dubbo's
//! registry cache file, Eureka's backup registry).
//!
//! # Files
//! `<dir>/<service key, percent-encoded>.json`:
//! `{"format": "rpc-registry-snapshot/1", "service": "users:1.0", "savedAt": "...", "nodes": [...]}`,
//! the nodes in the same camelCase JSON as in the store. Each file is written atomically
//! (written aside, then renamed), at most once per [`WRITE_EVERY`] per service, from a fresh
//! list (never a stale one). A file that does not parse, names another service, or holds a node
//! of another service is skipped with a warning, never trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Node;
use crate::instance::ServiceMetaInfo;

/// The format tag of a snapshot file.
pub const FORMAT: &str = "rpc-registry-snapshot/1";
/// A service's file is written at most this often.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    format: String,
    service: String,
    saved_at: String,
    nodes: Vec<ServiceMetaInfo>,
}

/// The file of `service_key` under `dir`: the key percent-encoded (only `[A-Za-z0-9._-]` kept).
pub(crate) fn path(dir: &Path, service_key: &str) -> PathBuf {
    let mut name = String::with_capacity(service_key.len() + 8);
    for b in service_key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".json");
    dir.join(name)
}

/// Reads the snapshot of `service_key`, or `None` (with a warning when a file exists but is
/// not a usable snapshot of this service).
pub(crate) fn read(dir: &Path, service_key: &str) -> Option<Vec<ServiceMetaInfo>> {
    let path = path(dir, service_key);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read the snapshot file, skipping it");
            return None;
        }
    };
    let file: File = match serde_json::from_slice(&text) {
        Ok(file) => file,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "not a snapshot file (corrupt or foreign), skipping it");
            return None;
        }
    };
    let foreign = file.format != FORMAT
        || file.service != service_key
        || file
            .nodes
            .iter()
            .any(|n| n.service_key() != service_key || n.validate().is_err());
    if foreign {
        warn!(file = %path.display(), format = %file.format, service = %file.service, "a snapshot file of another format or service, skipping it");
        return None;
    }
    debug!(file = %path.display(), nodes = file.nodes.len(), saved_at = %file.saved_at, "read the snapshot");
    Some(file.nodes)
}

fn write(dir: &Path, service_key: &str, nodes: &[Node]) -> std::io::Result<()> {
    let file = File {
        format: FORMAT.to_owned(),
        service: service_key.to_owned(),
        saved_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        nodes: nodes.iter().map(|n| ServiceMetaInfo::clone(n)).collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let target = path(dir, service_key);
    let aside = target.with_extension("json.tmp");
    std::fs::create_dir_all(dir)?;
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, &target)
}

/// Where the cache hands fresh lists to the writer task.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<(Arc<str>, Arc<[Node]>)>,
}

impl Writer {
    /// A writer into `dir`, and the task that writes (spawn it; it ends when every `Writer`
    /// is dropped or `cancel` fires, after writing what it holds).
    pub(crate) fn new(
        dir: PathBuf,
        cancel: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, run(dir, rx, cancel))
    }

    /// Records the fresh list of `service_key` (written within [`WRITE_EVERY`]).
    pub(crate) fn save(&self, service_key: &Arc<str>, nodes: &Arc<[Node]>) {
        let _ = self.tx.send((service_key.clone(), nodes.clone()));
    }
}

async fn run(
    dir: PathBuf,
    mut rx: mpsc::UnboundedReceiver<(Arc<str>, Arc<[Node]>)>,
    cancel: CancellationToken,
) {
    let mut last_failure_logged = false;
    loop {
        let (key, nodes) = tokio::select! {
            () = cancel.cancelled() => return,
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        // Coalesce what arrives within one period: the latest list of each service.
        let mut latest = HashMap::from([(key, nodes)]);
        let period = tokio::time::sleep(WRITE_EVERY);
        tokio::pin!(period);
        let closed = loop {
            tokio::select! {
                () = &mut period => break false,
                () = cancel.cancelled() => break true,
                item = rx.recv() => match item {
                    Some((key, nodes)) => { latest.insert(key, nodes); }
                    None => break true,
                },
            }
        };
        let dir = dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            latest
                .iter()
                .map(|(key, nodes)| write(&dir, key, nodes).map_err(|e| (key.clone(), e)))
                .find_map(Result::err)
        })
        .await;
        match written {
            Ok(Some((key, e))) => {
                if !last_failure_logged {
                    warn!(service = %key, error = %e, "cannot write the snapshot file");
                    last_failure_logged = true;
                }
            }
            Ok(None) => last_failure_logged = false,
            Err(_) => {}
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_round_trip_and_junk_is_skipped() {
        let dir = tempfile_dir();
        let nodes: Vec<Node> = (1..=2)
            .map(|p| Arc::new(ServiceMetaInfo::new("users", "10.0.0.1", p)))
            .collect();
        write(&dir, "users:1.0", &nodes).unwrap();
        assert!(path(&dir, "users:1.0").ends_with("users%3A1.0.json"));
        let back = read(&dir, "users:1.0").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].address(), "10.0.0.1:1");
        assert!(read(&dir, "orders:1.0").is_none(), "no file");

        std::fs::write(path(&dir, "bad:1.0"), b"{not json").unwrap();
        assert!(read(&dir, "bad:1.0").is_none(), "corrupt");
        std::fs::copy(path(&dir, "users:1.0"), path(&dir, "other:1.0")).unwrap();
        assert!(read(&dir, "other:1.0").is_none(), "another service's file");
        std::fs::write(
            path(&dir, "old:1.0"),
            br#"{"format":"something-else/9","service":"old:1.0","savedAt":"x","nodes":[]}"#,
        )
        .unwrap();
        assert!(read(&dir, "old:1.0").is_none(), "another format");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "registry-snapshot-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
