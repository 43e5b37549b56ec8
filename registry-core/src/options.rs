//! Options of a [`Registry`](crate::Registry).

use std::time::Duration;

use crate::error::RegistryError;
use crate::instance::KeySpace;

/// Default time a node outlives its owner's last heartbeat.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Default timeout of one store request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cooldown before relisting after the watch history was lost (jittered).
pub const DEFAULT_RELIST_COOLDOWN: Duration = Duration::from_secs(1);
/// Default first retry delay of a failed store operation (jittered, doubling).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Default largest retry delay of a failed store operation.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(10);

/// Shortest TTL accepted. A store may require more (etcd leases count whole seconds, a
/// ZooKeeper server allows sessions of 2 to 20 ticks); its backend says so at connect time.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest TTL accepted: one day.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest heartbeat interval accepted.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);
/// Longest request timeout, relist cooldown and retry delay accepted: one hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the consumer cache does when a service's node list would become empty.
///
/// A registry outage, a wiped store or a mass lease expiry can make the store report no nodes
/// while the providers are in fact alive. Turning a non-empty list into an empty one makes every
/// call fail at once, so the policy is explicit:
///
/// | policy | empty relist (after watch loss / outage) | last node removed by a watch event |
/// |---|---|---|
/// | [`Off`](Self::Off) | applied: the list becomes empty | applied |
/// | [`OnResync`](Self::OnResync) (default) | **not applied**: the last known nodes keep being served, marked stale, until the store shows a node again | applied (a graceful shutdown empties the list) |
/// | [`Always`](Self::Always) | not applied | **not applied**: the last node keeps being served, marked stale |
///
/// Either way the cache keeps tracking the store's truth underneath: as soon as the store holds a
/// node again, the served list is exactly the store's. A stale node that is really gone is taken
/// out by the RPC layer when a call to it fails (see `Registry::evict`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmptyProtection {
    /// No protection: the served list always equals the store's.
    Off,
    /// Protect against empty relists only (the default).
    #[default]
    OnResync,
    /// Never let a non-empty list become empty through the store.
    Always,
}

/// Options of a [`Registry`](crate::Registry).
///
/// The defaults are the `DEFAULT_*` constants of this module; by-value setters change one
/// option each (and return the options, so they must be used):
///
/// ```
/// use std::time::Duration;
/// use registry_core::{EmptyProtection, RegistryOptions};
///
/// let options = RegistryOptions::default()
///     .with_root("/services/")
///     .with_ttl(Duration::from_secs(10))
///     .with_heartbeat_interval(Duration::from_secs(3))
///     .with_empty_protection(EmptyProtection::Always);
/// assert!(options.validate().is_ok());
/// assert_eq!(options.keys.root(), "/services/");
/// ```
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Key layout (root, default `/rpc/`).
    pub keys: KeySpace,
    /// Time a node outlives its owner's last heartbeat.
    pub ttl: Duration,
    /// Heartbeat interval; less than half of `ttl`.
    pub heartbeat_interval: Duration,
    /// Timeout of one store request.
    pub timeout: Duration,
    /// Empty-list protection policy.
    pub empty_protection: EmptyProtection,
    /// The protect threshold, off by default (`None`): the largest share (0..1) of a
    /// service's served nodes one resync (a relist, or the first events after a reconnect) may
    /// take away. A larger loss keeps serving the last nodes, marked stale, for one TTL (or
    /// until the store shows enough of them again): a store that lost part of its data, or a
    /// partition, does not shrink every consumer's list at once. The trade-off: nodes really
    /// gone in such a mass loss keep being tried for up to a TTL (the RPC layer evicts each on
    /// its first failed call). Graceful deregistrations seen one by one on a live watch are
    /// always applied.
    pub protect_threshold: Option<f64>,
    /// Where the cache keeps a disk snapshot of each service's nodes (off by default): a
    /// consumer that starts while the store is down serves the nodes it knew, marked stale,
    /// until the store answers (see the cache's snapshot docs).
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// Cooldown (jittered) before relisting after the watch history was lost.
    pub relist_cooldown: Duration,
    /// First retry delay of a failed store operation.
    pub retry_initial: Duration,
    /// Largest retry delay of a failed store operation.
    pub retry_max: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            keys: KeySpace::default(),
            ttl: DEFAULT_TTL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            empty_protection: EmptyProtection::default(),
            protect_threshold: None,
            snapshot_dir: None,
            relist_cooldown: DEFAULT_RELIST_COOLDOWN,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

impl RegistryOptions {
    /// Sets the root of the key layout.
    #[must_use]
    pub fn with_root(mut self, root: &str) -> Self {
        self.keys = KeySpace::new(root);
        self
    }

    /// Sets the TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the heartbeat interval.
    #[must_use]
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets the request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the empty-list protection policy.
    #[must_use]
    pub fn with_empty_protection(mut self, policy: EmptyProtection) -> Self {
        self.empty_protection = policy;
        self
    }

    /// Sets the protect threshold (see [`RegistryOptions::protect_threshold`]): a share
    /// between 0 and 1 of the served nodes.
    #[must_use]
    pub fn with_protect_threshold(mut self, max_gone: f64) -> Self {
        self.protect_threshold = Some(max_gone);
        self
    }

    /// Keeps a disk snapshot of each service's nodes in `dir` (see
    /// [`RegistryOptions::snapshot_dir`]).
    #[must_use]
    pub fn with_snapshot_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.snapshot_dir = Some(dir.into());
        self
    }

    /// Sets the relist cooldown.
    #[must_use]
    pub fn with_relist_cooldown(mut self, cooldown: Duration) -> Self {
        self.relist_cooldown = cooldown;
        self
    }

    /// Sets the retry backoff bounds.
    #[must_use]
    pub fn with_retry(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max;
        self
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`RegistryError::InvalidOptions`] naming the option: a TTL outside
    /// [`MIN_TTL`]..=[`MAX_TTL`], a timeout, cooldown or retry delay of zero or above
    /// [`MAX_TIMEOUT`], or a heartbeat interval below [`MIN_HEARTBEAT_INTERVAL`] or not less than
    /// half of the TTL (a node must survive one missed beat), or a root with a `.` or `..`
    /// segment, spaces or control characters.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let invalid =
            |key: &'static str, reason: String| RegistryError::InvalidOptions { key, reason };
        if !(MIN_TTL..=MAX_TTL).contains(&self.ttl) {
            return Err(invalid(
                "ttl",
                format!(
                    "must be from {MIN_TTL:?} to {MAX_TTL:?}, got {:?}",
                    self.ttl
                ),
            ));
        }
        for (key, value) in [
            ("timeout", self.timeout),
            ("relistCooldown", self.relist_cooldown),
            ("retryInitial", self.retry_initial),
            ("retryMax", self.retry_max),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return Err(invalid(
                    key,
                    format!("must be greater than 0 and at most {MAX_TIMEOUT:?}, got {value:?}"),
                ));
            }
        }
        if let Some(t) = self.protect_threshold {
            if !(t > 0.0 && t < 1.0) {
                return Err(invalid(
                    "protectThreshold",
                    format!("must be a share between 0 and 1 (exclusive), got {t}"),
                ));
            }
        }
        let root = self.keys.root();
        if let Some(bad) = root.split('/').find(|segment| {
            matches!(*segment, "." | "..")
                || segment.chars().any(|c| c.is_control() || c.is_whitespace())
        }) {
            return Err(invalid(
                "root",
                format!(
                    "`{}` has a segment `{}` (no `.`, `..`, spaces or control characters)",
                    root.escape_debug(),
                    bad.escape_debug()
                ),
            ));
        }
        if self.heartbeat_interval < MIN_HEARTBEAT_INTERVAL
            || self.heartbeat_interval >= self.ttl / 2
        {
            return Err(invalid(
                "heartbeatInterval",
                format!(
                    "must be at least {MIN_HEARTBEAT_INTERVAL:?} and less than half of ttl ({:?}), got {:?}",
                    self.ttl, self.heartbeat_interval
                ),
            ));
        }
        Ok(())
    }
}
