//! Least-recently-used bookkeeping for tables whose keys come from callers
//! (destinations by `Host`): a [`Clock`] hands out ticks, each entry keeps
//! the tick of its last use in a [`Stamp`], and [`oldest`] picks the entries
//! to evict when a table is full.
//!
//! Written here rather than taken from a crate (`lru`) because the tables
//! are read under a shared lock on every request: an `lru` map needs `&mut`
//! to record a use, which would serialise the hot path. A stamp is one
//! relaxed atomic store. Eviction is batched: a full table drops its oldest
//! [`EVICT_SHARE`] at once (one pass and a partial sort), so a flood of new
//! keys costs O(1) amortised per insert, never a scan per insert.

use std::sync::atomic::{AtomicU64, Ordering};

/// A full table evicts this share of its capacity (at least one entry).
pub const EVICT_SHARE: usize = 8;

/// Hands out increasing ticks; one per table.
#[derive(Debug, Default)]
pub struct Clock(AtomicU64);

impl Clock {
    /// The next tick.
    pub fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// The tick of an entry's last use.
#[derive(Debug, Default)]
pub struct Stamp(AtomicU64);

impl Stamp {
    /// A stamp used now.
    pub fn new(clock: &Clock) -> Stamp {
        Stamp(AtomicU64::new(clock.tick()))
    }

    /// Records a use now.
    pub fn touch(&self, clock: &Clock) {
        self.set(clock.tick());
    }

    /// Records a use at `tick` (one tick for several stamps of one use).
    pub fn set(&self, tick: u64) {
        self.0.store(tick, Ordering::Relaxed);
    }

    /// The tick of the last use.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How many entries a full table of `capacity` evicts at once.
pub fn batch(capacity: usize) -> usize {
    (capacity / EVICT_SHARE).max(1)
}

/// The keys of the `n` entries of `entries` (key, last-use tick — or any
/// order where smaller goes first, such as an expiry) that go first, in no
/// particular order.
pub fn oldest<K, T: Ord + Copy>(entries: impl Iterator<Item = (K, T)>, n: usize) -> Vec<K> {
    let mut all: Vec<(T, K)> = entries.map(|(key, tick)| (tick, key)).collect();
    if n == 0 {
        return Vec::new();
    }
    if n < all.len() {
        all.select_nth_unstable_by_key(n - 1, |(tick, _)| *tick);
        all.truncate(n);
    }
    all.into_iter().map(|(_, key)| key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_picks_the_least_recently_touched() {
        let clock = Clock::default();
        let stamps: Vec<Stamp> = (0..10).map(|_| Stamp::new(&clock)).collect();
        // Touch the first three again: now they are the newest.
        for stamp in &stamps[..3] {
            stamp.touch(&clock);
        }
        let mut picked = oldest(stamps.iter().enumerate().map(|(i, s)| (i, s.get())), 4);
        picked.sort_unstable();
        assert_eq!(picked, [3, 4, 5, 6]);
        assert_eq!(oldest(std::iter::empty::<(u8, u64)>(), 3), Vec::<u8>::new());
        assert_eq!(oldest([(1, 5)].into_iter(), 0), Vec::<i32>::new());
        assert_eq!(oldest([(1, 5), (2, 1)].into_iter(), 9).len(), 2);
    }

    #[test]
    fn a_batch_is_a_share_of_the_capacity_and_never_zero() {
        assert_eq!(batch(4096), 512);
        assert_eq!(batch(3), 1);
        assert_eq!(batch(0), 1);
    }
}
