//! Retry (`rpc.retryStrategy`) and fault tolerance (`rpc.tolerantStrategy`).
//!
//! - Retry repeats a call **on the same node** after a transient transport failure (a
//!   timeout, a broken connection): `no`, `fixedInterval` (3 attempts, 100 ms apart),
//!   `exponentialBackoff` (4 attempts, 50 ms doubling, with jitter). Errors from the server
//!   (unknown method, handler error) are never retried: they would fail again.
//! - Tolerance decides what happens once a node failed for good:
//!   `failFast` returns the error; `failOver` tries the next node (the balancer skips the
//!   ones that failed) until none is left; `failSafe` logs the error and returns the
//!   method's `Default` value.
//!
//! Whatever the strategy, a request that certainly never reached a server (connection
//! refused: the provider is gone) goes to another node, and a node that refused or broke the
//! connection is taken out of the consumer's cache at once.
//!
//! ```
//! use std::time::Duration;
//! use rpc_runtime::fault::RetryStrategy;
//!
//! let fixed: RetryStrategy = "fixedInterval".parse().unwrap();
//! assert_eq!(fixed.delays().collect::<Vec<_>>(), [Duration::from_millis(100); 2]);
//! assert_eq!("no".parse::<RetryStrategy>().unwrap().delays().count(), 0);
//! ```

use std::str::FromStr;

use rpc_config::config::{RetryStrategyKind, TolerantStrategyKind, UnknownChoice};
use std::time::Duration;

/// How a call is repeated on the same node after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryStrategy {
    /// One attempt.
    No,
    /// `attempts` in all, `interval` apart.
    FixedInterval {
        /// Attempts in all (the first included).
        attempts: u32,
        /// Pause between attempts.
        interval: Duration,
    },
    /// `attempts` in all; the pause starts at `initial` and doubles up to `max`, each
    /// jittered to between half and all of it.
    ExponentialBackoff {
        /// Attempts in all (the first included).
        attempts: u32,
        /// First pause.
        initial: Duration,
        /// Longest pause.
        max: Duration,
    },
}

impl RetryStrategy {
    /// The pauses before each retry (empty for [`RetryStrategy::No`]).
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        let (count, next): (u32, Box<dyn FnMut(u32) -> Duration + Send>) = match self {
            RetryStrategy::No => (0, Box::new(|_| Duration::ZERO)),
            RetryStrategy::FixedInterval { attempts, interval } => {
                (attempts.saturating_sub(1), Box::new(move |_| interval))
            }
            RetryStrategy::ExponentialBackoff {
                attempts,
                initial,
                max,
            } => (
                attempts.saturating_sub(1),
                Box::new(move |i| {
                    let full = initial.saturating_mul(1 << i.min(20)).min(max);
                    full.mul_f64(rand::random_range(0.5..=1.0))
                }),
            ),
        };
        (0..count).map(next)
    }
}

/// What happens when a call failed on a node for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TolerantStrategy {
    /// Return the error.
    #[default]
    FailFast,
    /// Try the next node until none is left.
    FailOver,
    /// Log the error and return the method's `Default` value.
    FailSafe,
}

/// An unknown strategy name.
pub type UnknownStrategy = UnknownChoice;

impl From<RetryStrategyKind> for RetryStrategy {
    /// The strategy `kind` names, with the framework's settings: `fixedInterval` 3 attempts
    /// 100 ms apart, `exponentialBackoff` 4 attempts from 50 ms up to 1 s.
    fn from(kind: RetryStrategyKind) -> Self {
        match kind {
            RetryStrategyKind::FixedInterval => RetryStrategy::FixedInterval {
                attempts: 3,
                interval: Duration::from_millis(100),
            },
            RetryStrategyKind::ExponentialBackoff => RetryStrategy::ExponentialBackoff {
                attempts: 4,
                initial: Duration::from_millis(50),
                max: Duration::from_secs(1),
            },
            _ => RetryStrategy::No,
        }
    }
}

impl FromStr for RetryStrategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<RetryStrategyKind>().map(Self::from)
    }
}

impl From<TolerantStrategyKind> for TolerantStrategy {
    fn from(kind: TolerantStrategyKind) -> Self {
        match kind {
            TolerantStrategyKind::FailOver => TolerantStrategy::FailOver,
            TolerantStrategyKind::FailSafe => TolerantStrategy::FailSafe,
            _ => TolerantStrategy::FailFast,
        }
    }
}

impl FromStr for TolerantStrategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<TolerantStrategyKind>().map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_name_parses() {
        for name in crate::config::RETRY_STRATEGIES {
            name.parse::<RetryStrategy>().unwrap();
        }
        for name in crate::config::TOLERANT_STRATEGIES {
            name.parse::<TolerantStrategy>().unwrap();
        }
        let err = "sometimes"
            .parse::<RetryStrategy>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("fixedInterval"), "{err}");
        let err = "failLater"
            .parse::<TolerantStrategy>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("failOver"), "{err}");
    }

    #[test]
    fn exponential_backoff_doubles_with_jitter_and_caps() {
        let s = RetryStrategy::ExponentialBackoff {
            attempts: 8,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let d: Vec<Duration> = s.delays().collect();
        assert_eq!(d.len(), 7);
        let full = [100u64, 200, 400, 500, 500, 500, 500];
        for (got, full) in d.iter().zip(full) {
            let full = Duration::from_millis(full);
            assert!(*got >= full / 2 && *got <= full, "{got:?} vs {full:?}");
        }
    }

    #[test]
    fn attempts_count_the_first_call() {
        let s = RetryStrategy::FixedInterval {
            attempts: 1,
            interval: Duration::from_secs(1),
        };
        assert_eq!(s.delays().count(), 0);
    }
}
