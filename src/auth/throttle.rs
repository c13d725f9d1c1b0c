//! Failed-authentication throttling per client address, so keys cannot be
//! guessed at line rate.
//!
//! Each address has a GCRA budget of `max_failures_per_minute` failures
//! (governor, keyed by IP). An address that exceeds it is blocked — every
//! request from it, with or without a valid key, gets 429 `auth_throttled`
//! with `Retry-After` — until one failure's worth of budget has recovered.
//! Refusing valid keys too is deliberate: otherwise a blocked guesser could
//! still tell a hit (200) from a miss. Memory is bounded: recovered
//! addresses are pruned on a schedule and whenever more than
//! `throttle_max_tracked` are tracked.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// See the module docs.
#[derive(Debug)]
pub struct AuthThrottle<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    /// Blocked addresses, asked on every request: a sharded map, so
    /// requests do not queue on one lock. (Hashed with SipHash: clients
    /// choose their addresses.)
    blocked: DashMap<IpAddr, C::Instant>,
    clock: C,
    max_tracked: usize,
}

impl AuthThrottle<DefaultClock> {
    /// A throttle on the system clock.
    pub fn new(per_minute: NonZeroU32, max_tracked: usize) -> Self {
        Self::with_clock(per_minute, max_tracked, DefaultClock::default())
    }
}

impl<C: Clock + Clone> AuthThrottle<C> {
    /// A throttle on `clock` (tests pass governor's fake clock).
    pub fn with_clock(per_minute: NonZeroU32, max_tracked: usize, clock: C) -> Self {
        AuthThrottle {
            limiter: RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock.clone()),
            blocked: DashMap::new(),
            clock,
            max_tracked,
        }
    }

    /// How long `ip` must still wait, if it is blocked.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let until = *self.blocked.get(&ip)?;
        let now = self.clock.now();
        if until > now {
            Some(Duration::from(until.duration_since(now)))
        } else {
            self.blocked.remove_if(&ip, |_, until| *until <= now);
            None
        }
    }

    /// Counts a failed authentication from `ip`; returns the wait if it is now blocked.
    pub fn record_failure(&self, ip: IpAddr) -> Option<Duration> {
        let outcome = self.limiter.check_key(&ip);
        if self.limiter.len() > self.max_tracked {
            self.prune();
        }
        let not_until = outcome.err()?;
        let now = self.clock.now();
        let until = not_until.earliest_possible();
        if self.blocked.len() >= self.max_tracked {
            self.blocked.retain(|_, u| *u > now);
        }
        self.blocked.insert(ip, until);
        Some(not_until.wait_time_from(now))
    }

    /// Drops addresses whose budget has fully recovered.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = self.clock.now();
        self.blocked.retain(|_, until| *until > now);
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn blocks_after_the_budget_and_recovers() {
        let clock = FakeRelativeClock::default();
        let t = AuthThrottle::with_clock(NonZeroU32::new(20).unwrap(), 1000, clock.clone());
        for i in 0..20 {
            assert_eq!(
                t.record_failure(ip(1)),
                None,
                "failure {i} is within budget"
            );
            assert_eq!(t.blocked_for(ip(1)), None);
        }
        let wait = t.record_failure(ip(1)).expect("21st failure blocks");
        assert_eq!(
            wait,
            Duration::from_secs(3),
            "one failure per 3 s replenishes"
        );
        assert_eq!(t.blocked_for(ip(1)), Some(Duration::from_secs(3)));
        assert_eq!(t.blocked_for(ip(2)), None, "other addresses are unaffected");
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.blocked_for(ip(1)), Some(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(2));
        assert_eq!(t.blocked_for(ip(1)), None);
        // One more failure is allowed, the next blocks again.
        assert_eq!(t.record_failure(ip(1)), None);
        assert!(t.record_failure(ip(1)).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let clock = FakeRelativeClock::default();
        let t = AuthThrottle::with_clock(NonZeroU32::new(20).unwrap(), 100, clock.clone());
        for n in 0..=255u8 {
            t.record_failure(ip(n));
        }
        assert!(t.tracked() <= 256);
        clock.advance(Duration::from_secs(60));
        t.prune();
        assert_eq!(t.tracked(), 0);
        // Past the cap, recovered addresses are dropped as new ones arrive.
        for n in 0..=255u8 {
            t.record_failure(IpAddr::from([10, 0, 1, n]));
            clock.advance(Duration::from_secs(60));
        }
        assert!(t.tracked() <= 101, "{}", t.tracked());
    }
}
