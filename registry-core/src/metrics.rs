//! What the registry records through the [`metrics`](https://docs.rs/metrics) facade: nothing
//! is kept unless the program installs a recorder (a Prometheus exporter, say), and then every
//! series below is labelled with the `backend` name. The names are defined here once; the
//! README's table lists them with their labels.
//!
//! Install the recorder before creating the [`Registry`](crate::Registry): the cache-hit
//! counters are registered once per registry (so a hit costs one increment and allocates
//! nothing), with the recorder installed at that time.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `registry_registered_nodes` | gauge | backend | nodes this process keeps registered |
//! | `registry_register_total` | counter | backend, outcome (`ok`, `error`) | `register` calls |
//! | `registry_unregister_total` | counter | backend, outcome | `unregister` calls |
//! | `registry_heartbeats_total` | counter | backend, outcome (`ok`, `lost`, `error`) | keep-alives: renewed, liveness lost, failed |
//! | `registry_reregistrations_total` | counter | backend, reason (`liveness_lost`, `missing`, `deleted`) | nodes put back after the store lost them |
//! | `registry_watch_events_total` | counter | backend | store changes applied to the cache |
//! | `registry_relists_total` | counter | backend, reason (`history_lost`, `eviction`) | services listed again |
//! | `registry_cache_hits_total` | counter | backend | `discover` answered by the cache |
//! | `registry_cache_misses_total` | counter | backend | `discover` that listed the store |
//! | `registry_stale_services` | gauge | backend | services served stale (kept by a protection while the store shows fewer nodes) |
//! | `registry_event_to_listener_seconds` | histogram | backend | from a change applied to the cache to a listener or stream receiving it |

use metrics::{counter, gauge, histogram};

/// `registry_registered_nodes`.
pub const REGISTERED_NODES: &str = "registry_registered_nodes";
/// `registry_register_total`.
pub const REGISTER_TOTAL: &str = "registry_register_total";
/// `registry_unregister_total`.
pub const UNREGISTER_TOTAL: &str = "registry_unregister_total";
/// `registry_heartbeats_total`.
pub const HEARTBEATS_TOTAL: &str = "registry_heartbeats_total";
/// `registry_reregistrations_total`.
pub const REREGISTRATIONS_TOTAL: &str = "registry_reregistrations_total";
/// `registry_watch_events_total`.
pub const WATCH_EVENTS_TOTAL: &str = "registry_watch_events_total";
/// `registry_relists_total`.
pub const RELISTS_TOTAL: &str = "registry_relists_total";
/// `registry_cache_hits_total`.
pub const CACHE_HITS_TOTAL: &str = "registry_cache_hits_total";
/// `registry_cache_misses_total`.
pub const CACHE_MISSES_TOTAL: &str = "registry_cache_misses_total";
/// `registry_stale_services`.
pub const STALE_SERVICES: &str = "registry_stale_services";
/// `registry_event_to_listener_seconds`.
pub const EVENT_TO_LISTENER_SECONDS: &str = "registry_event_to_listener_seconds";

fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

pub(crate) fn registered_nodes(backend: &'static str, nodes: usize) {
    gauge!(REGISTERED_NODES, "backend" => backend).set(nodes as f64);
}

pub(crate) fn register(backend: &'static str, ok: bool) {
    counter!(REGISTER_TOTAL, "backend" => backend, "outcome" => outcome(ok)).increment(1);
}

pub(crate) fn unregister(backend: &'static str, ok: bool) {
    counter!(UNREGISTER_TOTAL, "backend" => backend, "outcome" => outcome(ok)).increment(1);
}

pub(crate) fn heartbeat(backend: &'static str, outcome: &'static str) {
    counter!(HEARTBEATS_TOTAL, "backend" => backend, "outcome" => outcome).increment(1);
}

pub(crate) fn reregistrations(backend: &'static str, reason: &'static str, nodes: usize) {
    counter!(REREGISTRATIONS_TOTAL, "backend" => backend, "reason" => reason)
        .increment(nodes as u64);
}

pub(crate) fn watch_events(backend: &'static str, events: usize) {
    counter!(WATCH_EVENTS_TOTAL, "backend" => backend).increment(events as u64);
}

pub(crate) fn relist(backend: &'static str, reason: &'static str) {
    counter!(RELISTS_TOTAL, "backend" => backend, "reason" => reason).increment(1);
}

/// The counters of the lookup path, registered once per registry.
pub(crate) struct LookupCounters {
    pub(crate) hits: metrics::Counter,
    pub(crate) misses: metrics::Counter,
}

impl LookupCounters {
    pub(crate) fn new(backend: &'static str) -> Self {
        Self {
            hits: counter!(CACHE_HITS_TOTAL, "backend" => backend),
            misses: counter!(CACHE_MISSES_TOTAL, "backend" => backend),
        }
    }
}

pub(crate) fn stale_changed(backend: &'static str, stale: bool) {
    let g = gauge!(STALE_SERVICES, "backend" => backend);
    if stale {
        g.increment(1.0);
    } else {
        g.decrement(1.0);
    }
}

pub(crate) fn event_to_listener(backend: &'static str, elapsed: std::time::Duration) {
    histogram!(EVENT_TO_LISTENER_SECONDS, "backend" => backend).record(elapsed.as_secs_f64());
}
