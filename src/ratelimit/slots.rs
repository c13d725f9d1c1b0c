//! Caps on what is held at once — a user's requests in flight, the
//! gateway's requests to Chime — taken without waiting: a request gets a
//! slot at once or is refused, never queued.
//!
//! A counter rather than tokio's semaphore: the semaphore's every release
//! takes its wait-queue lock although nothing here ever waits, and both
//! workers took that lock on every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Up to `max` slots.
#[derive(Debug)]
pub struct Slots {
    held: AtomicUsize,
    max: usize,
}

/// One slot, given back when dropped.
#[derive(Debug)]
#[must_use = "the slot is given back as soon as it is dropped"]
pub struct Slot(Arc<Slots>);

impl Slots {
    /// `max` slots (at least one).
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            held: AtomicUsize::new(0),
            max: max.max(1),
        })
    }

    /// A slot, if one is free.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.held
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |held| {
                (held < self.max).then_some(held + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_are_held_and_dropping_gives_back() {
        let slots = Slots::new(2);
        let a = slots.try_take().unwrap();
        let b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        assert_eq!(slots.held(), 2);
        drop(a);
        let c = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop((b, c));
        assert_eq!(slots.held(), 0);
        assert!(Slots::new(0).try_take().is_some(), "at least one slot");
    }

    #[test]
    fn threads_taking_at_once_never_exceed_the_cap() {
        let slots = Slots::new(3);
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (slots, peak) = (Arc::clone(&slots), Arc::clone(&peak));
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(slot) = slots.try_take() {
                            peak.fetch_max(slots.held(), Ordering::Relaxed);
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(slots.held(), 0);
    }
}
