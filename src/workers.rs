//! Thread-per-core workers: the public listener is served by `N` threads,
//! each with its own single-threaded tokio runtime.
//!
//! A request's server connection, its upstream connection and every task
//! between them then live on one thread, so handing a request to the
//! upstream connection and its answer back costs no cross-thread wake-up
//! (with tokio's work-stealing runtime, these were a futex and a context
//! switch per request: benches/RESULTS.md). Each worker has its own
//! upstream connection pool ([`PerWorker`]); shared state (keys, limits,
//! metrics, the cache) is thread-safe and shared by all.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

thread_local! {
    /// 1 + this thread's worker number; 0 on any other thread.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// What every worker runs on its own thread once a second, besides its
/// tasks: set by the binary (the allocator's collection of what that
/// thread freed, `src/allocator.rs`); in tests, only by the test of it.
static HOUSEKEEPING: OnceLock<fn()> = OnceLock::new();
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// Makes every worker started from now on run `f` on its own thread once
/// a second (first at its start). The first call wins.
pub fn set_housekeeping(f: fn()) {
    let _ = HOUSEKEEPING.set(f);
}

/// Runs `f` now and then once every [`HOUSEKEEPING_EVERY`], on the worker
/// that spawned it, until its runtime stops.
async fn housekeeping(f: fn()) {
    let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        f();
    }
}

/// The number of workers `configured` asks for: itself, or one per CPU
/// core when it is 0.
pub fn resolve(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// One value per worker, plus one for every other thread (the control
/// runtime's background tasks, tests): each thread uses its own, so
/// nothing in it is ever touched by two threads' runtimes.
#[derive(Debug)]
pub struct PerWorker<T> {
    slots: Box<[T]>,
}

impl<T> PerWorker<T> {
    /// `make(i)` for each of `workers + 1` slots.
    pub fn new(workers: usize, make: impl FnMut(usize) -> T) -> PerWorker<T> {
        PerWorker {
            slots: (0..=workers).map(make).collect(),
        }
    }

    /// [`PerWorker::new`] for a `make` that can fail.
    pub fn try_new<E>(
        workers: usize,
        make: impl FnMut(usize) -> Result<T, E>,
    ) -> Result<PerWorker<T>, E> {
        Ok(PerWorker {
            slots: (0..=workers).map(make).collect::<Result<_, E>>()?,
        })
    }

    /// Every slot's value.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter()
    }

    /// This thread's value.
    pub fn get(&self) -> &T {
        let slot = SLOT.with(Cell::get);
        &self.slots[slot % self.slots.len()]
    }
}

/// Running workers. Dropping this (or [`Workers::stop`]) ends them: each
/// runtime is dropped, which cancels whatever it still runs.
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers; worker `i` runs `task(i)` on its own runtime and,
    /// once that returns, keeps running the tasks it spawned until stopped.
    pub fn start<F, Fut>(n: usize, task: F) -> std::io::Result<Workers>
    where
        F: Fn(usize) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (stop, _) = watch::channel(false);
        // Workers log where the thread that started them logs (which, in a
        // test, may be a subscriber of that thread's own).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let task = task.clone();
            let mut stopped = stop.subscribe();
            let dispatch = dispatch.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("chime-gw-{i}"))
                    .spawn(move || {
                        SLOT.with(|s| s.set(i + 1));
                        let _logging = tracing::dispatcher::set_default(&dispatch);
                        runtime.block_on(async move {
                            if let Some(&f) = HOUSEKEEPING.get() {
                                tokio::spawn(housekeeping(f));
                            }
                            task(i).await;
                            // Connections still draining keep running until
                            // the stop (or the `Workers` being dropped).
                            let _ = stopped.wait_for(|s| *s).await;
                        });
                    })?,
            );
        }
        Ok(Workers { stop, threads })
    }

    /// Stops every worker and waits for its thread to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn resolve_zero_means_one_per_core() {
        assert_eq!(resolve(3), 3);
        assert!(resolve(0) >= 1);
    }

    #[tokio::test]
    async fn each_worker_sees_its_own_slot_and_others_slot_zero() {
        let values = Arc::new(PerWorker::new(2, |i| i * 10));
        assert_eq!(*values.get(), 0, "a non-worker thread uses slot 0");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (v, s) = (Arc::clone(&values), Arc::clone(&seen));
        let workers = Workers::start(2, move |i| {
            let (v, s) = (Arc::clone(&v), Arc::clone(&s));
            async move { s.lock().unwrap().push((i, *v.get())) }
        })
        .unwrap();
        workers.stop().await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, vec![(0, 10), (1, 20)]);
    }

    /// The threads the housekeeping hook ran on.
    static KEPT_ON: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn note_thread() {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        KEPT_ON.lock().unwrap().push(name);
    }

    #[tokio::test]
    async fn housekeeping_runs_on_every_worker_thread() {
        set_housekeeping(note_thread);
        let workers = Workers::start(2, |_| async {}).unwrap();
        // Its first round is at each worker's start.
        let all_ran = async {
            loop {
                let mut names = KEPT_ON.lock().unwrap().clone();
                names.sort_unstable();
                names.dedup();
                if names.iter().any(|n| n == "chime-gw-0")
                    && names.iter().any(|n| n == "chime-gw-1")
                {
                    return names;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let names = tokio::time::timeout(Duration::from_secs(5), all_ran)
            .await
            .expect("housekeeping ran on both workers");
        assert!(
            names.iter().all(|n| n.starts_with("chime-gw-")),
            "only workers run it: {names:?}"
        );
        workers.stop().await;
    }

    #[tokio::test]
    async fn stop_cancels_what_workers_still_run() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let workers = Workers::start(1, move |_| {
            let tx = tx.clone();
            async move {
                // A task that would run forever; holding `tx` until dropped.
                tokio::spawn(async move {
                    let _tx = tx;
                    std::future::pending::<()>().await;
                });
            }
        })
        .unwrap();
        workers.stop().await;
        assert!(rx.recv().await.is_none(), "the pending task was dropped");
    }
}
