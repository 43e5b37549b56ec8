//! Jittered exponential backoff, shared by every retry loop of the core.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "equal jitter": each delay is half the current step plus a random
/// part of up to the other half, so retries of many processes spread out but never collapse to 0.
///
/// ```
/// use std::time::Duration;
/// use registry_core::Backoff;
///
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// let first = b.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// for _ in 0..20 {
///     assert!(b.next_delay() <= Duration::from_secs(2));
/// }
/// b.reset();
/// assert!(b.next_delay() <= Duration::from_millis(100));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Self {
            initial,
            max,
            step: initial,
        }
    }

    /// The delay before the next attempt; grows the step for the attempt after.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        jitter(step)
    }

    /// Back to the initial step, after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// A duration between `d / 2` and `d`, chosen at random.
pub(crate) fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let spread = d.saturating_sub(half).as_nanos() as u64;
    if spread == 0 {
        return d;
    }
    half + Duration::from_nanos(rand::rng().random_range(0..=spread))
}
