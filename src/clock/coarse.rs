//! The monotonic and wall clocks at the kernel tick's resolution (1 to 4
//! ms), for what is measured in seconds: when a client connection last
//! moved a byte, how long an upstream connection has sat idle, when a key
//! was last used.
//!
//! Each request moves bytes several times, and a precise reading
//! (`Instant::now`, the time-stamp counter read through the vDSO) costs
//! about 24 ns on the 2-core machines the benchmarks run on, against about
//! 5 ns for the coarse clock, which the kernel keeps at each tick
//! (`cargo bench --bench pipeline -- "clock read"`).
//! (callgrind does not see either: under valgrind they are system calls,
//! so `benches/instructions.sh` counts them apart.)
//!
//! In unit tests a [`Tick`] follows tokio's clock, so tests that pause and
//! advance time drive it too.

use std::time::Duration;

use rustix::time::{clock_gettime, ClockId, Timespec};

/// The coarse monotonic and wall clocks where the kernel has them;
/// elsewhere the precise ones, which are only slower.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const COARSE: ClockId = ClockId::MonotonicCoarse;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const COARSE: ClockId = ClockId::Monotonic;
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const COARSE_WALL: ClockId = ClockId::RealtimeCoarse;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const COARSE_WALL: ClockId = ClockId::Realtime;

/// The wall clock to within a tick, for what is kept in whole seconds (a
/// key's last use).
pub fn wall() -> jiff::Timestamp {
    let t = clock_gettime(COARSE_WALL);
    let nanos = i32::try_from(t.tv_nsec).unwrap_or(0);
    jiff::Timestamp::new(t.tv_sec, nanos).unwrap_or_else(|_| jiff::Timestamp::now())
}

/// A reading of the monotonic clock, in nanoseconds since boot; a coarse
/// one lags a precise one by less than a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// Now, to within a tick.
    #[cfg(not(test))]
    pub fn now() -> Tick {
        Tick::coarse()
    }

    /// Now on tokio's clock (unit tests: it may be paused).
    #[cfg(test)]
    pub fn now() -> Tick {
        Tick::of(tokio::time::Instant::now().into_std())
    }

    /// The kernel's coarse monotonic clock.
    fn coarse() -> Tick {
        Tick::from_timespec(clock_gettime(COARSE))
    }

    fn from_timespec(t: Timespec) -> Tick {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
        Tick(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// `at` on this clock (`std::time::Instant` reads the same clock
    /// precisely), through one pair of readings taken together.
    #[cfg(test)]
    fn of(at: std::time::Instant) -> Tick {
        static ANCHOR: std::sync::OnceLock<(std::time::Instant, Tick)> = std::sync::OnceLock::new();
        let (instant, tick) = *ANCHOR.get_or_init(|| {
            let now = std::time::Instant::now();
            (now, Tick::from_timespec(clock_gettime(ClockId::Monotonic)))
        });
        match at.checked_duration_since(instant) {
            Some(after) => tick.saturating_add(after),
            None => tick.saturating_sub(instant.duration_since(at)),
        }
    }

    /// `self` plus `d`, at most the last representable reading.
    pub fn saturating_add(self, d: Duration) -> Tick {
        Tick(self.0.saturating_add(nanos(d)))
    }

    /// `self` less `d`, at least boot.
    pub fn saturating_sub(self, d: Duration) -> Tick {
        Tick(self.0.saturating_sub(nanos(d)))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// As a number, for an atomic.
    pub fn to_nanos(self) -> u64 {
        self.0
    }

    /// From [`Tick::to_nanos`].
    pub fn from_nanos(nanos: u64) -> Tick {
        Tick(nanos)
    }
}

/// `d` in nanoseconds, at most `u64::MAX` (584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What production reads is the monotonic clock, less than a tick (4 ms
    /// at 250 Hz; 50 ms allowed for a loaded machine) behind a precise
    /// reading taken after it.
    #[test]
    fn the_coarse_clock_lags_the_precise_one_by_less_than_a_tick() {
        for _ in 0..1000 {
            let coarse = Tick::coarse();
            let precise = Tick::of(std::time::Instant::now());
            // Ahead by no more than the two readings of the anchor apart.
            let ahead = coarse.saturating_duration_since(precise);
            assert!(
                ahead < Duration::from_millis(1),
                "coarse ahead by {ahead:?}"
            );
            let lag = precise.saturating_duration_since(coarse);
            assert!(lag < Duration::from_millis(50), "lag {lag:?}");
        }
    }

    #[test]
    fn instants_before_and_after_the_anchor_keep_their_distance() {
        let a = std::time::Instant::now();
        let b = a + Duration::from_secs(3);
        assert_eq!(
            Tick::of(b).saturating_duration_since(Tick::of(a)),
            Duration::from_secs(3)
        );
        let c = Tick::of(a).saturating_sub(Duration::from_secs(1));
        assert_eq!(
            Tick::of(a).saturating_duration_since(c),
            Duration::from_secs(1)
        );
        assert_eq!(c.saturating_duration_since(Tick::of(a)), Duration::ZERO);
    }

    #[test]
    fn the_coarse_wall_clock_lags_the_precise_one_by_less_than_a_tick() {
        for _ in 0..1000 {
            let coarse = wall();
            let precise = jiff::Timestamp::now();
            let lag = precise.duration_since(coarse);
            assert!(
                lag >= jiff::SignedDuration::ZERO && lag < jiff::SignedDuration::from_millis(50),
                "lag {lag:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn in_tests_it_follows_tokios_paused_clock() {
        let before = Tick::now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(
            Tick::now().saturating_duration_since(before),
            Duration::from_secs(90)
        );
    }
}
