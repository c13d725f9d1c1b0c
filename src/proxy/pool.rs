//! The upstream connection pool: one per worker thread, over hyper's
//! connection-level client (`hyper::client::conn`).
//!
//! The gateway has one upstream and each worker has its own pool
//! ([`crate::workers::PerWorker`]), so a pool is a stack of idle HTTP/1
//! connections, the most recently used on top, and at most one HTTP/2
//! connection that requests share. There is no pool key to hash and no
//! queue of waiters, which hyper-util's general pooled client spent an
//! eighth of the gateway's instructions per request on. What the gateway
//! relied on from that client is kept:
//! - a request that meets a pooled connection the upstream has closed, and
//!   so was never written, is sent again on another connection;
//! - a failed connect is tried once more (counted as `connect_retried`),
//!   since nothing reached Chime;
//! - errors say whether connecting failed ([`SendError::is_connect`]);
//! - TLS, with HTTP/2 when the upstream picks it by ALPN;
//! - at most `pool_max_idle_per_host` idle connections are kept, and each
//!   is closed after `pool_idle_timeout` unused.
//!
//! An HTTP/1 connection goes back on the stack once its response body has
//! been read to the end ([`UpstreamBody`]). One whose body is dropped
//! before that is closed: the rest of its answer is still on the wire.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntCounter;
use tokio::time::Instant;
use tower::ServiceExt;

use super::client::Connector;
use crate::BoxError;

/// How much one read from an upstream connection takes at most. A fixed
/// size, rather than hyper's default that grows to 400 KiB: a streamed
/// body's chunks share their read buffer, so while readers hold some,
/// every refill is a new buffer, and 400 KiB ones are freed and allocated
/// again faster than the allocator hands them back. Streaming 1 GiB with
/// the cache off peaked at +17 MiB RSS with hyper's default, +5 MiB with
/// 128 KiB and +3 MiB with 64 KiB, at the same speed.
const READ_BUFFER: usize = 64 * 1024;

/// How long a pooled HTTP/1 connection that is not ready yet (its task
/// still finishing the previous answer, which takes microseconds) is
/// waited for before it is dropped and another used.
const READY_WAIT: Duration = Duration::from_millis(100);

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (TCP or TLS), twice.
    #[error("could not connect to the upstream")]
    Connect(#[source] BoxError),
    /// Connected, but the exchange failed before the response head.
    #[error("the upstream exchange failed: {0}")]
    Exchange(hyper::Error),
}

impl SendError {
    /// Whether connecting failed (nothing reached the upstream).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

/// Where the pool connects, and how.
#[derive(Debug)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// Most idle HTTP/1 connections kept.
    pub max_idle: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// One worker's connections to the upstream.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    connector: Connector,
    scheme: Scheme,
    authority: Authority,
    /// `Host` for HTTP/1 requests: the authority without a default port.
    host: HeaderValue,
    max_idle: usize,
    idle_timeout: Duration,
    connect_retried: IntCounter,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Idle HTTP/1 connections, the most recently used last.
    idle: Vec<Idle>,
    /// The shared HTTP/2 connection, when the upstream speaks it.
    h2: Option<http2::SendRequest<Empty<Bytes>>>,
    /// Whether a task is closing expired idle connections.
    reaping: bool,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<Empty<Bytes>>,
    since: Instant,
}

impl Idle {
    /// Whether it has been idle for `timeout` by `now`.
    fn expired(&self, now: Instant, timeout: Duration) -> bool {
        now.duration_since(self.since) >= timeout
    }
}

/// A connection ready for one request.
enum Conn {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Pool {
    /// A pool connecting through `connector`; `connect_retried` counts
    /// failed connects that are tried again.
    pub fn new(connector: Connector, target: Target, connect_retried: IntCounter) -> Pool {
        let Target {
            scheme,
            authority,
            max_idle,
            idle_timeout,
        } = target;
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(p) if p != default_port => authority.as_str(),
            _ => authority.host(),
        };
        Pool {
            shared: Arc::new(Shared {
                connector,
                // An `Authority` holds only characters a header value may.
                host: HeaderValue::from_str(host)
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                scheme,
                authority,
                max_idle,
                idle_timeout,
                connect_retried,
                state: Mutex::default(),
            }),
        }
    }

    /// Sends `req` (origin-form or absolute URI) and returns the response
    /// head; the body streams from the connection.
    pub async fn send(
        &self,
        mut req: Request<Empty<Bytes>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let shared = &self.shared;
        loop {
            let (conn, reused) = shared.checkout().await?;
            let mut refused = match conn {
                Conn::Http1(mut sender) => {
                    shared.for_http1(&mut req);
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            let back = Some(Return {
                                sender,
                                pool: Arc::clone(shared),
                            });
                            return Ok(resp.map(|inner| UpstreamBody { inner, back }));
                        }
                        Err(refused) => refused,
                    }
                }
                Conn::Http2(mut sender) => {
                    shared.for_http2(&mut req);
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(|inner| UpstreamBody { inner, back: None })),
                        Err(refused) => refused,
                    }
                }
            };
            // Not written: the pooled connection had been closed. Each
            // retry uses up one pooled connection, and one made for this
            // request is never retried, so this ends.
            match refused.take_message() {
                Some(again) if reused => {
                    tracing::debug!("a pooled upstream connection was closed; sending on another");
                    req = again;
                }
                _ => return Err(SendError::Exchange(refused.into_error())),
            }
        }
    }

    /// Idle HTTP/1 connections held now (for tests).
    pub fn idle(&self) -> usize {
        self.shared.state().idle.len()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready pooled connection, or a new one; `true` when pooled.
    async fn checkout(&self) -> Result<(Conn, bool), SendError> {
        while let Some(conn) = self.take_idle() {
            // Ready at once, or as soon as the connection's task has
            // finished the previous answer. One that errs has closed; one
            // that is not ready soon is dropped rather than waited on.
            let ready = match conn {
                Conn::Http1(s) if s.is_ready() => Some(Conn::Http1(s)),
                Conn::Http1(mut s) => match tokio::time::timeout(READY_WAIT, s.ready()).await {
                    Ok(Ok(())) => Some(Conn::Http1(s)),
                    _ => None,
                },
                Conn::Http2(mut s) => s.ready().await.ok().map(|()| Conn::Http2(s)),
            };
            if let Some(conn) = ready {
                return Ok((conn, true));
            }
        }
        // Boxed: connecting is rare, and its future (TLS, both protocols'
        // handshakes) would otherwise make every request's future several
        // KiB larger, copied each time the request's future moves.
        match Box::pin(self.connect()).await {
            Ok(conn) => Ok((conn, false)),
            Err(first) => {
                tracing::debug!(error = %first, "upstream connect failed; trying once more");
                self.connect_retried.inc();
                Ok((Box::pin(self.connect()).await?, false))
            }
        }
    }

    /// The HTTP/2 connection if open, else the newest unexpired HTTP/1 one.
    fn take_idle(&self) -> Option<Conn> {
        let mut state = self.state();
        if let Some(h2) = &state.h2 {
            if !h2.is_closed() {
                return Some(Conn::Http2(h2.clone()));
            }
            state.h2 = None;
        }
        let now = Instant::now();
        while let Some(idle) = state.idle.pop() {
            if idle.expired(now, self.idle_timeout) {
                // The newest has expired, so have all below it.
                state.idle.clear();
                return None;
            }
            if !idle.sender.is_closed() {
                return Some(Conn::Http1(idle.sender));
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let io = self
            .connector
            .clone()
            .oneshot(origin(&self.scheme, &self.authority, None))
            .await
            .map_err(SendError::Connect)?;
        let handshake_failed = |e: hyper::Error| SendError::Connect(e.into());
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(handshake_failed)?;
            drive(conn, "HTTP/2");
            self.state().h2 = Some(sender.clone());
            Ok(Conn::Http2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .read_buf_exact_size(Some(READ_BUFFER))
                .handshake(io)
                .await
                .map_err(handshake_failed)?;
            drive(conn, "HTTP/1");
            Ok(Conn::Http1(sender))
        }
    }

    /// HTTP/1 sends the path and query, and the host in `Host`.
    fn for_http1(&self, req: &mut Request<Empty<Bytes>>) {
        if req.uri().authority().is_some() {
            let pq = req.uri().path_and_query().cloned();
            *req.uri_mut() =
                Uri::from(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        }
        req.headers_mut().insert(HOST, self.host.clone());
    }

    /// HTTP/2 takes the scheme and authority from an absolute URI.
    fn for_http2(&self, req: &mut Request<Empty<Bytes>>) {
        if req.uri().scheme().is_none() {
            let pq = req.uri().path_and_query().cloned();
            *req.uri_mut() = origin(&self.scheme, &self.authority, pq);
        }
        req.headers_mut().remove(HOST);
    }

    /// Keeps an HTTP/1 connection whose answer was read to the end.
    fn put(self: Arc<Self>, sender: http1::SendRequest<Empty<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.state();
        if state.idle.len() >= self.max_idle {
            return; // dropping the sender closes the connection
        }
        state.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
        if !state.reaping {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                state.reaping = true;
                runtime.spawn(reap(Arc::downgrade(&self)));
            }
        }
    }
}

/// Runs a connection's I/O in a task of its own until it closes.
fn drive(
    conn: impl std::future::Future<Output = hyper::Result<()>> + Send + 'static,
    protocol: &'static str,
) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, protocol, "upstream connection ended");
        }
    });
}

/// `scheme://authority` followed by `pq` (or `/`).
fn origin(scheme: &Scheme, authority: &Authority, pq: Option<http::uri::PathAndQuery>) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    // Scheme, authority and path are each valid, so together they are.
    Uri::from_parts(parts).unwrap_or_default()
}

/// Closes idle connections as they expire, and those the upstream closed,
/// until none is left (the next `put` starts it again).
async fn reap(pool: Weak<Shared>) {
    loop {
        // The bottom of the stack has been idle longest.
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut state = pool.state();
            match state.idle.first() {
                Some(oldest) => oldest.since + pool.idle_timeout,
                None => {
                    state.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        pool.state()
            .idle
            .retain(|i| !i.sender.is_closed() && !i.expired(now, pool.idle_timeout));
    }
}

/// Hands an HTTP/1 connection back to its pool.
#[derive(Debug)]
struct Return {
    sender: http1::SendRequest<Empty<Bytes>>,
    pool: Arc<Shared>,
}

/// An upstream response body. Over HTTP/1, its connection goes back to the
/// pool when the body has been read to the end.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    back: Option<Return>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(Return { sender, pool }) = self.back.take() {
            pool.put(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // All of a sized body was read, though its end was not polled.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use prometheus::IntGauge;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Config;

    /// A bare HTTP/1 upstream: answers every request `ok` (`/big`: 4 MiB
    /// of `x`), keeps the request heads and counts connections; `close`
    /// hangs up after each answer, without saying so.
    struct Upstream {
        port: u16,
        accepted: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    async fn upstream(close: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (Arc::clone(&accepted), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let h = Arc::clone(&h);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            let head = String::from_utf8(head).unwrap();
                            let answer = if head.starts_with("GET /big ") {
                                let mut big =
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n".to_vec();
                                big.resize(big.len() + (4 << 20), b'x');
                                big
                            } else {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
                            };
                            h.lock().unwrap().push(head);
                            if s.write_all(&answer).await.is_err() || close {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Upstream {
            port,
            accepted,
            heads,
        }
    }

    fn pool(port: u16, max_idle: usize, idle_timeout: Duration) -> (Pool, IntGauge, IntCounter) {
        let text = format!("[upstream]\nbase_url = \"http://127.0.0.1:{port}/Chime\"\n");
        let cfg = Config::from_toml(&text, "<test>", Path::new("."), &HashMap::new()).unwrap();
        let open = IntGauge::new("open", "open").unwrap();
        let retried = IntCounter::new("retried", "retried").unwrap();
        let connector = super::super::client::build(&cfg.upstream, open.clone()).unwrap();
        let target = Target {
            scheme: Scheme::HTTP,
            authority: format!("127.0.0.1:{port}").parse().unwrap(),
            max_idle,
            idle_timeout,
        };
        (Pool::new(connector, target, retried.clone()), open, retried)
    }

    fn get(path: &'static str) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = Uri::from_static(path);
        req
    }

    /// Sends a request and reads its body to the end.
    async fn fetch(pool: &Pool) -> Bytes {
        let resp = pool.send(get("/Chime/x?a=1")).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    /// Lets the connections' tasks run until `done` holds.
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("did not settle");
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_connection_serves_requests_in_turn() {
        let up = upstream(false).await;
        let (pool, open, _) = pool(up.port, 8, MINUTE);
        for _ in 0..3 {
            assert_eq!(fetch(&pool).await, "ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(open.get(), 1);
        assert_eq!(pool.idle(), 1);
        // Origin-form request line, and the authority in `Host`.
        let heads = up.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 3);
        let head = heads[0].to_ascii_lowercase();
        assert!(head.starts_with("get /chime/x?a=1 http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", up.port)),
            "{head}"
        );
    }

    /// After one exchange that kept nothing: no idle connection, the one
    /// used is closed, and the next request makes a second.
    async fn next_request_connects_anew(up: &Upstream, pool: &Pool, open: &IntGauge) {
        assert_eq!(pool.idle(), 0);
        settle(|| open.get() == 0).await;
        assert_eq!(fetch(pool).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_not_read_to_the_end_closes_its_connection() {
        let up = upstream(false).await;
        let (pool, open, _) = pool(up.port, 8, MINUTE);
        drop(pool.send(get("/a")).await.unwrap());
        next_request_connects_anew(&up, &pool, &open).await;
    }

    #[tokio::test]
    async fn a_pooled_connection_still_busy_is_not_waited_on() {
        let up = upstream(false).await;
        let (pool, _, _) = pool(up.port, 8, MINUTE);
        // A connection handed back while its answer is still unread: it
        // stays busy for as long as the body is held.
        let mut held = pool.send(get("/big")).await.unwrap().into_body();
        let Return {
            sender,
            pool: shared,
        } = held.back.take().unwrap();
        shared.put(sender);
        assert_eq!(pool.idle(), 1);
        // The next request gives up on it after READY_WAIT and connects.
        let answer = tokio::time::timeout(Duration::from_secs(5), fetch(&pool)).await;
        assert_eq!(answer.expect("stuck on the busy connection"), "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        drop(held);
    }

    #[tokio::test]
    async fn connections_the_upstream_closed_are_replaced() {
        let up = upstream(true).await;
        let (pool, _, retried) = pool(up.port, 8, MINUTE);
        // Whether the pool sees the close before sending or the send is
        // refused and made again, every request is answered.
        for _ in 0..4 {
            assert_eq!(fetch(&pool).await, "ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
        assert_eq!(retried.get(), 0, "no connect failed");
    }

    /// The race the resend exists for, made to happen: a pooled connection
    /// that was ready when taken, whose upstream hung up before the request
    /// was written. The request is sent again on a new connection.
    #[tokio::test]
    async fn a_request_refused_by_a_closed_pooled_connection_is_sent_again() {
        let up = upstream(false).await;
        let (pool, _, retried) = pool(up.port, 8, MINUTE);
        // A connection over an in-memory pipe whose far end the test holds.
        let (near, far) = tokio::io::duplex(4096);
        let (sender, conn) =
            http1::handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(near))
                .await
                .unwrap();
        drive(conn, "HTTP/1");
        settle(|| sender.is_ready()).await;
        Arc::clone(&pool.shared).put(sender);
        assert_eq!(pool.idle(), 1);
        // The far end hangs up; the connection's task has not seen it yet,
        // so the pool still hands the connection out, and only then learns.
        drop(far);
        assert_eq!(fetch(&pool).await, "ok");
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            1,
            "sent on a new connection"
        );
        assert_eq!(up.heads.lock().unwrap().len(), 1);
        assert_eq!(retried.get(), 0, "no connect failed");
    }

    #[tokio::test]
    async fn a_failed_connect_is_tried_once_more_then_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (pool, open, retried) = pool(port, 8, MINUTE);
        let err = pool.send(get("/a")).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert_eq!(retried.get(), 1);
        assert_eq!(open.get(), 0);
    }

    #[tokio::test]
    async fn idle_connections_are_capped() {
        let up = upstream(false).await;
        let (pool, open, _) = pool(up.port, 0, MINUTE);
        assert_eq!(fetch(&pool).await, "ok");
        next_request_connects_anew(&up, &pool, &open).await;
    }

    #[tokio::test]
    async fn expired_idle_connections_are_not_used_and_are_closed() {
        let up = upstream(false).await;
        let (pool, open, _) = pool(up.port, 8, Duration::from_secs(1));
        assert_eq!(fetch(&pool).await, "ok");
        assert_eq!(pool.idle(), 1);
        // The reaper closes it once it has been idle for the timeout.
        tokio::time::pause();
        tokio::time::advance(Duration::from_millis(1001)).await;
        settle(|| pool.idle() == 0).await;
        settle(|| open.get() == 0).await;
        tokio::time::resume();
        // A connection asked for after its timeout, before the reaper has
        // run, is not handed out either: its idle time is moved back, with
        // no await in between for the reaper to run in.
        assert_eq!(fetch(&pool).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        {
            let mut state = pool.shared.state();
            let idle = &mut state.idle[0];
            idle.since = idle.since.checked_sub(Duration::from_secs(2)).unwrap();
        }
        assert!(
            pool.shared.take_idle().is_none(),
            "expired connection handed out"
        );
        assert_eq!(pool.idle(), 0);
    }
}
