//! This client's own writes, remembered so that its watches need not read them back.
//!
//! ZooKeeper's watch events carry no data: a created or changed node is read (`getData`), a
//! second request for each registration a client watches itself (a provider watches the
//! services it registers). For a node this client writes, the value is known: the write is
//! announced before it is sent, and a watch that gets the node's event waits for the write's
//! answer (it is already on its way: ZooKeeper sends a session the watch event before the
//! answer to the request that fired it) and takes the value and `mzxid` from it. Only when the
//! write succeeded and its `mzxid` is above what the watch has seen: an event from before it
//! (another session's node at that path, gone since) or after it (a later change) is read from
//! the store as before.
//!
//! The same record lets a deregistration delete in one request: a node this session wrote
//! and has not seen deleted since is deleted at the version its write left (see
//! [`OwnWrites::held_version`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// A write the store took: the node's `mzxid` and data version after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) mzxid: i64,
    pub(crate) version: i32,
}

/// What became of a write: `None` while it runs, then what it wrote, or `None` inside when
/// it did not write.
type Outcome = Option<Option<Written>>;

/// One announced write.
struct Write {
    value: Vec<u8>,
    /// The session that sent it.
    session: i64,
    outcome: watch::Receiver<Outcome>,
}

/// The writes of this client, by node path: the last one per node, kept until the node is
/// deleted by this client (one value per node this client holds).
#[derive(Default)]
pub(crate) struct OwnWrites {
    writes: Mutex<HashMap<String, Arc<Write>>>,
}

/// A write announced and not answered yet; [`done`](Self::done) says how it went (dropped
/// without it: it did not write).
pub(crate) struct Announced<'a> {
    own: &'a OwnWrites,
    node: String,
    write: Arc<Write>,
    outcome: watch::Sender<Outcome>,
}

impl OwnWrites {
    fn writes(&self) -> MutexGuard<'_, HashMap<String, Arc<Write>>> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Announces a write of `value` at `node` by `session`, before it is sent.
    pub(crate) fn announce(&self, node: &str, value: &[u8], session: i64) -> Announced<'_> {
        let (outcome, receiver) = watch::channel(None);
        let write = Arc::new(Write {
            value: value.to_vec(),
            session,
            outcome: receiver,
        });
        self.writes().insert(node.to_owned(), Arc::clone(&write));
        Announced {
            own: self,
            node: node.to_owned(),
            write,
            outcome,
        }
    }

    /// Forgets `node`: this client deleted it, or saw it deleted.
    pub(crate) fn forget(&self, node: &str) {
        self.writes().remove(node);
    }

    /// Forgets every write: events may have been missed (a disconnection), so none of them is
    /// known to hold its node any more.
    pub(crate) fn forget_all(&self) {
        self.writes().clear();
    }

    /// The data version `session`'s last write at `node` left, when that write is answered,
    /// took, and the node has not been seen deleted since (nor events missed): the node this
    /// session holds, unless someone deleted it and another session took the path in the
    /// instant before this client heard of it (as a stat read then a versioned delete could
    /// not tell either). `None` otherwise: the caller reads the node's owner.
    pub(crate) fn held_version(&self, node: &str, session: i64) -> Option<i32> {
        let writes = self.writes();
        let write = writes.get(node)?;
        if write.session != session {
            return None;
        }
        let outcome = *write.outcome.borrow();
        outcome.flatten().map(|w| w.version)
    }

    /// The value and `mzxid` of this client's last write at `node`, when it wrote and its
    /// `mzxid` is above `seen`; waits for the write's answer when it is on its way.
    pub(crate) async fn written_after(&self, node: &str, seen: i64) -> Option<(Vec<u8>, i64)> {
        let write = self.writes().get(node).cloned()?;
        let mut outcome = write.outcome.clone();
        let Written { mzxid, .. } = (*outcome.wait_for(Option::is_some).await.ok()?)??;
        (mzxid > seen).then(|| (write.value.clone(), mzxid))
    }
}

impl Announced<'_> {
    /// The write is answered: written, or not (`None`).
    pub(crate) fn done(self, written: Option<Written>) {
        // Sent before forgetting: a watch waiting on it must not wait for ever.
        let _ = self.outcome.send(Some(written));
        if written.is_none() {
            self.forget_failed();
        }
    }

    fn forget_failed(&self) {
        let mut writes = self.own.writes();
        if writes
            .get(&self.node)
            .is_some_and(|w| Arc::ptr_eq(w, &self.write))
        {
            writes.remove(&self.node);
        }
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        // Not answered (cancelled, failed before sending): as not written.
        if self.outcome.borrow().is_none() {
            let _ = self.outcome.send(Some(None));
            self.forget_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i64 = 0x51;

    fn written(mzxid: i64, version: i32) -> Option<Written> {
        Some(Written { mzxid, version })
    }

    #[tokio::test]
    async fn a_watch_takes_a_write_it_has_not_seen_and_waits_for_its_answer() {
        let own = OwnWrites::default();
        let announced = own.announce("/rpc/a:1.0/h:1", b"v1", SESSION);
        let waiting = own.written_after("/rpc/a:1.0/h:1", 10);
        let answer = async { announced.done(written(12, 0)) };
        let (written, ()) = tokio::join!(waiting, answer);
        assert_eq!(written, Some((b"v1".to_vec(), 12)));
        // Seen already (a later event at that path): read from the store.
        assert_eq!(own.written_after("/rpc/a:1.0/h:1", 12).await, None);
        own.forget("/rpc/a:1.0/h:1");
        assert_eq!(own.written_after("/rpc/a:1.0/h:1", 0).await, None);
    }

    #[tokio::test]
    async fn a_write_that_failed_or_was_dropped_is_not_taken() {
        let own = OwnWrites::default();
        own.announce("/n", b"v", SESSION).done(None);
        assert_eq!(own.written_after("/n", 0).await, None);
        drop(own.announce("/n", b"v", SESSION));
        assert_eq!(own.written_after("/n", 0).await, None);
        // A failed write does not remove a later one.
        let first = own.announce("/n", b"v1", SESSION);
        let second = own.announce("/n", b"v2", SESSION);
        first.done(None);
        second.done(written(5, 1));
        assert_eq!(own.written_after("/n", 0).await, Some((b"v2".to_vec(), 5)));
    }

    #[test]
    fn a_node_is_held_at_the_version_of_a_write_that_took_in_this_session() {
        let own = OwnWrites::default();
        // Not answered yet, failed, or dropped: not known to be held.
        let pending = own.announce("/n", b"v", SESSION);
        assert_eq!(own.held_version("/n", SESSION), None);
        pending.done(written(7, 3));
        assert_eq!(own.held_version("/n", SESSION), Some(3));
        // Another session (this client's session expired and was replaced): not held.
        assert_eq!(own.held_version("/n", SESSION + 1), None);
        own.announce("/n", b"v", SESSION).done(None);
        assert_eq!(own.held_version("/n", SESSION), None);
        drop(own.announce("/n", b"v", SESSION));
        assert_eq!(own.held_version("/n", SESSION), None);
        // Seen deleted, or events missed: not held any more.
        own.announce("/n", b"v", SESSION).done(written(8, 0));
        own.forget("/n");
        assert_eq!(own.held_version("/n", SESSION), None);
        own.announce("/n", b"v", SESSION).done(written(9, 0));
        own.announce("/m", b"v", SESSION).done(written(10, 0));
        own.forget_all();
        assert_eq!(own.held_version("/n", SESSION), None);
        assert_eq!(own.held_version("/m", SESSION), None);
    }
}
