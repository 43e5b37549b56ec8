//! The log setup of the programs built on the registry (`registryctl`, the examples): `tracing`
//! events to stderr (stdout is the programs' own output), filtered by `RUST_LOG`, `warn` when it
//! is not set. Feature `logging`.

/// Installs the subscriber. Does nothing when one is already installed.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}
