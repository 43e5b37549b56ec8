//! What the consumer cache tells about the store's truth, as a trait: [`TruthObserver`].
//!
//! The cache learns what the store holds (a watch event, a listing); the registrar wants to
//! know it, to confirm its own writes and to repair the ones deleted behind its back. Both
//! depend on this trait only: the cache holds an `Arc<dyn TruthObserver>`, the registrar
//! implements it, and neither module imports the other.

/// Receives the changes a watcher applied to the store truth, so the registrar can confirm its
/// own writes and repair the ones deleted behind its back.
pub(crate) trait TruthObserver: Send + Sync + 'static {
    /// `key` is in the store.
    fn seen(&self, key: &str);
    /// `key` left the store.
    fn gone(&self, key: &str);
    /// A full listing of `prefix` was applied; `present` tells which keys it holds.
    fn listed(&self, prefix: &str, present: &dyn Fn(&str) -> bool);
}
