//! Connection idleness: bytes moved and requests in flight, so a connection
//! is closed only when it has done nothing for the idle timeout — a slow
//! report that sends no byte for minutes is not idle.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Last activity and in-flight requests of one connection.
#[derive(Debug)]
pub(super) struct Activity {
    origin: Instant,
    last_nanos: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests started on this connection so far.
    started: AtomicU64,
}

/// Why a connection went quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quiet {
    /// Nothing in flight, nothing moved: close politely.
    Idle,
    /// A response in flight that the client does not read: drop it.
    Stalled,
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
            origin: Instant::now(),
            last_nanos: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Requests started on this connection so far.
    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    pub(super) fn begin_request(self: &Arc<Self>) -> Busy {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(Arc::clone(self))
    }

    /// Completes once the connection has been idle (no request, no bytes)
    /// for `idle`, or stalled (a request in flight, yet no byte moved either
    /// way) for `stall` — a client that stopped reading its report.
    pub(super) async fn quiet(&self, idle: Duration, stall: Duration) -> Quiet {
        loop {
            let last = self.origin + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed));
            let busy = self.in_flight.load(Ordering::SeqCst) > 0;
            let limit = if busy { stall } else { idle };
            let now = Instant::now();
            if let Some(deadline) = last.checked_add(limit) {
                if now >= deadline {
                    return if busy { Quiet::Stalled } else { Quiet::Idle };
                }
                // Wake at the deadline, or sooner to notice a request that
                // started meanwhile (its limit may be shorter).
                tokio::time::sleep_until(deadline.min(now + idle.min(stall))).await;
            } else {
                tokio::time::sleep(idle).await;
            }
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
            this.activity.touch();
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

    #[tokio::test(start_paused = true)]
    async fn a_stalled_response_is_detected() {
        let a = Arc::new(Activity::new());
        let _busy = a.begin_request();
        let start = Instant::now();
        assert_eq!(
            a.quiet(Duration::from_secs(60), Duration::from_secs(300))
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
        assert_eq!(a.quiet(limit, Duration::MAX).await, Quiet::Idle);
        assert!(start.elapsed() >= limit);

        // A request in flight keeps the connection busy however long it takes.
        let busy = a.begin_request();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.quiet(limit, Duration::MAX).await })
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
