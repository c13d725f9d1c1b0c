//! Readiness: whether this instance should receive traffic.
//!
//! Ready means: configuration and keys loaded, not draining, and the
//! upstream not proven dead (fewer than [`DEAD_AFTER`] consecutive connect
//! failures since the last answer it gave). A remote key store that does not
//! answer is reported as `key_store_degraded` but keeps the instance ready:
//! cached keys still work, and every replica shares the same database.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Consecutive connect failures after which the upstream counts as dead.
pub const DEAD_AFTER: u32 = 3;

/// Shared readiness state.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
    keys_loaded: AtomicBool,
    key_store_degraded: AtomicBool,
    upstream_connect_failures: AtomicU32,
}

/// Why the instance is not ready.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Overall verdict.
    pub ready: bool,
    /// Shutting down.
    pub draining: bool,
    /// Keys loaded.
    pub keys_loaded: bool,
    /// Upstream proven dead.
    pub upstream_dead: bool,
    /// The remote key store does not answer (cached keys are served).
    pub key_store_degraded: bool,
}

impl Readiness {
    /// Marks the instance as shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Records whether the key store is loaded.
    pub fn set_keys_loaded(&self, loaded: bool) {
        self.keys_loaded.store(loaded, Ordering::SeqCst);
    }

    /// Records whether the remote key store answers.
    pub fn set_key_store_degraded(&self, degraded: bool) {
        self.key_store_degraded.store(degraded, Ordering::SeqCst);
    }

    /// The upstream answered (any status).
    pub fn upstream_answered(&self) {
        // Called on every answer: written only when there is something to
        // clear, so the workers share the line rather than take turns
        // owning it.
        if self.upstream_connect_failures.load(Ordering::Relaxed) != 0 {
            self.upstream_connect_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connection to the upstream failed.
    pub fn upstream_connect_failed(&self) {
        self.upstream_connect_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The current verdict.
    pub fn report(&self) -> Report {
        let draining = self.draining.load(Ordering::SeqCst);
        let keys_loaded = self.keys_loaded.load(Ordering::SeqCst);
        let upstream_dead = self.upstream_connect_failures.load(Ordering::Relaxed) >= DEAD_AFTER;
        Report {
            ready: !draining && keys_loaded && !upstream_dead,
            draining,
            keys_loaded,
            upstream_dead,
            key_store_degraded: self.key_store_degraded.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let r = Readiness::default();
        assert!(!r.report().ready, "keys not loaded yet");
        r.set_keys_loaded(true);
        assert!(r.report().ready);
        for _ in 0..DEAD_AFTER {
            r.upstream_connect_failed();
        }
        assert!(r.report().upstream_dead && !r.report().ready);
        r.upstream_answered();
        assert!(r.report().ready);
        r.start_draining();
        assert!(!r.report().ready && r.report().draining);
    }
}
