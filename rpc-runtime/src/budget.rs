//! Byte budgets: how many bytes of frames the server holds, overall and per connection.
//!
//! A budget is a semaphore counting bytes. Intake waits for room: a request body is charged
//! after its header is read and before anything is allocated for it. Output never waits: an
//! answer already computed is charged by force, possibly above the limit (waiting would not
//! give its memory back), and the debt holds intake back until answers are written.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// A number of bytes that may be held at once.
///
/// Charging and giving back are one atomic operation each while nobody waits; only an intake
/// that finds no room takes the queue's lock (the budget is touched several times per call, by
/// every connection, so a lock here is paid on every request).
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    /// Bytes charged now: above `limit` while forced charges are outstanding.
    used: AtomicUsize,
    /// Intakes waiting for room, first come, first served.
    queue: Mutex<VecDeque<Waiter>>,
    /// How many intakes are in `queue` (read without its lock).
    waiting: AtomicUsize,
}

/// An intake waiting in the queue; told when its bytes were charged for it.
#[derive(Debug)]
struct Waiter {
    bytes: usize,
    charged: oneshot::Sender<()>,
}

impl ByteBudget {
    /// A budget of `limit` bytes (at least 1).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(ByteBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            queue: Mutex::default(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Waits (first come, first served) until `bytes` fit, and charges them. `None` when they
    /// never can: more than the limit.
    pub(crate) async fn acquire(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        if bytes > self.limit {
            return None;
        }
        // Nobody queued before us: take the room if it is there.
        if let Some(charge) = self.try_acquire(bytes) {
            return Some(charge);
        }
        let charged = {
            let mut queue = lock(&self.queue);
            // Counted before looking at the room again: a release from now on sees us waiting
            // (or we see its room), so no release is missed.
            self.waiting.fetch_add(1, SeqCst);
            if queue.is_empty() && self.take(bytes) {
                self.waiting.fetch_sub(1, SeqCst);
                return Some(self.charge(bytes));
            }
            let (charged, told) = oneshot::channel();
            queue.push_back(Waiter { bytes, charged });
            Queued {
                budget: self,
                bytes,
                told,
            }
        };
        charged.await.then(|| self.charge(bytes))
    }

    /// Charges `bytes` if they fit now and nobody waits before them; `None` otherwise.
    pub(crate) fn try_acquire(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        (self.waiting.load(SeqCst) == 0 && self.take(bytes)).then(|| self.charge(bytes))
    }

    /// Charges `bytes` at once, beyond the limit if need be.
    pub(crate) fn force(self: &Arc<Self>, bytes: usize) -> Charge {
        self.used.fetch_add(bytes, SeqCst);
        self.charge(bytes)
    }

    /// Bytes charged now (may exceed the limit after forced charges).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.used.load(SeqCst)
    }

    fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        Charge {
            budget: Arc::clone(self),
            bytes,
        }
    }

    /// Charges `bytes` if they fit under the limit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(SeqCst, SeqCst, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, SeqCst);
        if self.waiting.load(SeqCst) > 0 {
            self.serve_queue();
        }
    }

    /// Charges the bytes of the intakes at the head of the queue while they fit, and tells
    /// them.
    fn serve_queue(&self) {
        let mut queue = lock(&self.queue);
        while let Some(head) = queue.front() {
            let gone = head.charged.is_closed();
            if !gone && !self.take(head.bytes) {
                break;
            }
            self.waiting.fetch_sub(1, SeqCst);
            let Some(waiter) = queue.pop_front() else {
                break;
            };
            // Gone before its charge: nothing charged. Gone since: give the bytes back.
            if !gone && waiter.charged.send(()).is_err() {
                self.used.fetch_sub(waiter.bytes, SeqCst);
            }
        }
    }
}

/// An intake in the queue. Dropped before it is told (the read was given up), it stops
/// waiting; told but dropped before it took its charge, it gives the bytes back.
struct Queued<'a> {
    budget: &'a ByteBudget,
    bytes: usize,
    told: oneshot::Receiver<()>,
}

impl std::future::Future for Queued<'_> {
    type Output = bool;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        std::pin::Pin::new(&mut self.told).poll(cx).map(|told| {
            let charged = told.is_ok();
            // Taken: nothing to give back on drop.
            self.bytes = 0;
            charged
        })
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.told.close();
        if self.told.try_recv().is_ok() {
            self.budget.release(self.bytes);
        } else {
            // Its place in the queue is given up: those behind it may fit now.
            self.budget.serve_queue();
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

    /// Intakes are served in the order they came: a small one behind a large one waits, even
    /// when it would fit. One that gives up while queued holds nothing and blocks nobody.
    #[tokio::test]
    async fn intakes_wait_in_order_and_one_giving_up_loses_nothing() {
        let budget = ByteBudget::new(100);
        let held = budget.acquire(90).await.unwrap();
        let large = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.acquire(80).await.map(|c| c.bytes) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let given_up = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.acquire(100).await.map(|c| c.bytes) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut small = Box::pin(budget.acquire(10));
        assert!(
            futures::poll!(&mut small).is_pending(),
            "behind the large one"
        );
        given_up.abort();
        assert!(given_up.await.unwrap_err().is_cancelled());
        drop(held);
        assert_eq!(large.await.unwrap(), Some(80));
        // The large one went and gave its bytes back; the given-up one is skipped.
        let small = small.await.unwrap();
        assert_eq!(budget.in_use(), 10);
        drop(small);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.waiting.load(SeqCst), 0);
    }

    /// The head of the queue giving up lets those behind it in when they fit, without waiting
    /// for a release.
    #[tokio::test]
    async fn the_head_giving_up_lets_the_next_in() {
        let budget = ByteBudget::new(100);
        let _held = budget.acquire(90).await.unwrap();
        let mut head = Box::pin(budget.acquire(80));
        assert!(futures::poll!(&mut head).is_pending());
        let mut next = Box::pin(budget.acquire(10));
        assert!(futures::poll!(&mut next).is_pending(), "behind the head");
        drop(head);
        let next = tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("served once the head gave up")
            .unwrap();
        assert_eq!(budget.in_use(), 100);
        drop(next);
        assert_eq!(budget.waiting.load(SeqCst), 0);
    }

    /// An intake charged by a release but dropped before it ran gives its bytes back.
    #[tokio::test]
    async fn a_charge_nobody_took_is_given_back() {
        let budget = ByteBudget::new(100);
        let held = budget.acquire(100).await.unwrap();
        let mut waiting = Box::pin(budget.acquire(60));
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(held); // charges the waiter's 60 bytes for it
        assert_eq!(budget.in_use(), 60);
        drop(waiting);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.acquire(100).await.is_some());
    }

    /// Many tasks on two threads charging, waiting and giving back: nothing leaks, nobody is
    /// left waiting, and the limit holds for what waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_charges_balance_out() {
        let budget = ByteBudget::new(1_000);
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|task| {
                let (budget, peak) = (Arc::clone(&budget), Arc::clone(&peak));
                tokio::spawn(async move {
                    for i in 0..2_000usize {
                        let bytes = 1 + (task * 37 + i * 11) % 400;
                        let mut charge = budget.acquire(bytes).await.unwrap();
                        peak.fetch_max(budget.in_use(), SeqCst);
                        if i % 3 == 0 {
                            charge.shrink_to(bytes / 2);
                        }
                        if i % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("no intake is left waiting")
                .unwrap();
        }
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.waiting.load(SeqCst), 0);
        assert!(peak.load(SeqCst) <= 1_000, "{}", peak.load(SeqCst));
    }
}
