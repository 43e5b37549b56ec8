//! The read side of the cache: service key → current snapshot, read without a lock.
//!
//! The keys are spread over a fixed number of shards, each an immutable hash table behind an
//! [`ArcSwap`] with a version number. A publish copies its shard aside with the new snapshot,
//! swaps it in and bumps the version, so a change costs O(services / shards) and caching n
//! services costs O(n² / shards) rather than copying one map of every service each time.
//!
//! A hit hashes the key once (the hash picks the shard and probes its table) and clones the
//! snapshot's `Arc`: no lock, no allocation. Each thread keeps the shard tables it read last
//! (arc-swap's `Cache` pattern) and only compares the shard's version with its own, a plain
//! load: an `ArcSwap` load costs as much as the whole rest of the hit. A thread that has not
//! read a shard since it changed holds its old table (and the snapshots in it) until its next
//! read of that shard or its exit; its view of a dropped index is freed when it first reads a
//! new index, or at its exit.

use std::cell::RefCell;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use hashbrown::HashTable;

use super::Snapshot;

/// Shards: enough that copying one stays small at 100,000 services (~400 slots), few enough
/// that an empty cache is a couple of KiB.
const SHARDS: usize = 256;

/// One service's published snapshot.
#[derive(Clone)]
struct Slot {
    hash: u64,
    key: Arc<str>,
    snapshot: Arc<Snapshot>,
}

type Table = HashTable<Slot>;

/// One shard: its current table and how many times it was replaced.
#[derive(Default)]
struct Shard {
    table: ArcSwap<Table>,
    version: AtomicU64,
}

/// Service key → the snapshot readers get.
pub(crate) struct Index {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

/// What one thread last read of one index: per shard, the version and its table.
struct Seen {
    index: Weak<Index>,
    tables: Box<[(u64, Option<Arc<Table>>)]>,
}

thread_local! {
    /// The indexes this thread reads (usually one per process).
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

impl Index {
    /// The hash of `key`, computed once per lookup and kept with each slot.
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard number of a hash. The table inside uses the low bits (bucket) and the top 7
    /// bits (tag), so the shard takes bits from the middle: keys of one shard differ in both.
    fn shard(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    /// The hot path: the current snapshot of `key`, if it was ever published.
    #[inline]
    pub(crate) fn get(this: &Arc<Self>, key: &str) -> Option<Arc<Snapshot>> {
        let hash = this.hash(key);
        let n = Self::shard(hash);
        let find = |table: &Table| {
            table
                .find(hash, |slot| &*slot.key == key)
                .map(|slot| slot.snapshot.clone())
        };
        let cached = SEEN.try_with(|seen| {
            let mut seen = seen.try_borrow_mut().ok()?;
            let tables = this.seen_by(&mut seen);
            let (version, table) = &mut tables[n];
            // A plain load: when the shard changed since, its new table is loaded below.
            let now = this.shards[n].version.load(Ordering::Acquire);
            if *version != now || table.is_none() {
                *table = Some(this.shards[n].table.load_full());
                *version = now;
            }
            table.as_deref().map(find)
        });
        match cached {
            Ok(Some(found)) => found,
            // The thread is exiting (or re-entered): read the shard directly.
            _ => find(&this.shards[n].table.load()),
        }
    }

    /// This thread's tables of `this`, registered on first use (forgetting dropped indexes).
    #[inline]
    fn seen_by<'a>(
        self: &Arc<Self>,
        seen: &'a mut Vec<Seen>,
    ) -> &'a mut [(u64, Option<Arc<Table>>)] {
        let at = match seen
            .iter()
            .position(|s| std::ptr::eq(s.index.as_ptr(), Arc::as_ptr(self)))
        {
            Some(at) => at,
            None => {
                seen.retain(|s| s.index.strong_count() > 0);
                seen.push(Seen {
                    index: Arc::downgrade(self),
                    tables: (0..SHARDS).map(|_| (0, None)).collect(),
                });
                seen.len() - 1
            }
        };
        &mut seen[at].tables
    }

    /// Makes `snapshot` the one readers of `key` get, unless a later generation is already
    /// there (so publishes that race cannot step back).
    pub(crate) fn publish(&self, hash: u64, key: &Arc<str>, snapshot: &Arc<Snapshot>) {
        let shard = &self.shards[Self::shard(hash)];
        shard.table.rcu(|table| {
            let mut table = HashTable::clone(table);
            match table.find_mut(hash, |slot| slot.key == *key) {
                Some(slot) if slot.snapshot.generation >= snapshot.generation => {}
                Some(slot) => slot.snapshot = snapshot.clone(),
                None => {
                    table.insert_unique(
                        hash,
                        Slot {
                            hash,
                            key: key.clone(),
                            snapshot: snapshot.clone(),
                        },
                        |slot| slot.hash,
                    );
                }
            }
            table
        });
        // After the swap: a reader that sees the new version loads the new table.
        shard.version.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(generation: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            nodes: Arc::from(Vec::new()),
            stale: false,
            generation,
            published_at: std::time::Instant::now(),
        })
    }

    #[test]
    fn a_published_snapshot_is_found_by_its_key_only() {
        let index = Arc::new(Index::default());
        let keys: Vec<Arc<str>> = (0..2_000).map(|i| Arc::from(format!("s{i}:1.0"))).collect();
        for (i, key) in keys.iter().enumerate() {
            index.publish(index.hash(key), key, &snapshot(i as u64 + 1));
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                Index::get(&index, key).map(|s| s.generation),
                Some(i as u64 + 1)
            );
        }
        assert!(Index::get(&index, "s2000:1.0").is_none());
        assert!(Index::get(&index, "").is_none());
    }

    #[test]
    fn an_older_generation_never_replaces_a_newer_one() {
        let index = Arc::new(Index::default());
        let key: Arc<str> = Arc::from("UserService:1.0");
        let hash = index.hash(&key);
        index.publish(hash, &key, &snapshot(3));
        index.publish(hash, &key, &snapshot(2));
        assert_eq!(Index::get(&index, &key).map(|s| s.generation), Some(3));
        index.publish(hash, &key, &snapshot(4));
        assert_eq!(Index::get(&index, &key).map(|s| s.generation), Some(4));
    }

    #[test]
    fn a_thread_that_read_before_sees_what_another_thread_published_since() {
        let index = Arc::new(Index::default());
        let key: Arc<str> = Arc::from("UserService:1.0");
        let hash = index.hash(&key);
        index.publish(hash, &key, &snapshot(1));
        // This thread now holds the shard's table; the change comes from elsewhere.
        assert_eq!(Index::get(&index, &key).map(|s| s.generation), Some(1));
        std::thread::scope(|s| {
            s.spawn(|| index.publish(hash, &key, &snapshot(2)));
        });
        assert_eq!(Index::get(&index, &key).map(|s| s.generation), Some(2));
    }

    #[test]
    fn a_dropped_index_is_forgotten_by_the_threads_that_read_it() {
        let seen = || SEEN.with(|seen| seen.borrow().len());
        let before = seen();
        for _ in 0..10 {
            let index = Arc::new(Index::default());
            let _ = Index::get(&index, "UserService:1.0");
        }
        // Each new index drops the dead ones from this thread's list.
        assert!(seen() <= before + 1, "{} indexes kept", seen());
    }
}
