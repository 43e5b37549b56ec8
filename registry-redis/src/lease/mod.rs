//! The liveness of one client's nodes: one lease, pushed by one short script per heartbeat
//! whatever the number of nodes, and what the client knows its lease holds.
//!
//! The client remembers the nodes it put on its lease (`held`) and the puts in flight. A
//! heartbeat ([`Lease::keep_alive`]) pushes the lease's deadline and learns how many nodes the
//! lease holds in the store; it asks which ones only when:
//!
//! - that count is not what the client expects (a node taken away from the lease by a script:
//!   another client's put or reaper after the lease expired, a delete by a client that found
//!   it dead, writes lost by the store). One `audit` script call lists the nodes the lease
//!   lacks (reported missing, so the core puts them back) and those it holds unasked (put
//!   back on a lost delete: deleted again unless still wanted);
//! - the client met a server with another replication history since its last audit (a
//!   failover or a restart: the last writes may be lost whatever the count says);
//! - client tracking reported node keys changed or deleted (see `tracking`): those are read
//!   again, those without a value reported missing.
//!
//! A lease that is gone or whose deadline passed is [`Liveness::Lost`]: the client takes a
//! new lease id (its generation goes up) and the core puts every node again; a put that meets
//! its own lease expired does the same. Lease ids are `<client id>.<generation>`: a client
//! takes its own nodes over from an older lease of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use registry_core::{BackendError, Liveness};
use tracing::debug;

use crate::link::Link;
use crate::scripts::{
    lease_set, meta_keys, report_rebase, Scripts, CHECK_BATCH, LEASES, MAX_CHANGES,
};
use crate::tracking::Tracker;

mod audit;

/// What the client knows of its lease.
#[derive(Default)]
struct State {
    /// The lease id now in use.
    id: String,
    /// Nodes put on the lease (and not deleted since).
    held: HashSet<String>,
    /// Puts in flight, per node.
    putting: HashMap<String, usize>,
    /// A put found the lease expired: the next heartbeat reports it lost.
    lost: bool,
    /// The replication id of the server of the last audit (or of the first connection).
    audited: Option<Arc<str>>,
}

/// The outcome of a put, for [`Lease::put_done`].
pub(crate) enum PutOutcome {
    /// Written on lease `id`.
    Written,
    /// Not written (held by another client, or failed).
    NotWritten,
}

/// One client's lease.
pub(crate) struct Lease {
    /// The prefix of every lease id of this client (`<client id>.`).
    client: String,
    generation: AtomicU64,
    state: Mutex<State>,
    tracker: Tracker,
    /// The lease's TTL (the grace leases get on a new history).
    ttl: Duration,
}

impl Lease {
    pub(crate) fn new(tracker: Tracker, ttl: Duration) -> Self {
        let client = format!("{:016x}.", rand::random::<u64>());
        Lease {
            state: Mutex::new(State {
                id: format!("{client}1"),
                ..State::default()
            }),
            client,
            generation: AtomicU64::new(1),
            tracker,
            ttl,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The prefix of this client's lease ids.
    pub(crate) fn client(&self) -> &str {
        &self.client
    }

    /// The lease id now in use.
    pub(crate) fn id(&self) -> String {
        self.state().id.clone()
    }

    /// The server the client first talked to: no audit is due for it.
    pub(crate) fn first_server(&self, replid: Arc<str>) {
        self.state().audited.get_or_insert(replid);
    }

    /// A put of `key` starts; returns the lease id to put it on.
    pub(crate) fn put_starts(&self, key: &str) -> String {
        let mut state = self.state();
        *state.putting.entry(key.to_owned()).or_default() += 1;
        state.id.clone()
    }

    /// The put of `key` on lease `id` ended.
    pub(crate) fn put_done(&self, key: &str, id: &str, outcome: PutOutcome) {
        let mut state = self.state();
        if let Some(n) = state.putting.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                state.putting.remove(key);
            }
        }
        match outcome {
            PutOutcome::Written if state.id == id => {
                state.held.insert(key.to_owned());
                drop(state);
                self.tracker.written(key);
            }
            // Written on a lease given up since: the core puts it again on the new one.
            PutOutcome::Written => {}
            PutOutcome::NotWritten => {
                state.held.remove(key);
            }
        }
    }

    /// A put on lease `id` found it expired: a new lease, and the next heartbeat reports the
    /// old one lost (so every node is put again).
    pub(crate) fn expired(&self, id: &str) {
        let mut state = self.state();
        if state.id == id {
            self.renew(&mut state);
            state.lost = true;
        }
    }

    fn renew(&self, state: &mut State) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        state.id = format!("{}{generation}", self.client);
        state.held.clear();
        debug!(lease = %state.id, "new lease");
    }

    /// `keys` are being deleted: the lease no longer holds them.
    pub(crate) fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        let mut state = self.state();
        for key in keys {
            state.held.remove(key);
        }
    }

    /// One heartbeat (see the module docs); `wanted` are the nodes the core wants.
    ///
    /// # Errors
    /// The store's error when the lease could not be pushed or the audit failed.
    pub(crate) async fn keep_alive(
        &self,
        link: &Link,
        scripts: &Scripts,
        wanted: &[String],
        ttl: Duration,
    ) -> Result<Liveness, BackendError> {
        // What the store's count may be: every node held now was attached before the script
        // runs (its put is done; requests on the connection run in order), and at most the
        // puts in flight now add to it (a put started later runs after the script).
        let (id, low, high) = {
            let mut state = self.state();
            if std::mem::take(&mut state.lost) {
                return Ok(Liveness::Lost);
            }
            if state.held.is_empty() {
                // Nothing written yet (or all of it lost): nothing to keep alive. (A put in
                // flight makes the lease itself.)
                return Ok(Liveness::Alive {
                    missing: Vec::new(),
                });
            }
            let low = state.held.len();
            let in_flight = state
                .putting
                .keys()
                .filter(|k| !state.held.contains(*k))
                .count();
            (state.id.clone(), low, low + in_flight)
        };
        let mut invocation = scripts.keep_alive.prepare_invoke();
        invocation
            .key(LEASES)
            .key(lease_set(&id))
            .arg(&id)
            .arg(ttl.as_millis() as u64);
        let (count, replid): (i64, Arc<str>) = link
            .run_traced(
                || "keep-alive".into(),
                |mut conn, replid| async move { invocation.arg(&*replid).invoke_async(&mut conn).await },
            )
            .await?;
        let (candidates, audit, held) = {
            let mut state = self.state();
            if state.id != id {
                // A put found the lease expired meanwhile.
                state.lost = false;
                return Ok(Liveness::Lost);
            }
            if count < 0 {
                self.renew(&mut state);
                return Ok(Liveness::Lost);
            }
            let count = count as usize;
            let new_server =
                !replid.is_empty() && state.audited.as_ref().is_some_and(|a| **a != *replid);
            let audit = new_server || count < low || count > high;
            if audit {
                debug!(
                    count,
                    expected = low,
                    in_flight = high - low,
                    new_server,
                    "the lease holds other nodes than this client put, or the server changed: \
                     checking which"
                );
            }
            let tracked = self.tracker.due(&state.held);
            let held: Vec<String> = if audit {
                state.held.iter().cloned().collect()
            } else {
                Vec::new()
            };
            (tracked, audit, held)
        };
        let mut missing: HashSet<String> =
            self.tracker.missing(candidates).await.into_iter().collect();
        if audit {
            let (lacking, unasked) = self.audit(link, scripts, &id, held).await?;
            missing.extend(lacking);
            self.settle(link, scripts, &id, wanted, unasked).await?;
            self.state().audited = Some(replid);
        }
        if !missing.is_empty() {
            debug!(
                missing = missing.len(),
                "nodes lost by the store, putting them back"
            );
        }
        Ok(Liveness::Alive {
            missing: missing.into_iter().collect(),
        })
    }

    /// Deletes `keys` this client holds (or nobody does); with `close`, the lease ends too
    /// once no node is left on it.
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn delete(
        &self,
        link: &Link,
        scripts: &Scripts,
        id: &str,
        keys: &[String],
        close: bool,
    ) -> Result<(), BackendError> {
        for chunk in keys.chunks(CHECK_BATCH) {
            let mut invocation = scripts.delete.prepare_invoke();
            meta_keys(&mut invocation);
            invocation.key(lease_set(id));
            for key in chunk {
                invocation.key(key.as_str());
            }
            invocation
                .arg(MAX_CHANGES)
                .arg(id)
                .arg(&self.client)
                .arg(if close { "1" } else { "0" })
                .arg(self.ttl.as_millis() as u64);
            let (rebased, _): (Vec<Vec<u8>>, i64) = link
                .run(
                    || match chunk {
                        [one] => format!("delete {one}"),
                        _ => format!("delete {} nodes", chunk.len()),
                    },
                    |mut conn, replid| async move {
                        invocation.arg(&*replid).invoke_async(&mut conn).await
                    },
                )
                .await?;
            report_rebase(&rebased);
        }
        Ok(())
    }
}
