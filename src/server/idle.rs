//! Connection idleness: bytes moved and requests in flight, so a connection
//! is closed only when it has done nothing for the idle timeout — a slow
//! report that sends no byte for minutes is not idle.
//!
//! It also keeps the time the client began its next request head, so a
//! head still unfinished after `listen.header_read_timeout` ends the
//! connection however slowly its bytes trickle in, across parking too.
//! (hyper's own header timer did the same with a timer per request.)

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock::coarse::Tick;

/// Last activity and in-flight requests of one connection. Its times are
/// coarse ([`Tick`]): every request moves bytes several times, and the
/// limits they are held to are seconds.
#[derive(Debug)]
pub(super) struct Activity {
    /// When a byte last moved or a request began or ended ([`Tick::to_nanos`]).
    last: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests started on this connection so far.
    started: AtomicU64,
    /// When the first byte after the last request's start arrived
    /// (`NO_HEAD` if none has): the start of the next request head.
    head: AtomicU64,
}

/// `head` when no byte of a next request has arrived (no reading is this
/// late: 584 years after boot).
const NO_HEAD: u64 = u64::MAX;

/// Why a connection went quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quiet {
    /// Nothing in flight, nothing moved: close politely.
    Idle,
    /// A response in flight that the client does not read: drop it.
    Stalled,
    /// A request head begun but not finished within its limit: drop it.
    SlowHead,
}

impl Quiet {
    /// Why a connection that went quiet was closed, for the log.
    pub(super) fn why(self) -> &'static str {
        match self {
            Quiet::Idle => "idle",
            Quiet::Stalled => "its client stopped reading",
            Quiet::SlowHead => "its request head did not finish in time",
        }
    }
}

/// When a connection counts as quiet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Nothing moved for this long with nothing in flight.
    pub(super) idle: Duration,
    /// Nothing moved for this long with a response in flight.
    pub(super) stall: Duration,
    /// A request head begun this long ago and not finished, if checked.
    pub(super) head: Option<Duration>,
}

/// Held while a request (including its response body) is in flight.
#[derive(Debug)]
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            last: AtomicU64::new(Tick::now().to_nanos()),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            head: AtomicU64::new(NO_HEAD),
        }
    }

    fn touch(&self) -> Tick {
        let now = Tick::now();
        self.last.store(now.to_nanos(), Ordering::Relaxed);
        now
    }

    /// Bytes arrived from the client: the first since the last request
    /// started begins the next request's head.
    fn received(&self) {
        let now = self.touch();
        self.head_begun(now);
    }

    /// Bytes of a next head are buffered (read with an earlier request's,
    /// then left when the connection was parked): its clock runs from now
    /// unless it runs already.
    pub(super) fn head_buffered(&self) {
        self.head_begun(Tick::now());
    }

    fn head_begun(&self, at: Tick) {
        if self.head.load(Ordering::Relaxed) == NO_HEAD {
            self.head.store(at.to_nanos(), Ordering::Relaxed);
        }
    }

    /// Requests started on this connection so far.
    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    pub(super) fn begin_request(self: &Arc<Self>) -> Busy {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head.store(NO_HEAD, Ordering::Relaxed);
        self.touch();
        Busy(Arc::clone(self))
    }

    /// Completes once the connection has been idle (no request, no bytes)
    /// for `limits.idle`, stalled (a request in flight, yet no byte moved
    /// either way) for `limits.stall` — a client that stopped reading its
    /// report — or, with `limits.head`, has had a request head begun and
    /// unfinished for that long.
    pub(super) async fn quiet(&self, limits: Limits) -> Quiet {
        loop {
            let last = Tick::from_nanos(self.last.load(Ordering::Relaxed));
            let busy = self.in_flight.load(Ordering::SeqCst) > 0;
            let (limit, quiet) = if busy {
                (limits.stall, Quiet::Stalled)
            } else {
                (limits.idle, Quiet::Idle)
            };
            let now = Tick::now();
            // A head that begins while this sleeps wakes nothing, so the
            // sleep is at most the head limit too: such a head is caught
            // within one more head limit (within the idle limit, `park_after`
            // when parking is on, if that is shorter).
            let every = limits
                .idle
                .min(limits.stall)
                .min(limits.head.unwrap_or(Duration::MAX));
            let mut wake = now.saturating_add(every);
            let head = self.head.load(Ordering::Relaxed);
            // A head's limit is not checked while a response is in flight.
            let head_limit = limits.head.filter(|_| !busy && head != NO_HEAD);
            let deadlines = [
                Some((last.saturating_add(limit), quiet)),
                head_limit.map(|limit| {
                    let begun = Tick::from_nanos(head);
                    (begun.saturating_add(limit), Quiet::SlowHead)
                }),
            ];
            for (deadline, why) in deadlines.into_iter().flatten() {
                if now >= deadline {
                    return why;
                }
                wake = wake.min(deadline);
            }
            // Wake at the first deadline, or sooner to notice a request
            // that started meanwhile (its limit may be shorter).
            tokio::time::sleep(wake.saturating_duration_since(now)).await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream that records when bytes move.
    pub(super) struct ActivityIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T> ActivityIo<T> {
    pub(super) fn new(inner: T, activity: Arc<Activity>) -> Self {
        ActivityIo { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.received();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn limits(idle: Duration, stall: Duration) -> Limits {
        Limits {
            idle,
            stall,
            head: None,
        }
    }

    const HEAD: Limits = Limits {
        idle: Duration::from_secs(1),
        stall: Duration::from_secs(300),
        head: Some(Duration::from_secs(10)),
    };

    /// `HEAD` with an idle limit far beyond the head limit (parking off).
    const LONG_IDLE: Limits = Limits {
        idle: Duration::from_secs(3600),
        ..HEAD
    };

    /// A client sending a byte of a head every half second, until aborted.
    fn trickle(a: &Arc<Activity>) -> tokio::task::JoinHandle<()> {
        let a = Arc::clone(a);
        tokio::spawn(async move {
            loop {
                a.received();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// A client sending a byte of its head every half second is never idle,
    /// yet its head has a deadline from its first byte.
    #[tokio::test(start_paused = true)]
    async fn a_head_that_trickles_in_is_cut_off_at_its_deadline() {
        let a = Arc::new(Activity::new());
        let start = Instant::now();
        let bytes = trickle(&a);
        assert_eq!(a.quiet(HEAD).await, Quiet::SlowHead);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        bytes.abort();
        // Without a head limit the same client is never quiet.
        let unlimited = Limits { head: None, ..HEAD };
        let bytes = trickle(&a);
        let waited = tokio::time::timeout(Duration::from_secs(40), a.quiet(unlimited));
        assert!(waited.await.is_err());
        bytes.abort();
    }

    /// With a long idle limit (parking off), a head that begins while the
    /// watchdog sleeps is still caught within twice the head limit.
    #[tokio::test(start_paused = true)]
    async fn a_head_begun_mid_sleep_is_caught_within_twice_its_limit() {
        let a = Arc::new(Activity::new());
        let start = Instant::now();
        let watch = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.quiet(LONG_IDLE).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bytes = trickle(&a);
        assert_eq!(watch.await.unwrap(), Quiet::SlowHead);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(11) && took <= Duration::from_secs(21),
            "{took:?}"
        );
        bytes.abort();
    }

    /// The head's clock starts at the first byte after a request started,
    /// stops when the next request starts, and is not read while a
    /// response is in flight.
    #[tokio::test(start_paused = true)]
    async fn the_head_clock_runs_from_a_heads_first_byte_to_its_request() {
        let a = Arc::new(Activity::new());
        // Quiet at first: no byte yet, so no head.
        let waited = tokio::time::timeout(Duration::from_secs(60), a.quiet(LONG_IDLE));
        assert!(waited.await.is_err());
        // A head's bytes, then its request: a response slower than the head
        // limit is not a slow head.
        a.received();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let busy = a.begin_request();
        a.received(); // the next request's first byte, pipelined
        tokio::time::sleep(Duration::from_secs(60)).await;
        let waited = tokio::time::timeout(Duration::from_secs(60), a.quiet(LONG_IDLE));
        assert!(waited.await.is_err(), "not while a response is in flight");
        drop(busy);
        // The pipelined head began two minutes ago and never finished.
        assert_eq!(a.quiet(LONG_IDLE).await, Quiet::SlowHead);
        // Its request starts: the clock stops.
        let _second = a.begin_request();
        let waited = tokio::time::timeout(Duration::from_secs(60), a.quiet(LONG_IDLE));
        assert!(waited.await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_response_is_detected() {
        let a = Arc::new(Activity::new());
        let _busy = a.begin_request();
        let start = Instant::now();
        assert_eq!(
            a.quiet(limits(Duration::from_secs(60), Duration::from_secs(300)))
                .await,
            Quiet::Stalled
        );
        assert!(start.elapsed() >= Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_requests_or_traffic() {
        let a = Arc::new(Activity::new());
        let limit = Duration::from_secs(60);
        // Idle after the limit when nothing happens.
        let start = Instant::now();
        assert_eq!(a.quiet(limits(limit, Duration::MAX)).await, Quiet::Idle);
        assert!(start.elapsed() >= limit);

        // A request in flight keeps the connection busy however long it takes.
        let busy = a.begin_request();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.quiet(limits(limit, Duration::MAX)).await })
        };
        tokio::time::sleep(limit * 5).await;
        assert!(!waiter.is_finished());
        drop(busy);
        let released = Instant::now();
        waiter.await.unwrap();
        assert!(
            released.elapsed() >= limit,
            "idle counts from the request's end"
        );
    }
}
