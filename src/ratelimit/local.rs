//! The in-process limiter: governor, one keyed GCRA limiter per tier,
//! keyed by user name.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, Tier};

/// User names hash with foldhash rather than the default SipHash, as the
/// gateway's other maps on the request path do: the keys are the names of
/// authenticated users, which a client cannot choose.
type UserHash = foldhash::fast::RandomState;

type Keyed<C> =
    RateLimiter<Arc<str>, DashMapStateStore<Arc<str>, UserHash>, C, StateInformationMiddleware>;

/// Per-tier governor limiters.
#[derive(Debug)]
pub struct LocalLimiter<C: Clock = DefaultClock> {
    tiers: HashMap<Arc<str>, Keyed<C>, foldhash::fast::RandomState>,
    clock: C,
}

/// The governor quota for a tier: `per_minute` cells a minute, `burst` at once.
pub fn quota(tier: &Tier) -> Quota {
    Quota::with_period(tier.interval())
        .unwrap_or_else(|| Quota::per_minute(tier.per_minute))
        .allow_burst(tier.burst)
}

impl LocalLimiter<DefaultClock> {
    /// Limiters for `tiers` on the system clock.
    pub fn new(tiers: &[Tier]) -> Self {
        Self::with_clock(tiers, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalLimiter<C> {
    /// Limiters for `tiers` on `clock` (tests pass governor's fake clock).
    pub fn with_clock(tiers: &[Tier], clock: C) -> Self {
        let tiers = tiers
            .iter()
            .map(|t| {
                let limiter = RateLimiter::dashmap_with_clock_and_hasher(
                    quota(t),
                    clock.clone(),
                    UserHash::default(),
                )
                .with_middleware::<StateInformationMiddleware>();
                (Arc::clone(&t.name), limiter)
            })
            .collect();
        LocalLimiter { tiers, clock }
    }

    /// Takes `cost` cells from `user`'s budget in `tier`, if it has them.
    /// A refusal takes nothing.
    pub fn check(&self, tier: &Tier, user: &Arc<str>, cost: NonZeroU32) -> Decision {
        let Some(limiter) = self.tiers.get(&tier.name) else {
            // Tiers are fixed at start-up; a tier without a limiter is refused, not waved through.
            return Decision::denied(tier, tier.window());
        };
        match limiter.check_key_n(user, cost) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                // The bucket is full again after the used cells drip back: at
                // most (burst - remaining) intervals, never an earlier promise.
                let used = tier.burst.get().saturating_sub(remaining);
                Decision::allowed(tier, remaining, tier.interval() * used)
            }
            Ok(Err(not_until)) => {
                let wait: Duration = not_until.wait_time_from(self.clock.now());
                Decision::denied(tier, wait)
            }
            Err(_insufficient) => Decision::denied(tier, tier.window()),
        }
    }

    /// Drops users whose budget has fully recovered (bounded memory).
    pub fn prune(&self) {
        for limiter in self.tiers.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Users tracked, over all tiers.
    pub fn tracked(&self) -> usize {
        self.tiers.values().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn tiers() -> Vec<Tier> {
        vec![
            Tier::new("default", 60, 5, 4),
            Tier::new("partner", 120, 10, 8),
        ]
    }

    fn one() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    #[test]
    fn burst_then_refill() {
        let clock = FakeRelativeClock::default();
        let tiers = tiers();
        let l = LocalLimiter::with_clock(&tiers, clock.clone());
        let user: Arc<str> = "alice".into();
        let remaining: Vec<u32> = (0..5)
            .map(|_| l.check(&tiers[0], &user, one()).remaining)
            .collect();
        assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
        let d = l.check(&tiers[0], &user, one());
        assert!(!d.allowed);
        assert_eq!(
            d.retry_after,
            Duration::from_secs(1),
            "one cell per second at 60/min"
        );
        clock.advance(Duration::from_millis(999));
        assert!(!l.check(&tiers[0], &user, one()).allowed);
        clock.advance(Duration::from_millis(1));
        let d = l.check(&tiers[0], &user, one());
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            l.check(&tiers[0], &user, one()).remaining,
            4,
            "fully refilled after 5 s"
        );
    }

    #[test]
    fn users_and_tiers_are_independent() {
        let clock = FakeRelativeClock::default();
        let tiers = tiers();
        let l = LocalLimiter::with_clock(&tiers, clock);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for _ in 0..5 {
            assert!(l.check(&tiers[0], &a, one()).allowed);
        }
        assert!(!l.check(&tiers[0], &a, one()).allowed);
        assert_eq!(
            l.check(&tiers[0], &b, one()).remaining,
            4,
            "b has its own budget"
        );
        let d = l.check(&tiers[1], &a, one());
        assert_eq!((d.limit, d.remaining), (10, 9), "the partner tier's budget");
    }

    #[test]
    fn refusals_consume_nothing() {
        let clock = FakeRelativeClock::default();
        let tiers = tiers();
        let l = LocalLimiter::with_clock(&tiers, clock.clone());
        let u: Arc<str> = "u".into();
        for _ in 0..5 {
            l.check(&tiers[0], &u, one());
        }
        for _ in 0..100 {
            assert!(!l.check(&tiers[0], &u, one()).allowed);
        }
        clock.advance(Duration::from_secs(1));
        assert!(
            l.check(&tiers[0], &u, one()).allowed,
            "100 refusals did not push the refill back"
        );
    }

    #[test]
    fn weighted_cost_and_reset() {
        let clock = FakeRelativeClock::default();
        let tiers = tiers();
        let l = LocalLimiter::with_clock(&tiers, clock.clone());
        let u: Arc<str> = "u".into();
        let d = l.check(&tiers[0], &u, NonZeroU32::new(3).unwrap());
        assert_eq!((d.remaining, d.reset), (2, Duration::from_secs(3)));
        let d = l.check(&tiers[0], &u, NonZeroU32::new(3).unwrap());
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_secs(1));
        let d = l.check(&tiers[0], &u, NonZeroU32::new(6).unwrap());
        assert!(!d.allowed, "more than the burst is never allowed");
    }

    #[test]
    fn idle_users_are_pruned() {
        let clock = FakeRelativeClock::default();
        let tiers = tiers();
        let l = LocalLimiter::with_clock(&tiers, clock.clone());
        for i in 0..100 {
            l.check(&tiers[0], &Arc::from(format!("u{i}")), one());
        }
        assert_eq!(l.tracked(), 100);
        clock.advance(Duration::from_secs(10));
        l.prune();
        assert_eq!(l.tracked(), 0);
    }
}
