//! [`Reuse`]: one piece of resilience state (a rate limiter, a bulkhead)
//! together with the config it was built from, kept across policy updates
//! while that config is unchanged.
//!
//! This is the one place the rule "a policy update keeps the state its own
//! config did not change" is written: an equal config returns the state
//! already held (a used-up burst stays used up, calls holding bulkhead slots
//! keep counting), a different one builds fresh state, and a config that is
//! gone drops it.
//!
//! Reads ([`Reuse::get`]) are lock-free, so a request may load the state on
//! its hot path. Updates are expected from one writer at a time (the owner
//! serialises its recompiles); two racing updates with the same new config
//! would each build state and the last would win, which is safe but wasteful.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// State of type `T` built from a config of type `C`, kept while `C` is equal.
#[derive(Debug)]
pub struct Reuse<C, T> {
    held: ArcSwapOption<Held<C, T>>,
}

#[derive(Debug)]
struct Held<C, T> {
    config: C,
    state: Arc<T>,
}

impl<C, T> Default for Reuse<C, T> {
    fn default() -> Self {
        Reuse {
            held: ArcSwapOption::empty(),
        }
    }
}

impl<C: PartialEq + Clone, T> Reuse<C, T> {
    /// Nothing held yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state for `config`: the one held when its config equals `config`,
    /// else `build(config)` (which is then held). `None` drops what is held.
    pub fn update(&self, config: Option<&C>, build: impl FnOnce(&C) -> T) -> Option<Arc<T>> {
        let Some(config) = config else {
            self.held.store(None);
            return None;
        };
        if let Some(held) = self.held.load().as_ref()
            && held.config == *config
        {
            return Some(held.state.clone());
        }
        let state = Arc::new(build(config));
        self.held.store(Some(Arc::new(Held {
            config: config.clone(),
            state: state.clone(),
        })));
        Some(state)
    }

    /// The state held now, if any.
    pub fn get(&self) -> Option<Arc<T>> {
        self.held.load().as_ref().map(|held| held.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// State that counts the calls it saw, to tell one instance from another.
    #[derive(Debug, Default)]
    struct Calls(AtomicU32);

    fn built(builds: &AtomicU32) -> impl FnOnce(&u32) -> Calls + '_ {
        move |_| {
            builds.fetch_add(1, Ordering::Relaxed);
            Calls::default()
        }
    }

    #[test]
    fn an_equal_config_keeps_the_state() {
        let reuse = Reuse::new();
        let builds = AtomicU32::new(0);
        let first = reuse.update(Some(&5), built(&builds)).expect("built");
        first.0.fetch_add(3, Ordering::Relaxed);
        let again = reuse.update(Some(&5), built(&builds)).expect("kept");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.0.load(Ordering::Relaxed), 3);
        assert_eq!(builds.load(Ordering::Relaxed), 1);
        let got = reuse.get().expect("held");
        assert!(Arc::ptr_eq(&first, &got));
    }

    #[test]
    fn a_changed_config_builds_new_state() {
        let reuse = Reuse::new();
        let builds = AtomicU32::new(0);
        let first = reuse.update(Some(&5), built(&builds)).expect("built");
        first.0.fetch_add(3, Ordering::Relaxed);
        let changed = reuse.update(Some(&6), built(&builds)).expect("rebuilt");
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.0.load(Ordering::Relaxed), 0);
        assert_eq!(builds.load(Ordering::Relaxed), 2);
        // The new state is the one held from now on.
        let kept = reuse.update(Some(&6), built(&builds)).expect("kept");
        assert!(Arc::ptr_eq(&changed, &kept));
        assert_eq!(builds.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_removed_config_drops_the_state() {
        let reuse = Reuse::new();
        let builds = AtomicU32::new(0);
        let first = reuse.update(Some(&5), built(&builds)).expect("built");
        assert!(reuse.update(None, built(&builds)).is_none());
        assert!(reuse.get().is_none());
        // The same config coming back starts over: nothing was kept for it.
        let back = reuse.update(Some(&5), built(&builds)).expect("rebuilt");
        assert!(!Arc::ptr_eq(&first, &back));
        assert_eq!(builds.load(Ordering::Relaxed), 2);
    }
}
