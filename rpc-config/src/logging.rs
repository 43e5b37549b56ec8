//! The log and metrics setup of the programs built on the registry (`registryctl`, the
//! examples): `tracing` events to stderr (stdout is the programs' own output), filtered by
//! `RUST_LOG`, `warn` when it is not set (feature `logging`); the metrics the registry and the
//! runtime record, in Prometheus format on an HTTP listener (feature `prometheus`).

/// Installs the subscriber. Does nothing when one is already installed.
#[cfg(feature = "logging")]
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

/// Why the metrics endpoint could not be started.
#[cfg(feature = "prometheus")]
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {address}")]
pub struct MetricsError {
    address: std::net::SocketAddr,
    #[source]
    source: metrics_exporter_prometheus::BuildError,
}

/// Serves every metric recorded from now on at `http://ADDRESS/metrics` (any path answers),
/// in Prometheus' text format. Call it inside a Tokio runtime, before creating registries
/// (see `registry_core::metrics`).
///
/// # Errors
/// [`MetricsError`] when the listener cannot be bound or a recorder is already installed.
#[cfg(feature = "prometheus")]
pub fn serve_metrics(address: std::net::SocketAddr) -> Result<(), MetricsError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(address)
        .install()
        .map_err(|source| MetricsError { address, source })
}
