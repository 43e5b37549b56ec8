//! Byte budgets: how many bytes of frames the server holds, overall and per connection.
//!
//! A budget is a semaphore counting bytes. Intake waits for room: a request body is charged
//! after its header is read and before anything is allocated for it. Output never waits: an
//! answer already computed is charged by force, possibly above the limit (waiting would not
//! give its memory back), and the debt holds intake back until answers are written.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

/// A number of bytes that may be held at once.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    room: Semaphore,
    /// Bytes charged by force beyond the limit, paid back by the next releases.
    debt: Mutex<usize>,
}

impl ByteBudget {
    /// A budget of `limit` bytes (at least 1, at most what a semaphore counts).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(ByteBudget {
            limit,
            room: Semaphore::new(limit),
            debt: Mutex::new(0),
        })
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Waits (first come, first served) until `bytes` fit, and charges them. `None` when they
    /// never can: more than the limit, or more than a frame can announce.
    pub(crate) async fn acquire(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        if bytes > self.limit {
            return None;
        }
        let n = u32::try_from(bytes).ok()?;
        self.room.acquire_many(n).await.ok()?.forget();
        Some(Charge {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Charges `bytes` at once, beyond the limit if need be.
    pub(crate) fn force(self: &Arc<Self>, bytes: usize) -> Charge {
        let mut debt = lock(&self.debt);
        let taken = self.room.forget_permits(bytes);
        *debt += bytes - taken;
        Charge {
            budget: Arc::clone(self),
            bytes,
        }
    }

    /// Bytes charged now (may exceed the limit after forced charges).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        let debt = lock(&self.debt);
        self.limit - self.room.available_permits() + *debt
    }

    fn release(&self, bytes: usize) {
        let mut debt = lock(&self.debt);
        let paid = bytes.min(*debt);
        *debt -= paid;
        if bytes > paid {
            self.room.add_permits(bytes - paid);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes charged to a budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Charge {
    /// Gives back what is above `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.release(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn intake_waits_for_room_and_forced_charges_hold_it_back() {
        let budget = ByteBudget::new(100);
        let mut a = budget.acquire(60).await.unwrap();
        assert!(budget.acquire(101).await.is_none(), "never fits");
        // 60 + 50 > 100: waits until `a` gives back enough.
        let waiting = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.acquire(50).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        a.shrink_to(40);
        waiting.await.unwrap().unwrap();
        assert_eq!(budget.in_use(), 40);
        // An answer is charged by force: 40 + 150 = 190, 90 of them debt.
        let forced = budget.force(150);
        assert_eq!(budget.in_use(), 190);
        let blocked = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.acquire(10).await.map(|_| ()) }
        });
        drop(a); // pays 40 of the debt: still 150 in use, nothing fits
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!blocked.is_finished());
        assert_eq!(budget.in_use(), 150);
        drop(forced);
        blocked.await.unwrap().unwrap();
        assert_eq!(budget.in_use(), 0);
    }
}
