//! Never published: what the tests of every backend share, written once.
//!
//! - [`checks`] and [`conformance_tests!`]: the conformance suite, the behaviour every backend
//!   must show. A backend's test file provides a [`Harness`] (usually a [`StoreHarness`]: a
//!   [`BackendUnderTest`] plus the store's own [`RawStore`] writes) and expands the macro:
//!
//!   ```ignore
//!   async fn harness() -> MyHarness { ... }
//!   registry_conformance::conformance_tests!(harness);
//!   ```
//! - [`faults`]: scenarios under a failing server ([`restart_without_data`],
//!   [`pause_beyond_ttl`]); the test inflicts each [`Fault`] on its server.
//! - [`Target`]: a store (address and connect function) that makes registry clients and
//!   backends as separate processes would have them; [`BackendUnderTest`]: a server started
//!   for a test with its target, and the fault scenarios on it.
//! - helpers: [`eventually`], [`addresses`], [`Recorder`], [`svc`], [`svc_addresses`],
//!   [`options`], [`default_options`], [`init_tracing`].
//! - [`ha`]: one fault on a store's high-availability setup, watched from outside
//!   ([`survive`], [`HaReport`]).
//! - [`converge`]: random registrations from several clients under random faults, then every
//!   consumer's cache equals the store equals what the registrars want
//!   ([`converge_under_faults`]).
//! - [`measure`]: measurements the benchmark binaries share.
//!
//! Panicking is how this crate reports a failure: it is only ever used by tests and
//! benchmarks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod checks;
pub mod converge;
pub mod faults;
pub mod ha;
pub mod harness;
pub mod measure;
mod observe;
mod target;
mod under_test;

pub use converge::{converge_under_faults, ConvergeReport, ConvergeRun};
pub use faults::{pause_beyond_ttl, restart_without_data, Fault};
pub use ha::{survive, HaReport};
pub use harness::{default_options, options, Harness, RawStore, StoreHarness};
pub use observe::{addresses, eventually, svc, svc_addresses, Recorder};
pub use target::Target;
pub use under_test::BackendUnderTest;

/// Logs of a backend's tests: `RUST_LOG` (default `warn`) to the test's captured output.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
