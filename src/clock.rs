//! Time as a dependency, so expiry and relative windows are testable with a
//! fixed "now".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use jiff::Timestamp;

pub mod coarse;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Now to within a kernel tick (1 to 4 ms), for what is kept in whole
    /// seconds; [`Clock::now`] unless the clock has a cheaper reading.
    fn now_coarse(&self) -> Timestamp {
        self.now()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn now_coarse(&self) -> Timestamp {
        coarse::wall()
    }
}

/// A clock that says what it is told, and counts how often it is read
/// (tests).
#[derive(Debug)]
pub struct FixedClock {
    at: Mutex<Timestamp>,
    precise: AtomicUsize,
    coarse: AtomicUsize,
}

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn new(at: Timestamp) -> Self {
        FixedClock {
            at: Mutex::new(at),
            precise: AtomicUsize::new(0),
            coarse: AtomicUsize::new(0),
        }
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// How many times it was read so far: precisely ([`Clock::now`]) and
    /// coarsely ([`Clock::now_coarse`]).
    pub fn readings(&self) -> (usize, usize) {
        (
            self.precise.load(Ordering::SeqCst),
            self.coarse.load(Ordering::SeqCst),
        )
    }

    fn read(&self) -> Timestamp {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.precise.fetch_add(1, Ordering::SeqCst);
        self.read()
    }

    fn now_coarse(&self) -> Timestamp {
        self.coarse.fetch_add(1, Ordering::SeqCst);
        self.read()
    }
}
