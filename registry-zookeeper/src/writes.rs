//! Writing nodes under the ownership rule: create as this session's ephemeral node, never take
//! over another live session's node, delete only this session's nodes, and a graceful close
//! that removes every node it still owns.

use std::collections::HashSet;

use registry_core::BackendError;
use tracing::{debug, warn};
use zookeeper_client as zk;

use crate::backend::Inner;
use crate::own::Written;
use crate::path::{parent, path};
use crate::session::{classify, Session};
use crate::NAME;

/// Nodes of a client with credentials: every permission for its own identity (`auth`), read
/// for everyone else.
static OWNED_NODE: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
];

/// Directories of a client with credentials: everyone may read them and create their own
/// nodes in them, but not delete (nor overwrite) another identity's nodes.
static OWNED_DIR: std::sync::LazyLock<[zk::Acl; 2]> = std::sync::LazyLock::new(|| {
    [
        zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
        zk::Acl::new(
            zk::Permission::READ | zk::Permission::CREATE,
            zk::AuthId::anyone(),
        ),
    ]
});

/// The ACLs of (nodes, directories) created by this client: with credentials, the digest ACLs
/// above; without, open to anyone (ZooKeeper's default `world:anyone`).
fn acls(authenticated: bool) -> (zk::Acls<'static>, zk::Acls<'static>) {
    if authenticated {
        (zk::Acls::new(&OWNED_NODE), zk::Acls::new(&*OWNED_DIR))
    } else {
        (zk::Acls::anyone_all(), zk::Acls::anyone_all())
    }
}

impl Inner {
    /// Creates `key` as an ephemeral node of `client`'s session, making its service directory
    /// when missing. `Ok(false)` when it already exists.
    pub(crate) async fn create(
        &self,
        client: &zk::Client,
        key: &str,
        value: &[u8],
    ) -> Result<bool, BackendError> {
        let session = &self.session;
        let (node_acls, dir_acls) = acls(session.settings.auth.is_some());
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(node_acls);
        let container = zk::CreateMode::Container.with_acls(dir_acls);
        let node = path(key);
        // The service's directory usually exists: create first, make the directory on NoNode.
        for _ in 0..3 {
            let announced = self.own.announce(node, value, client.session_id().0);
            match session
                .raw(
                    || format!("create {node}"),
                    client.create(node, value, &ephemeral),
                )
                .await?
            {
                Ok((stat, _)) => {
                    announced.done(Some(written(&stat)));
                    return Ok(true);
                }
                Err(zk::Error::NodeExists) => return Ok(false),
                // No directory yet (or the empty container was just removed): make it.
                Err(zk::Error::NoNode) => {
                    if let Some(dir) = parent(key) {
                        match session
                            .raw(|| format!("mkdir {dir}"), client.mkdir(dir, &container))
                            .await?
                        {
                            Ok(()) | Err(zk::Error::NodeExists) => {}
                            Err(e) => return Err(classify(e, || format!("mkdir {dir}"))),
                        }
                    }
                }
                Err(e) => return Err(classify(e, || format!("create {node}"))),
            }
        }
        Err(changing(node))
    }

    /// Puts `key` (see [`Backend::put`](registry_core::Backend::put)).
    pub(crate) async fn put(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        let session = &self.session;
        let client = session.get().await?;
        let node = path(key);
        for _ in 0..4 {
            if self.create(&client, key, value).await? {
                return Ok(());
            }
            let (_, stat) = match session
                .raw(|| format!("get {node}"), client.get_data(node))
                .await?
            {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(classify(e, || format!("get {node}"))),
            };
            let ours = client.session_id().0;
            if stat.ephemeral_owner == ours {
                let announced = self.own.announce(node, value, ours);
                match session
                    .raw(
                        || format!("set {node}"),
                        client.set_data(node, value, Some(stat.version)),
                    )
                    .await?
                {
                    Ok(stat) => {
                        announced.done(Some(written(&stat)));
                        return Ok(());
                    }
                    Err(zk::Error::NoNode | zk::Error::BadVersion) => continue,
                    Err(e) => return Err(classify(e, || format!("set {node}"))),
                }
            }
            if stat.ephemeral_owner != 0 {
                // Another live session holds it: not ours to take.
                return Err(BackendError::Held {
                    backend: NAME,
                    key: key.to_owned(),
                    holder: format!("session {:#x}", stat.ephemeral_owner),
                });
            }
            // A persistent znode (written by a tool, no liveness): replace it with ours.
            warn!(
                node,
                "replacing a persistent znode at a node key with this client's ephemeral node"
            );
            match session
                .raw(
                    || format!("delete {node}"),
                    client.delete(node, Some(stat.version)),
                )
                .await?
            {
                Ok(()) | Err(zk::Error::NoNode | zk::Error::BadVersion) => continue,
                Err(e) => return Err(classify(e, || format!("delete {node}"))),
            }
        }
        Err(changing(node))
    }

    /// Writes `key` as an administrator: a persistent znode (created, or its data replaced),
    /// or, with `None`, deletes it whoever holds it.
    pub(crate) async fn admin_write(
        &self,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        let session = &self.session;
        let client = session.get().await?;
        let node = path(key);
        let Some(value) = value else {
            return delete_one(session, &client, node).await;
        };
        let (node_acls, dir_acls) = acls(self.session.settings.auth.is_some());
        let persistent = zk::CreateMode::Persistent.with_acls(node_acls);
        let container = zk::CreateMode::Container.with_acls(dir_acls);
        for _ in 0..3 {
            match session
                .raw(|| format!("set {node}"), client.set_data(node, value, None))
                .await?
            {
                Ok(_) => return Ok(()),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(classify(e, || format!("set {node}"))),
            }
            if let Some(dir) = parent(key) {
                match session
                    .raw(|| format!("mkdir {dir}"), client.mkdir(dir, &container))
                    .await?
                {
                    Ok(()) | Err(zk::Error::NodeExists) => {}
                    Err(e) => return Err(classify(e, || format!("mkdir {dir}"))),
                }
            }
            match session
                .raw(
                    || format!("create {node}"),
                    client.create(node, value, &persistent),
                )
                .await?
            {
                Ok(_) => return Ok(()),
                Err(zk::Error::NodeExists | zk::Error::NoNode) => {}
                Err(e) => return Err(classify(e, || format!("create {node}"))),
            }
        }
        Err(changing(node))
    }

    /// Deletes `key` when this session holds it, or nobody does.
    ///
    /// ZooKeeper has no delete conditional on the owner, only on the data version. A node this
    /// session wrote, and has not seen deleted since, is deleted at the version its write left,
    /// in one request. Otherwise (or when that version is not the node's any more) the node's
    /// owner is read first, then that version deleted. Either way a node another session holds
    /// is left alone, except in one race no version check can tell: someone deletes this
    /// session's node and another session creates one at the same version in the instant
    /// before this delete (before this client hears of the deletion, or between the read and
    /// the delete); that owner's watch of its own node then puts it back.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let session = &self.session;
        let client = session.get().await?;
        let node = path(key);
        let ours = client.session_id().0;
        let held = self.own.held_version(node, ours);
        self.own.forget(node);
        if let Some(version) = held {
            match session
                .raw(
                    || format!("delete {node}"),
                    client.delete(node, Some(version)),
                )
                .await?
            {
                Ok(()) | Err(zk::Error::NoNode) => return Ok(()),
                // Written since by someone else: whose is it now?
                Err(zk::Error::BadVersion) => {}
                Err(e) => return Err(classify(e, || format!("delete {node}"))),
            }
        }
        let stat = session
            .run(|| format!("stat {node}"), client.check_stat(node))
            .await?;
        let Some(stat) = stat else { return Ok(()) };
        if stat.ephemeral_owner != ours && stat.ephemeral_owner != 0 {
            debug!(node, "not deleting a node another session holds");
            return Ok(());
        }
        match session
            .raw(
                || format!("delete {node}"),
                client.delete(node, Some(stat.version)),
            )
            .await?
        {
            // Changed meanwhile (someone else's now, or gone): not ours to delete.
            Ok(()) | Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(()),
            Err(e) => Err(classify(e, || format!("delete {node}"))),
        }
    }

    /// Deletes this session's nodes among `keys`: one `multi` (all-or-nothing), and when that
    /// fails (one node already gone, say), one delete per node, so every node still held is
    /// removed. Reports the nodes it could not remove (they go when the session expires).
    pub(crate) async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        let session = &self.session;
        let client = session.current();
        for key in keys {
            self.own.forget(path(key));
        }
        if keys.is_empty() || client.state().is_terminated() {
            return Ok(());
        }
        let mine: HashSet<String> = session
            .run(
                || "list this session's nodes".into(),
                client.list_ephemerals("/"),
            )
            .await?
            .into_iter()
            .collect();
        let owned: Vec<&str> = keys
            .iter()
            .map(|k| path(k))
            .filter(|p| mine.contains(*p))
            .collect();
        if owned.is_empty() {
            return Ok(());
        }
        let mut writer = client.new_multi_writer();
        for node in &owned {
            writer
                .add_delete(node, None)
                .map_err(|e| classify(e, || format!("delete {node}")))?;
        }
        if let Ok(Ok(_)) = tokio::time::timeout(session.settings.timeout, writer.commit()).await {
            return Ok(());
        }
        let results =
            futures::future::join_all(owned.iter().map(|node| delete_one(session, &client, node)))
                .await;
        let failed: Vec<&str> = owned
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| *n)
            .collect();
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(first) => {
                warn!(nodes = ?failed, "could not delete every node at shutdown; they go when the session expires");
                Err(first)
            }
        }
    }
}

/// Deletes one node whatever its version (a node already gone is fine).
async fn delete_one(
    session: &Session,
    client: &zk::Client,
    node: &str,
) -> Result<(), BackendError> {
    match session
        .raw(|| format!("delete {node}"), client.delete(node, None))
        .await?
    {
        Ok(()) | Err(zk::Error::NoNode) => Ok(()),
        Err(e) => Err(classify(e, || format!("delete {node}"))),
    }
}

/// What a write that took left, from the node's stat after it.
fn written(stat: &zk::Stat) -> Written {
    Written {
        mzxid: stat.mzxid,
        version: stat.version,
    }
}

fn changing(node: &str) -> BackendError {
    BackendError::request(
        NAME,
        format!("create {node}"),
        "the node kept changing under us",
    )
}
