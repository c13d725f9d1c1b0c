//! One client connection, from its first byte to its close.
//!
//! HTTP/1.1 connections are served by hyper's HTTP/1 server one stretch of
//! activity at a time: once a connection has had nothing in flight and
//! moved no byte for `listen.park_after`, hyper is asked to finish, hands the
//! socket back, and the connection is *parked* — it keeps no hyper state
//! and no buffers (hyper holds 16 KiB per connection) until the client
//! sends its next byte, which starts a fresh hyper connection with that
//! byte in front. If a request slipped in while hyper was finishing, hyper
//! answered it with `Connection: close` and the connection is closed
//! instead. HTTP/2 (by ALPN or prior knowledge) is served by hyper-util's
//! auto server for the connection's whole life.
//!
//! Either way the connection is closed when it has been idle for
//! `listen.idle_timeout`, dropped when its client stops reading a response
//! for `listen.stall_timeout` or takes longer than
//! `listen.header_read_timeout` over a request head, and asked to close
//! after its in-flight requests at shutdown. Its [`Watchdog`] keeps these
//! limits beside the HTTP server.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::future::Either;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tower::util::Oneshot;
use tower::ServiceExt;

use super::idle::{Activity, ActivityIo, Busy, Limits, Quiet};
use super::stopped;
use super::watchdog::{Alarm, Watchdog, Woke};
use crate::body;
use crate::config::ListenConfig;
use crate::proxy::headers::Forwarding;
use crate::stack::Stack;

/// One year, the usual HSTS lifetime.
static HSTS: http::HeaderValue = http::HeaderValue::from_static("max-age=31536000");

/// The HTTP servers a worker's connections use, configured from `[listen]`.
#[derive(Debug)]
pub(super) struct Builders {
    http1: hyper::server::conn::http1::Builder,
    auto: auto::Builder<TokioExecutor>,
}

/// The HTTP/1 limits, set alike on hyper's HTTP/1 server and on the auto
/// server's HTTP/1 side (two builder types with the same setters). The
/// header read timeout is the connection's watchdog's for the first
/// (`Limits::head`), hyper's for the second.
macro_rules! http1_limits {
    ($builder:expr, $cfg:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_buf_size($cfg.max_header_bytes)
            .max_headers($cfg.max_headers)
            .keep_alive(true)
    };
}

/// What every listener's HTTP/2 has: a timer, at most `streams` streams
/// at once, and limits on the streams a client may reset or have reset
/// (the rapid-reset floods).
pub(super) fn http2_bounds(auto: &mut auto::Builder<TokioExecutor>, streams: u32) {
    auto.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(64));
}

impl Builders {
    pub(super) fn new(cfg: &ListenConfig) -> Builders {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        // Not hyper's default of 30 s either: hyper's timer would cost a
        // timer per request.
        http1_limits!(http1, cfg).header_read_timeout(None);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        http1_limits!(auto.http1(), cfg).header_read_timeout(cfg.header_read_timeout);
        http2_bounds(&mut auto, 100);
        auto.http2()
            .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Builders { http1, auto }
    }
}

/// A connection about to be served.
pub(super) struct Conn {
    pub(super) builders: Arc<Builders>,
    pub(super) peer: SocketAddr,
    /// `listen.idle_timeout`, `stall_timeout` and `header_read_timeout`.
    pub(super) limits: Limits,
    pub(super) park_after: Duration,
    pub(super) parked: prometheus::IntGauge,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) tls: bool,
}

/// Why hyper was asked to finish an HTTP/1 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// It was not: the client (or an error) ended it.
    No,
    /// To park it; the number of requests started until then.
    Park(u64),
    /// To close it (idle timeout, shutdown).
    Close,
}

/// The hyper service for one connection's requests: adds what the request
/// path knows of the connection, tracks the request for idleness, and
/// marks TLS answers with HSTS.
#[derive(Clone)]
struct ConnService {
    /// The connection's copy of the worker's stack, called in place (see
    /// [`call_ready`]); a cell because hyper calls its service through `&self`.
    svc: RefCell<Stack>,
    tracker: Arc<Activity>,
    tls: bool,
}

/// The future of `S` answering one request `R`: its own, or, when `S` was
/// not ready at once, a clone of it waiting to be.
type Called<S, R> = Either<<S as tower::Service<R>>::Future, Oneshot<S, R>>;

/// Calls `svc` with `req` in place when it is ready at once, which the
/// stack always is (its layers shed load by refusing, not by waiting):
/// no clone of every layer (a dozen reference counts up and down) and no
/// copy of it in the request's future. Otherwise a clone waits for
/// readiness and then answers, as tower's `oneshot` does.
fn call_ready<S, R>(svc: &RefCell<S>, req: R) -> Called<S, R>
where
    S: tower::Service<R> + Clone,
{
    // The borrow ends here: a called service's future borrows nothing from it.
    let mut svc = svc.borrow_mut();
    match svc.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => Either::Left(svc.call(req)),
        // Not ready, or failing: `oneshot` polls it again with the
        // request's waker and passes the failure on.
        _ => Either::Right(svc.clone().oneshot(req)),
    }
}

pin_project_lite::pin_project! {
    /// One request's answer through [`ConnService`]. Named rather than
    /// boxed: hyper keeps it in the connection's slot for the request in
    /// flight.
    struct Answer {
        #[pin]
        called: Called<Stack, Request<Incoming>>,
        // Taken when the answer is ready, by the response's body.
        busy: Option<Busy>,
        headers_only: bool,
        tls: bool,
    }
}

/// A response as the connection sends it: its body holds the connection's
/// busy mark until it is finished or dropped.
type Sent = http::Response<body::Guarded<Option<Busy>>>;

impl Future for Answer {
    type Output = Result<Sent, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match std::task::ready!(this.called.poll(cx)) {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let mut resp = body::fit(resp, *this.headers_only);
        if *this.tls {
            resp.headers_mut()
                .insert(http::header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
        }
        // Polled once more after this (which hyper does not do), the stack's
        // future would say so first.
        let busy = this.busy.take();
        Poll::Ready(Ok(resp.map(|b| body::Guarded::new(b, busy))))
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Sent;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        Answer {
            busy: Some(self.tracker.begin_request()),
            headers_only: body::headers_only(&req),
            tls: self.tls,
            called: call_ready(&self.svc, req),
        }
    }
}

/// Closes a connection the gateway is done with (flushing, and for TLS
/// sending close_notify), waiting at most a second for a client that
/// does not read.
async fn close<T: AsyncWrite + Unpin>(io: &mut T) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

impl Conn {
    /// Serves the connection with the worker's stack `svc`; `h2` when TLS
    /// negotiated HTTP/2. Not an `async fn`: the stack becomes the
    /// connection's service before the future is made, so the future does
    /// not also keep room for it as an argument for its whole life.
    pub(super) fn serve<T>(self, svc: Stack, stream: T, h2: bool) -> impl Future<Output = ()> + Send
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let svc = self.service(svc, &activity);
        self.serve_with(svc, activity, stream, h2)
    }

    async fn serve_with<T>(mut self, svc: ConnService, activity: Arc<Activity>, stream: T, h2: bool)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut io = ActivityIo::new(stream, Arc::clone(&activity));
        // The auto server's state is boxed (here and below), so it takes no
        // room in the tasks of HTTP/1 connections, which never use it.
        if h2 {
            let io = Prefixed::new(Bytes::new(), io);
            return Box::pin(self.serve_auto(io, svc, &activity)).await;
        }
        let mut first = true;
        let mut pending = Bytes::new();
        loop {
            if pending.is_empty() {
                // Parked (or new): nothing is held until the client speaks.
                let Some(byte) = self.next_byte(&mut io, &activity).await else {
                    return;
                };
                pending = Bytes::copy_from_slice(&[byte]);
                if first && byte == b'P' {
                    // Maybe HTTP/2's preface (`PRI * HTTP/2.0`): let the auto
                    // server tell (no Chime route takes PUT, POST or PATCH).
                    let io = Prefixed::new(pending, io);
                    return Box::pin(self.serve_auto(io, svc, &activity)).await;
                }
            }
            first = false;
            // Boxed, so a parked connection's task keeps no room for
            // serving (its watchdog and timers).
            match Box::pin(self.serve_http1(Prefixed::new(pending, io), svc.clone(), &activity))
                .await
            {
                Some((back, unread)) => {
                    (io, pending) = (back, unread);
                    if !pending.is_empty() {
                        // Part of a head came with an earlier request's
                        // bytes; no read may come to start its clock.
                        activity.head_buffered();
                    }
                }
                None => return,
            }
        }
    }

    /// The hyper service for this connection's requests, over `svc`.
    fn service(&self, svc: Stack, activity: &Arc<Activity>) -> ConnService {
        ConnService {
            svc: RefCell::new(svc.for_client(Forwarding::new(
                self.peer.ip(),
                if self.tls { "https" } else { "http" },
            ))),
            tracker: Arc::clone(activity),
            tls: self.tls,
        }
    }

    /// Waits for the client's next byte; `None` when the connection should
    /// close instead (end of stream, error, idle timeout, shutdown).
    async fn next_byte<T>(&mut self, io: &mut ActivityIo<T>, activity: &Activity) -> Option<u8>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut byte = [0u8; 1];
        self.parked.inc();
        let got = tokio::select! {
            read = io.read(&mut byte) => matches!(read, Ok(1)),
            () = stopped(&mut self.stop) => false,
            // Parked with nothing buffered: no head has begun.
            _ = activity.quiet(Limits { head: None, ..self.limits }) => false,
        };
        self.parked.dec();
        if got {
            return Some(byte[0]);
        }
        close(io).await;
        None
    }

    /// Serves HTTP/1 until the connection is parked (the socket and any
    /// bytes read past the last request come back) or closed (`None`).
    async fn serve_http1<T>(
        &mut self,
        io: Prefixed<ActivityIo<T>>,
        svc: ConnService,
        activity: &Activity,
    ) -> Option<(ActivityIo<T>, Bytes)>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let park = !self.park_after.is_zero() && self.park_after < self.limits.idle;
        // Boxed, so a parked connection's task does not keep its space.
        let mut conn = Box::new(self.builders.http1.serve_connection(TokioIo::new(io), svc));
        let mut watchdog = Watchdog::new(&self.stop, activity);
        let idle = if park {
            self.park_after
        } else {
            self.limits.idle
        };
        watchdog.arm(Limits {
            idle,
            ..self.limits
        });
        let mut finish = Finish::No;
        loop {
            // Once hyper is asked to finish, it finishes at once unless a
            // request or a head has begun; until it does, the connection's
            // own limits (not `park_after`) still hold.
            match watchdog.beside(|cx| conn.poll_without_shutdown(cx)).await {
                Woke::Served(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    return None;
                }
                Woke::Served(Ok(())) => break,
                Woke::Alarm(Alarm::Stop) => {
                    finish = Finish::Close;
                    Pin::new(&mut *conn).graceful_shutdown();
                    watchdog.arm(self.limits);
                }
                Woke::Alarm(Alarm::Quiet(Quiet::Idle)) if finish == Finish::No => {
                    finish = if park {
                        Finish::Park(activity.started())
                    } else {
                        Finish::Close
                    };
                    Pin::new(&mut *conn).graceful_shutdown();
                    // A shutdown meanwhile closes it instead.
                    watchdog.arm(self.limits);
                }
                // Idle for the idle timeout while hyper was finishing.
                Woke::Alarm(Alarm::Quiet(Quiet::Idle)) => return None,
                Woke::Alarm(Alarm::Quiet(quiet @ (Quiet::Stalled | Quiet::SlowHead))) => {
                    tracing::debug!(peer = %self.peer, why = quiet.why(), "closing a connection");
                    return None;
                }
            }
        }
        let parts = conn.into_parts();
        let (unread_prefix, io) = parts.io.into_inner().into_parts();
        match finish {
            // Nothing started since hyper was asked to finish: nothing was
            // answered with `Connection: close`, so the connection lives on.
            Finish::Park(started) if activity.started() == started => {
                // Copied: hyper's `read_buf` shares its whole read buffer,
                // which parking is meant to give back.
                let unread = if unread_prefix.is_empty() {
                    Bytes::copy_from_slice(&parts.read_buf)
                } else {
                    unread_prefix
                };
                Some((io, unread))
            }
            _ => {
                let mut io = io;
                close(&mut io).await;
                None
            }
        }
    }

    /// Serves HTTP/2 (or HTTP/1 that looked like it might be) with the auto
    /// server for the rest of the connection.
    async fn serve_auto<T>(self, io: Prefixed<ActivityIo<T>>, svc: ConnService, activity: &Activity)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self.builders.auto.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut watchdog = Watchdog::new(&self.stop, activity);
        // hyper's own header timer covers the auto server's HTTP/1.
        watchdog.arm(Limits {
            head: None,
            ..self.limits
        });
        loop {
            match watchdog.beside(|cx| conn.as_mut().poll(cx)).await {
                Woke::Served(res) => {
                    if let Err(e) = res {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                Woke::Alarm(Alarm::Stop | Alarm::Quiet(Quiet::Idle)) => {
                    conn.as_mut().graceful_shutdown();
                }
                Woke::Alarm(Alarm::Quiet(quiet @ (Quiet::Stalled | Quiet::SlowHead))) => {
                    tracing::debug!(peer = %self.peer, why = quiet.why(), "closing a connection");
                    break;
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream with bytes already read from it put back in front.
    pub(super) struct Prefixed<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Prefixed<T> {
    fn new(prefix: Bytes, inner: T) -> Self {
        Prefixed { prefix, inner }
    }

    /// The prefix bytes not read yet, and the stream.
    fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if this.prefix.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prefixed_reads_the_prefix_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"bc").await.unwrap();
        drop(client);
        let mut p = Prefixed::new(Bytes::from_static(b"a"), server);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "abc");
    }

    /// Ready after `pending` more polls (then failing if `fail`), counting
    /// its clones; answers twice the request.
    struct Slow {
        pending: Arc<std::sync::atomic::AtomicUsize>,
        fail: bool,
        clones: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Slow {
        fn new(pending: usize, fail: bool) -> (RefCell<Self>, Arc<std::sync::atomic::AtomicUsize>) {
            let clones = Arc::default();
            let svc = Slow {
                pending: Arc::new(pending.into()),
                fail,
                clones: Arc::clone(&clones),
            };
            (RefCell::new(svc), clones)
        }
    }

    impl tower::Service<u32> for Slow {
        type Response = u32;
        type Error = &'static str;
        type Future = std::future::Ready<Result<u32, &'static str>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.pending.load(SeqCst) > 0 {
                self.pending.fetch_sub(1, SeqCst);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(if self.fail { Err("broken") } else { Ok(()) })
        }

        fn call(&mut self, req: u32) -> Self::Future {
            std::future::ready(Ok(req * 2))
        }
    }

    impl Clone for Slow {
        fn clone(&self) -> Self {
            self.clones
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Slow {
                pending: Arc::clone(&self.pending),
                fail: self.fail,
                clones: Arc::clone(&self.clones),
            }
        }
    }

    #[tokio::test]
    async fn a_ready_service_is_called_in_place_and_one_that_is_not_is_waited_for() {
        use std::sync::atomic::Ordering::SeqCst;
        let (ready, clones) = Slow::new(0, false);
        assert_eq!(call_ready(&ready, 4).await, Ok(8));
        assert!(matches!(call_ready(&ready, 1), Either::Left(_)));
        assert_eq!(clones.load(SeqCst), 0, "called without a clone");

        let (slow, clones) = Slow::new(2, false);
        let called = call_ready(&slow, 5);
        assert!(matches!(called, Either::Right(_)));
        assert_eq!(called.await, Ok(10), "answered once ready");
        assert_eq!(clones.load(SeqCst), 1, "one clone waited");

        let (broken, _) = Slow::new(0, true);
        assert_eq!(call_ready(&broken, 5).await, Err("broken"));
    }
}
