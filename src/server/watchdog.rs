//! What watches a connection while it is served: the shutdown signal and
//! its idleness, polled only when one of them has news.
//!
//! A connection's task wakes several times per request (the client's
//! bytes, Chime's answer, the client's socket taking the response). A
//! `tokio::select!` over the connection, the shutdown signal and the idle
//! timer polls all three on every one of those wake-ups, although only the
//! connection had changed. The watchdog's alarm gets a waker of its own,
//! which marks the alarm as due before waking the task, and the alarm is
//! polled only when due.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

use super::idle::{Activity, Limits, Quiet};
use super::stopped;

/// Why the watchdog woke the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alarm {
    /// The gateway is shutting down.
    Stop,
    /// The connection went quiet.
    Quiet(Quiet),
}

/// What a connection served beside its watchdog woke up for.
#[derive(Debug)]
pub(super) enum Woke<T> {
    /// The connection's server finished, with this.
    Served(T),
    /// The alarm went off.
    Alarm(Alarm),
}

/// Set by the alarm's waker; read (and cleared) by the connection's task.
#[derive(Debug, Default)]
struct Due {
    due: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Due {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.due.store(true, Ordering::Release);
        self.task.wake();
    }
}

type AlarmFuture<'a> = Pin<Box<dyn Future<Output = Alarm> + Send + 'a>>;

/// The shutdown signal and the connection's quiet limits.
pub(super) struct Watchdog<'a> {
    alarm: Option<AlarmFuture<'a>>,
    due: Arc<Due>,
    waker: Waker,
    stop: watch::Receiver<bool>,
    /// Whether `Alarm::Stop` has been reported: it is not watched for again.
    stopped: bool,
    activity: &'a Activity,
}

impl std::fmt::Debug for Watchdog<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("armed", &self.alarm.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Watchdog<'a> {
    /// A watchdog for the shutdown signal `stop` and `activity`, not armed yet.
    pub(super) fn new(stop: &watch::Receiver<bool>, activity: &'a Activity) -> Self {
        let due = Arc::new(Due::default());
        Watchdog {
            alarm: None,
            waker: Waker::from(Arc::clone(&due)),
            due,
            stop: stop.clone(),
            stopped: false,
            activity,
        }
    }

    /// Watches for the shutdown signal (until it has been reported) and for
    /// the connection going quiet under `limits`; replaces what was watched.
    pub(super) fn arm(&mut self, limits: Limits) {
        let mut stop = self.stop.clone();
        let watch_stop = !self.stopped;
        let activity = self.activity;
        self.alarm = Some(Box::pin(async move {
            let stop = async {
                if watch_stop {
                    stopped(&mut stop).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = stop => Alarm::Stop,
                quiet = activity.quiet(limits) => Alarm::Quiet(quiet),
            }
        }));
        // Polled at the next poll, which registers its timer and channel.
        self.due.due.store(true, Ordering::Release);
    }

    /// Polls `serve` (the connection's server) on every wake-up and the
    /// alarm when it is due, until either is ready.
    pub(super) async fn beside<T>(
        &mut self,
        mut serve: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Woke<T> {
        std::future::poll_fn(|cx| match serve(cx) {
            Poll::Ready(done) => Poll::Ready(Woke::Served(done)),
            Poll::Pending => self.poll_alarm(cx).map(Woke::Alarm),
        })
        .await
    }

    /// The alarm, once it has gone off; an alarm is reported once, and the
    /// watchdog is disarmed until armed again.
    pub(super) fn poll_alarm(&mut self, cx: &mut Context<'_>) -> Poll<Alarm> {
        let Some(alarm) = self.alarm.as_mut() else {
            return Poll::Pending;
        };
        // Registered before the flag is read: a wake-up after the read
        // finds this task's waker.
        self.due.task.register(cx.waker());
        if !self.due.due.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let fired = alarm.as_mut().poll(&mut Context::from_waker(&self.waker));
        if let Poll::Ready(alarm) = fired {
            self.alarm = None;
            self.stopped |= alarm == Alarm::Stop;
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::time::Instant;

    const LIMITS: Limits = Limits {
        idle: Duration::from_secs(60),
        stall: Duration::from_secs(300),
        head: None,
    };

    /// Waits for the alarm: the idle one, not before the idle limit.
    async fn goes_idle(dog: &mut Watchdog<'_>) {
        let start = Instant::now();
        assert_eq!(
            poll_fn(|cx| dog.poll_alarm(cx)).await,
            Alarm::Quiet(Quiet::Idle)
        );
        assert!(start.elapsed() >= LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn goes_off_when_the_connection_is_idle() {
        let (_tx, rx) = watch::channel(false);
        let activity = Activity::new();
        let mut dog = Watchdog::new(&rx, &activity);
        dog.arm(LIMITS);
        goes_idle(&mut dog).await;
        // Reported once: disarmed afterwards.
        assert!(dog.alarm.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn goes_off_at_shutdown() {
        let (tx, rx) = watch::channel(false);
        let activity = Activity::new();
        let mut dog = Watchdog::new(&rx, &activity);
        dog.arm(LIMITS);
        let waiter = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(true).unwrap();
        });
        let start = Instant::now();
        assert_eq!(poll_fn(|cx| dog.poll_alarm(cx)).await, Alarm::Stop);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        waiter.await.unwrap();
    }

    /// After the shutdown signal, re-arming watches idleness alone: the
    /// signal, still set, is not reported again.
    #[tokio::test(start_paused = true)]
    async fn the_shutdown_signal_is_reported_once() {
        let (tx, rx) = watch::channel(false);
        let activity = Activity::new();
        let mut dog = Watchdog::new(&rx, &activity);
        dog.arm(LIMITS);
        tx.send(true).unwrap();
        assert_eq!(poll_fn(|cx| dog.poll_alarm(cx)).await, Alarm::Stop);
        dog.arm(LIMITS);
        goes_idle(&mut dog).await;
    }

    /// Counts the polls of the future it wraps.
    struct Counted<F> {
        inner: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.inner.as_mut().poll(cx)
        }
    }

    /// The point of the watchdog: the task's other wake-ups do not poll the
    /// alarm. An alarm that counts its polls stands in for the real one.
    #[tokio::test(start_paused = true)]
    async fn the_alarm_is_polled_only_when_its_own_waker_fired() {
        let (_tx, rx) = watch::channel(false);
        let activity = Activity::new();
        let mut dog = Watchdog::new(&rx, &activity);
        let polls = Arc::new(AtomicUsize::new(0));
        dog.alarm = Some(Box::pin(Counted {
            inner: Box::pin(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Alarm::Stop
            }),
            polls: Arc::clone(&polls),
        }));
        dog.due.due.store(true, Ordering::Release);
        // A hundred wake-ups of the task that are not the alarm's.
        let mut own_polls = 0;
        let fired = poll_fn(|cx| {
            own_polls += 1;
            if own_polls <= 100 {
                cx.waker().wake_by_ref();
            }
            dog.poll_alarm(cx)
        })
        .await;
        assert_eq!(fired, Alarm::Stop);
        assert!(own_polls > 100);
        // Polled when armed and when its timer fired: once each.
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
