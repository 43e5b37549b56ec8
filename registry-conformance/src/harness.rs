//! How a backend's tests plug into the suite: the [`Harness`] trait, the generic
//! [`StoreHarness`] for a [`BackendUnderTest`], and the options every check uses.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;
use registry_core::{EmptyProtection, Registry, RegistryOptions};

use crate::BackendUnderTest;

/// How a backend's tests plug into the suite.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new registry client on the store under test, as a separate process would have.
    async fn client(&self, options: RegistryOptions) -> Registry;
    /// Deletes `key` directly in the store, behind every registry's back.
    async fn delete_raw(&self, key: &str);
    /// Writes `value` at `key` directly in the store, without liveness.
    async fn put_raw(&self, key: &str, value: &[u8]);
    /// TTL and heartbeat interval the suite uses (small, so expiry tests are quick).
    fn timing(&self) -> (Duration, Duration) {
        (Duration::from_secs(2), Duration::from_millis(500))
    }
}

/// Options with the harness timing under a fresh random root.
pub fn options(h: &dyn Harness) -> RegistryOptions {
    let (ttl, heartbeat) = h.timing();
    options_with(ttl, heartbeat)
}

/// Options with the suite's default timing (TTL 2 s, heartbeat 500 ms) under a fresh random
/// root: for a backend's own fault tests.
pub fn default_options() -> RegistryOptions {
    options_with(Duration::from_secs(2), Duration::from_millis(500))
}

fn options_with(ttl: Duration, heartbeat: Duration) -> RegistryOptions {
    let root = format!("/conformance-{:016x}/", rand::rng().random::<u64>());
    RegistryOptions::default()
        .with_root(&root)
        .with_ttl(ttl)
        .with_heartbeat_interval(heartbeat)
        .with_timeout(Duration::from_secs(5))
        .with_retry(Duration::from_millis(50), Duration::from_millis(500))
        .with_relist_cooldown(Duration::from_millis(100))
        .with_empty_protection(EmptyProtection::Off)
}

/// Writes behind the registry's back, in a store's own terms: the one store-specific part of
/// a [`StoreHarness`].
#[async_trait]
pub trait RawStore: Send + Sync + 'static {
    /// Deletes `key` directly in the store.
    async fn delete(&self, key: &str);
    /// Writes `value` at `key` directly in the store, without liveness, where the registry
    /// would see it.
    async fn put(&self, key: &str, value: &[u8]);
}

/// The [`Harness`] of a [`BackendUnderTest`]: clients come from its target, raw writes from
/// a [`RawStore`]; the server lives as long as the harness.
///
/// ```ignore
/// async fn etcd() -> StoreHarness<EtcdServer> {
///     let etcd = support::start(); // a BackendUnderTest<EtcdServer>
///     let raw = RawEtcd(etcd.endpoint());
///     StoreHarness::new(etcd, raw)
/// }
/// registry_conformance::conformance_tests!(etcd);
/// ```
pub struct StoreHarness<S> {
    under_test: BackendUnderTest<S>,
    raw: Box<dyn RawStore>,
}

impl<S: Send + Sync + 'static> StoreHarness<S> {
    /// A harness on `under_test`, writing behind its back with `raw`.
    pub fn new(under_test: BackendUnderTest<S>, raw: impl RawStore) -> Self {
        Self {
            under_test,
            raw: Box::new(raw),
        }
    }

    /// The backend under test.
    pub fn under_test(&self) -> &BackendUnderTest<S> {
        &self.under_test
    }
}

#[async_trait]
impl<S: Send + Sync + 'static> Harness for StoreHarness<S> {
    async fn client(&self, options: RegistryOptions) -> Registry {
        self.under_test.registry(options).await
    }

    async fn delete_raw(&self, key: &str) {
        self.raw.delete(key).await;
    }

    async fn put_raw(&self, key: &str, value: &[u8]) {
        self.raw.put(key, value).await;
    }
}
