//! The state every request and every open page shares: the model behind one lock, and the
//! broadcast of what changed, pre-rendered once as JSON for every page.
//!
//! Consistency: a change is applied and broadcast under the model's lock, and a page
//! subscribes and takes its snapshot under the same lock, so a page sees exactly the changes
//! after its snapshot (each carries `seq`; the page drops any it already has).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use registry_core::{Registry, ServiceChange};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::model::{epoch_ms, LogEntry, Model, ServiceView};
use crate::options::ConsoleOptions;

/// Messages a page may fall behind by before it is sent a fresh snapshot instead.
const BROADCAST_CAPACITY: usize = 1024;

/// One server-sent event, rendered once for every page.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The SSE event name: `change`, `ttl`, `health`.
    pub(crate) kind: &'static str,
    /// The JSON payload.
    pub(crate) data: String,
}

/// The store's health as last checked.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    /// `None` until the first check.
    pub(crate) ok: Option<bool>,
    /// The error of the last failed check.
    pub(crate) error: Option<String>,
    /// ms since the epoch.
    pub(crate) checked_at: Option<u64>,
}

/// The snapshot a page starts from (`snapshot` event).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    seq: u64,
    now: u64,
    store: serde_json::Value,
    health: Health,
    actions: bool,
    loaded: bool,
    last_change: Option<u64>,
    services: Vec<ServiceView>,
    log: Vec<LogEntry>,
}

/// Shared by the handlers, the feed and the sampler.
pub(crate) struct Hub {
    pub(crate) registry: Registry,
    pub(crate) options: ConsoleOptions,
    model: Mutex<Model>,
    health: Mutex<Health>,
    tx: broadcast::Sender<Arc<Outgoing>>,
    /// Wakes the sampler early (a node appeared: read its TTL now).
    pub(crate) sample_soon: Notify,
    /// Fired when the console stops: the tasks and every open stream end.
    pub(crate) stop: CancellationToken,
}

impl Hub {
    pub(crate) fn new(registry: Registry, options: ConsoleOptions) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            model: Mutex::new(Model::new(options.log_capacity)),
            health: Mutex::new(Health {
                ok: None,
                error: None,
                checked_at: None,
            }),
            registry,
            options,
            tx,
            sample_soon: Notify::new(),
            stop: CancellationToken::new(),
        }
    }

    pub(crate) fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Open pages (the sampler reads TTLs only while there is one).
    pub(crate) fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Whether actions are allowed at all.
    pub(crate) fn actions(&self) -> bool {
        self.options.admin_token.is_some()
    }

    /// The store as the overview names it.
    pub(crate) fn store(&self) -> serde_json::Value {
        json!({
            "kind": self.registry.backend_name(),
            "address": self.options.store_address,
            "root": self.registry.options().keys.root(),
        })
    }

    /// Applies one change of the root subscription and tells every page.
    pub(crate) fn apply(&self, change: &ServiceChange) {
        let mut model = self.model();
        let deltas = model.apply(change, SystemTime::now());
        if deltas.is_empty() {
            return;
        }
        let data = json!({
            "seq": model.seq,
            "at": model.last_change,
            "stale": change.stale,
            "changes": deltas,
        });
        let log_seq = model.seq;
        let log: Vec<LogEntry> = model
            .log(None)
            .into_iter()
            .rev()
            .take_while(|e| e.seq == log_seq)
            .collect();
        let data = json!({ "change": data, "log": log });
        self.send(&model, "change", &data);
        drop(model);
        self.sample_soon.notify_one();
    }

    /// Records a health check; tells the pages when it changed.
    pub(crate) fn set_health(&self, result: Result<(), String>) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let was = (health.ok, health.error.clone());
        health.checked_at = Some(epoch_ms(SystemTime::now()));
        match result {
            Ok(()) => (health.ok, health.error) = (Some(true), None),
            Err(e) => (health.ok, health.error) = (Some(false), Some(e)),
        }
        if was != (health.ok, health.error.clone()) {
            let health = health.clone();
            let model = self.model();
            self.send(&model, "health", &json!(health));
        }
    }

    /// Records the TTL deadlines read from the store; tells the pages of those that moved.
    pub(crate) fn set_deadlines(
        &self,
        read: std::collections::HashMap<(String, String), u64>,
        tolerance_ms: u64,
    ) {
        let mut model = self.model();
        let moved = model.set_deadlines(read, tolerance_ms);
        if !moved.is_empty() {
            let data = json!({ "now": epoch_ms(SystemTime::now()), "expires": moved });
            self.send(&model, "ttl", &data);
        }
    }

    /// Sends under the model's lock (the caller holds it), so ordering matches `seq`.
    fn send(&self, _model: &Model, kind: &'static str, data: &serde_json::Value) {
        let data = data.to_string();
        // No receiver: no page open, nothing to do.
        let _ = self.tx.send(Arc::new(Outgoing { kind, data }));
    }

    /// A new page: its receiver and its snapshot, taken together.
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<Arc<Outgoing>>, String) {
        let health = self.health();
        let model = self.model();
        let rx = self.tx.subscribe();
        let snapshot = self.snapshot_of(&model, health);
        drop(model);
        self.sample_soon.notify_one();
        (rx, snapshot)
    }

    /// A fresh snapshot for a page that fell behind (it drops the changes it already has).
    pub(crate) fn snapshot(&self) -> String {
        let health = self.health();
        let model = self.model();
        self.snapshot_of(&model, health)
    }

    fn snapshot_of(&self, model: &Model, health: Health) -> String {
        let snapshot = Snapshot {
            seq: model.seq,
            now: epoch_ms(SystemTime::now()),
            store: self.store(),
            health,
            actions: self.actions(),
            loaded: model.loaded,
            last_change: model.last_change,
            services: model.services(),
            log: model.log(None),
        };
        serde_json::to_string(&snapshot).unwrap_or_else(|_| "{}".to_owned())
    }
}
