//! The upstream connection pool: one per worker thread. HTTP/1 goes
//! through the gateway's own client (`proxy/h1.rs`), read in the request's
//! task; HTTP/2 through hyper's connection-level client.
//!
//! The gateway has one upstream and each worker has its own pool
//! ([`crate::workers::PerWorker`]), so a pool is a stack of idle HTTP/1
//! connections, the most recently used on top, and at most one HTTP/2
//! connection that requests share. There is no pool key to hash and no
//! queue of waiters, which hyper-util's general pooled client spent an
//! eighth of the gateway's instructions per request on. What the gateway
//! relied on from that client is kept:
//! - a request that meets a pooled connection the upstream has closed is
//!   sent again on another connection, as long as not one byte of an
//!   answer came back on the closed one (requests to Chime are `GET` or
//!   `HEAD`, so a request Chime may have seen before it hung up is safe to
//!   repeat; nginx's `proxy_next_upstream error` does the same);
//! - a failed connect is tried once more (counted as `connect_retried`),
//!   since nothing reached Chime;
//! - errors say whether connecting failed ([`SendError::is_connect`]);
//! - TLS, with HTTP/2 when the upstream picks it by ALPN;
//! - at most `pool_max_idle_per_host` idle connections are kept, and each
//!   is closed after `pool_idle_timeout` unused.
//!
//! An HTTP/1 connection goes back on the stack once its response body has
//! been read exactly to its end ([`UpstreamBody`]), so a pooled connection
//! is never busy. One whose body is dropped before that is closed: the
//! rest of its answer is still on the wire.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::IntCounter;
use tower::ServiceExt;

use super::client::Connector;
use super::h1;
use super::upstream_request::UpstreamRequest;
use crate::clock::coarse::Tick;
use crate::BoxError;

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (TCP or TLS), twice.
    #[error("could not connect to the upstream")]
    Connect(#[source] BoxError),
    /// Connected, but the exchange failed before the response head.
    #[error("the upstream exchange failed: {0}")]
    Exchange(BoxError),
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

/// An HTTP/1 connection put back, and when (coarse: its timeout is
/// seconds, and every request takes and puts one).
#[derive(Debug)]
struct Idle {
    conn: h1::Conn,
    since: Tick,
}

impl Idle {
    /// Whether it has been idle for `timeout` by `now`.
    fn expired(&self, now: Tick, timeout: Duration) -> bool {
        now.saturating_duration_since(self.since) >= timeout
    }
}

/// A connection ready for one request.
enum Conn {
    Http1(h1::Conn),
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

    /// Sends `req` and returns the response head; the body streams from
    /// the connection.
    pub async fn send(&self, req: &UpstreamRequest) -> Result<Response<UpstreamBody>, SendError> {
        let shared = &self.shared;
        loop {
            let (conn, reused) = shared.checkout().await?;
            match conn {
                Conn::Http1(conn) => match conn.send(req, &shared.host).await {
                    Ok(resp) => {
                        let pool = Arc::clone(shared);
                        return Ok(resp.map(|body| UpstreamBody {
                            inner: Inner::Http1 { body, pool },
                        }));
                    }
                    // Each retry uses up one pooled connection, and one
                    // made for this request is never retried, so this ends.
                    Err(failed) if failed.nothing_received && reused => {
                        tracing::debug!(error = %failed.error, "a pooled upstream connection was closed; sending on another");
                    }
                    Err(failed) => return Err(SendError::Exchange(failed.error.into())),
                },
                Conn::Http2(mut sender) => {
                    let absolute = req
                        .to_absolute(&shared.scheme, &shared.authority)
                        .map_err(|e| SendError::Exchange(e.into()))?;
                    match sender.try_send_request(absolute).await {
                        Ok(resp) => {
                            return Ok(resp.map(|body| UpstreamBody {
                                inner: Inner::Http2(body),
                            }))
                        }
                        // Not written, on a connection that had been
                        // closed: sent again on another.
                        Err(refused) if reused && refused.message().is_some() => {}
                        Err(refused) => {
                            return Err(SendError::Exchange(refused.into_error().into()))
                        }
                    }
                }
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
            // An HTTP/1 connection is idle only once its last answer was
            // read, so it is ready; the HTTP/2 one may be at its stream cap.
            let ready = match conn {
                Conn::Http1(c) => Some(Conn::Http1(c)),
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

    /// The HTTP/2 connection if open, else the newest unexpired HTTP/1 one
    /// still open.
    fn take_idle(&self) -> Option<Conn> {
        let mut state = self.state();
        if let Some(h2) = &state.h2 {
            if !h2.is_closed() {
                return Some(Conn::Http2(h2.clone()));
            }
            state.h2 = None;
        }
        let now = Tick::now();
        while let Some(mut idle) = state.idle.pop() {
            if idle.expired(now, self.idle_timeout) {
                // The newest has expired, so have all below it.
                state.idle.clear();
                return None;
            }
            if idle.conn.is_open() {
                return Some(Conn::Http1(idle.conn));
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
            Ok(Conn::Http1(h1::Conn::new(TokioIo::new(io))))
        }
    }

    /// Keeps an HTTP/1 connection whose answer was read to the end.
    fn put(self: &Arc<Self>, conn: h1::Conn) {
        let mut state = self.state();
        if state.idle.len() >= self.max_idle {
            return; // dropping the sender closes the connection
        }
        state.idle.push(Idle {
            conn,
            since: Tick::now(),
        });
        if !state.reaping {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                state.reaping = true;
                runtime.spawn(reap(Arc::downgrade(self)));
            }
        }
    }
}

/// Runs an HTTP/2 connection's I/O in a task of its own until it closes.
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
pub(super) fn origin(
    scheme: &Scheme,
    authority: &Authority,
    pq: Option<http::uri::PathAndQuery>,
) -> Uri {
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
                Some(oldest) => oldest.since.saturating_add(pool.idle_timeout),
                None => {
                    state.reaping = false;
                    return;
                }
            }
        };
        // Past already (the task ran late): no timer, straight to work.
        let wait = next.saturating_duration_since(Tick::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let Some(pool) = pool.upgrade() else { return };
        let now = Tick::now();
        pool.state()
            .idle
            .retain_mut(|i| !i.expired(now, pool.idle_timeout) && i.conn.is_open());
    }
}

/// An upstream response body. Over HTTP/1, its connection goes back to the
/// pool as soon as the body has been read to its end.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Http1 { body: h1::Body, pool: Arc<Shared> },
    Http2(Incoming),
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Inner::Http1 { body, pool } = &mut self.inner {
            if let Some(conn) = body.reusable() {
                pool.put(conn);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Http1 { body, .. } => {
                let polled = Pin::new(body).poll_frame(cx);
                if this.is_end_stream() {
                    this.release();
                }
                polled.map_err(Into::into)
            }
            Inner::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1 { body, .. } => body.is_end_stream(),
            Inner::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Http1 { body, .. } => body.size_hint(),
            Inner::Http2(body) => body.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An answer without a body, or one read to the end whose end was
        // not polled.
        self.release();
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

    fn get(path: &'static str) -> UpstreamRequest {
        UpstreamRequest::get(path)
    }

    /// Sends a request and reads its body to the end.
    async fn fetch(pool: &Pool) -> Bytes {
        let resp = pool.send(&get("/Chime/x?a=1")).await.unwrap();
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
        drop(pool.send(&get("/a")).await.unwrap());
        next_request_connects_anew(&up, &pool, &open).await;
    }

    #[tokio::test]
    async fn a_connection_goes_back_only_once_its_answer_is_read() {
        let up = upstream(false).await;
        let (pool, open, _) = pool(up.port, 8, MINUTE);
        // While one answer is unread its connection is not handed out:
        // the next request connects anew.
        let held = pool.send(&get("/big")).await.unwrap().into_body();
        assert_eq!(pool.idle(), 0);
        assert_eq!(fetch(&pool).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle(), 1);
        // Read to its end, it goes back too, and both serve again.
        assert_eq!(held.collect().await.unwrap().to_bytes().len(), 4 << 20);
        assert_eq!(pool.idle(), 2);
        assert_eq!(open.get(), 2);
        assert_eq!(fetch(&pool).await, "ok");
        assert_eq!(fetch(&pool).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
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

    /// Pools a connection that looks open when taken, whose upstream
    /// then answers `answer` to whatever is written (and closes); what is
    /// written to it.
    fn pool_scripted(pool: &Pool, answer: &'static [u8]) -> Arc<Mutex<Vec<u8>>> {
        let (script, written) = crate::fuzz::Script::new(vec![answer.to_vec()]);
        pool.shared.put(h1::Conn::new(script));
        assert_eq!(pool.idle(), 1);
        written
    }

    /// The race the resend exists for: a pooled connection that looked
    /// open when taken, whose upstream hung up without a byte of answer.
    /// The request is sent again on a new connection.
    #[tokio::test]
    async fn a_request_a_closed_pooled_connection_left_unanswered_is_sent_again() {
        let up = upstream(false).await;
        let (pool, _, retried) = pool(up.port, 8, MINUTE);
        let written = pool_scripted(&pool, b"");
        assert_eq!(fetch(&pool).await, "ok");
        let first = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(
            first.starts_with("GET /Chime/x?a=1 HTTP/1.1\r\n"),
            "{first}"
        );
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            1,
            "sent on a new connection"
        );
        assert_eq!(up.heads.lock().unwrap().len(), 1);
        assert_eq!(retried.get(), 0, "no connect failed");
    }

    /// Once any of an answer has come back, the request is not repeated:
    /// the exchange fails.
    #[tokio::test]
    async fn a_request_partly_answered_is_not_sent_again() {
        let up = upstream(false).await;
        let (pool, _, _) = pool(up.port, 8, MINUTE);
        pool_scripted(&pool, b"HTTP/1.1 200 OK\r\nContent-Le");
        let err = pool.send(&get("/a")).await.unwrap_err();
        assert!(!err.is_connect(), "{err}");
        assert!(err.to_string().contains("closed the connection"), "{err}");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_connect_is_tried_once_more_then_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (pool, open, retried) = pool(port, 8, MINUTE);
        let err = pool.send(&get("/a")).await.unwrap_err();
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
            idle.since = idle.since.saturating_sub(Duration::from_secs(2));
        }
        assert!(
            pool.shared.take_idle().is_none(),
            "expired connection handed out"
        );
        assert_eq!(pool.idle(), 0);
    }
}
