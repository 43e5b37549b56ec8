//! The registry's one watch of the overrides records (see [`crate::overrides`]).
//!
//! The records live beside the services (`<root>~overrides/<service>`), so no service's watch
//! sees them: one task lists the whole tree, watches it from the listing's revision, and hands
//! each record to the cache entries of its service (and to the entry of the whole root, when
//! `watch_all` made one). It starts with the first cached service. Until its first listing
//! succeeds nodes are served as their owners registered them; a broken watch keeps the last
//! records and watches again, lost history lists again.
//!
//! Lock order: the records, then an entry's state. Both the task (a record changed) and a new
//! entry (its first records) apply under the records lock, so a new entry never ends with an
//! older record than the one the task holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt as _;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::state::{decode_overrides, decode_overrides_listing, Cause, ServiceState};
use super::{Entries, ServiceEntry};
use crate::backend::{Backend, BackendError, Revision, WatchEvent};
use crate::backoff::{jitter, Backoff};
use crate::options::RegistryOptions;
use crate::overrides::Overrides;
use crate::tasks::Tasks;
use crate::util::{error_chain, sleep_or_cancel};

/// The records as last seen, and the task that keeps them current.
#[derive(Default)]
pub(crate) struct OverridesWatch {
    records: Mutex<HashMap<String, Overrides>>,
    started: OnceCell<()>,
}

impl OverridesWatch {
    fn records(&self) -> MutexGuard<'_, HashMap<String, Overrides>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives a state about to be published its records (every record for the root's).
    pub(crate) fn seed(&self, state: &mut ServiceState) {
        let records = self.records();
        seed(&records, state);
    }

    /// Gives a new entry the records seen since it was seeded (usually none).
    pub(crate) fn catch_up(&self, entry: &ServiceEntry) {
        let records = self.records();
        let mut state = entry.lock();
        if seed(&records, &mut state) {
            entry.republish(&mut state, Cause::Event);
        }
    }

    /// Lists the records (once per registry, waiting at most one request timeout) and starts
    /// the task that watches them. Later calls return at once.
    pub(crate) async fn start(
        self: &Arc<Self>,
        backend: &Arc<dyn Backend>,
        options: &Arc<RegistryOptions>,
        entries: &Arc<Entries>,
        tasks: &Tasks,
    ) {
        self.started
            .get_or_init(|| async {
                let prefix = options.keys.overrides_prefix();
                let revision = match super::list(&**backend, &prefix, options.timeout).await {
                    Ok(listing) => {
                        *self.records() = decode_overrides_listing(&options.keys, &listing.entries);
                        Some(listing.revision)
                    }
                    Err(error) => {
                        warn!(
                            %prefix,
                            error = %error_chain(&error),
                            "cannot read the overrides records yet: serving nodes without them until the store answers"
                        );
                        None
                    }
                };
                let task = run(
                    self.clone(),
                    backend.clone(),
                    options.clone(),
                    entries.clone(),
                    revision,
                    tasks.child_token(),
                );
                tasks.spawn(task);
            })
            .await;
    }
}

/// Sets the records `state` serves; true when one changed.
fn seed(records: &HashMap<String, Overrides>, state: &mut ServiceState) -> bool {
    let service = state.service_key().clone();
    if service.is_empty() {
        let mut changed = false;
        for (s, o) in records {
            changed |= state.set_overrides(s, Some(o));
        }
        // Records gone while this state was not told.
        for s in state.overridden_services() {
            if !records.contains_key(&s) {
                changed |= state.set_overrides(&s, None);
            }
        }
        changed
    } else {
        state.set_overrides(&service, records.get(&*service))
    }
}

/// Hands `service`'s record (`None`: deleted) to the entries serving it.
fn hand_over(entries: &Entries, service: &str, record: Option<&Overrides>) {
    for key in [service, ""] {
        if let Some(entry) = entries.get(key) {
            let mut state = entry.lock();
            if state.set_overrides(service, record) {
                entry.republish(&mut state, Cause::Event);
            }
        }
    }
}

async fn run(
    shared: Arc<OverridesWatch>,
    backend: Arc<dyn Backend>,
    options: Arc<RegistryOptions>,
    entries: Arc<Entries>,
    mut revision: Option<Revision>,
    cancel: CancellationToken,
) {
    let keys = &options.keys;
    let prefix = keys.overrides_prefix();
    let mut backoff = Backoff::new(options.retry_initial, options.retry_max);
    let mut failing = false;
    loop {
        let Some(from) = revision else {
            // List (again), replacing every record.
            let listed = tokio::select! {
                () = cancel.cancelled() => return,
                listed = super::list(&*backend, &prefix, options.timeout) => listed,
            };
            match listed {
                Ok(listing) => {
                    let fresh = decode_overrides_listing(keys, &listing.entries);
                    let mut records = shared.records();
                    let gone: Vec<String> = records
                        .keys()
                        .filter(|s| !fresh.contains_key(*s))
                        .cloned()
                        .collect();
                    for service in gone {
                        records.remove(&service);
                        hand_over(&entries, &service, None);
                    }
                    for (service, record) in fresh {
                        if records.get(&service) != Some(&record) {
                            hand_over(&entries, &service, Some(&record));
                            records.insert(service, record);
                        }
                    }
                    drop(records);
                    revision = Some(listing.revision);
                    if std::mem::take(&mut failing) {
                        info!(%prefix, "overrides watch restored");
                    }
                    backoff.reset();
                }
                Err(error) => {
                    debug!(%prefix, error = %error_chain(&error), "listing the overrides records failed");
                    if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                        return;
                    }
                }
            }
            continue;
        };
        let mut stream = backend.watch(&prefix, from.saturating_sub(1));
        loop {
            let item = tokio::select! {
                () = cancel.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(event)) => {
                    backoff.reset();
                    if std::mem::take(&mut failing) {
                        info!(%prefix, "overrides watch restored");
                    }
                    revision = Some(event.revision());
                    let Some(service) = keys.split_overrides_path(event.key()) else {
                        continue;
                    };
                    let record = match &event {
                        WatchEvent::Put { kv, .. } => decode_overrides(kv),
                        WatchEvent::Delete { .. } => None,
                    };
                    let mut records = shared.records();
                    if records.get(service) != record.as_ref() {
                        hand_over(&entries, service, record.as_ref());
                        match record {
                            Some(record) => records.insert(service.to_owned(), record),
                            None => records.remove(service),
                        };
                    }
                }
                Some(Err(BackendError::HistoryLost { reason })) => {
                    debug!(%prefix, %reason, "overrides watch history lost, listing again");
                    revision = None;
                    break;
                }
                Some(Err(error)) => {
                    if !std::mem::replace(&mut failing, true) {
                        warn!(%prefix, error = %error_chain(&error), "overrides watch failed, keeping the last records and watching again");
                    }
                    break;
                }
                None => break,
            }
        }
        drop(stream);
        // A broken watch backs off; a lost history lists again after the same jittered
        // cooldown as a service's watch, so a store that keeps losing history is not spun on.
        let pause = match revision {
            Some(_) => backoff.next_delay(),
            None => jitter(options.relist_cooldown),
        };
        if !sleep_or_cancel(pause, &cancel).await {
            return;
        }
    }
}
