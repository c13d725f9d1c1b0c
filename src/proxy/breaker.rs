//! A passive circuit breaker for the upstream.
//!
//! After `threshold` consecutive connect failures or timeouts the circuit
//! opens: requests fail fast with 503 `upstream_circuit_open` and
//! `Retry-After` for the cool-down, instead of each waiting for a connect
//! timeout. Then one request is let through as a probe (half-open): an
//! answer closes the circuit, a failure opens it for another cool-down.
//!
//! Every proxied request asks [`Breaker::admit`] and reports
//! [`Breaker::success`]; while the circuit is closed and clean both read
//! one atomic flag and take no lock, so a healthy gateway's requests never
//! queue on this shared state. (A request racing a state change may see
//! the old state: one extra request passes, or one success is ordered
//! before a concurrent failure — either is what could have happened
//! anyway.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// See the module docs.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
    /// `state` is `Closed { .. }`.
    closed: AtomicBool,
    /// `state` is `Closed { failures: 0 }`.
    clean: AtomicBool,
}

impl Breaker {
    /// A breaker opening after `threshold` failures (0: never) for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            threshold,
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
            closed: AtomicBool::new(true),
            clean: AtomicBool::new(true),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request may go upstream now; if not, how long to wait.
    pub fn admit(&self) -> Result<(), Duration> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    Err(until - now)
                } else {
                    *state = State::HalfOpen { probing: true };
                    Ok(())
                }
            }
            State::HalfOpen { probing: true } => Err(Duration::from_secs(1)),
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(())
            }
        }
    }

    /// The upstream answered.
    pub fn success(&self) {
        if self.clean.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state();
        *state = State::Closed { failures: 0 };
        self.closed.store(true, Ordering::Release);
        self.clean.store(true, Ordering::Release);
    }

    /// A connect failure or timeout; returns true when this opened the circuit.
    pub fn failure(&self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut state = self.state();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen { .. } | State::Open { .. } => self.threshold,
        };
        self.clean.store(false, Ordering::Release);
        if failures >= self.threshold {
            *state = State::Open {
                until: Instant::now() + self.cool_down,
            };
            self.closed.store(false, Ordering::Release);
            true
        } else {
            *state = State::Closed { failures };
            false
        }
    }

    /// Whether the circuit is open (for readiness and metrics).
    pub fn is_open(&self) -> bool {
        !matches!(*self.state(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.admit().is_ok());
            assert!(!b.failure());
        }
        b.success();
        for _ in 0..2 {
            b.failure();
        }
        assert!(b.admit().is_ok(), "a success reset the count");
        assert!(b.failure(), "third consecutive failure opens");
        assert_eq!(b.admit(), Err(Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(b.admit(), Err(Duration::from_secs(6)));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(b.admit().is_ok(), "one probe");
        assert!(b.admit().is_err(), "only one probe at a time");
        assert!(b.failure(), "a failed probe opens again");
        assert!(b.admit().is_err());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(b.admit().is_ok());
        b.success();
        assert!(b.admit().is_ok() && b.admit().is_ok() && !b.is_open());
    }

    #[test]
    fn zero_threshold_never_opens() {
        let b = Breaker::new(0, Duration::from_secs(10));
        for _ in 0..100 {
            assert!(!b.failure());
            assert!(b.admit().is_ok());
        }
    }
}
