//! The side listeners: the admin endpoint and the plain-HTTP listener that
//! redirects to HTTPS. Their requests are few and short, so their bounds
//! are fixed rather than configured: at most [`Bounds::connections`]
//! connections at once (further ones wait in the kernel's accept queue),
//! a request head within [`Bounds::header_read`], and each connection
//! closed after [`Bounds::lifetime`] however it is used (requests then in
//! progress are answered first). Without them one client could hold
//! connections open without end, and the redirect listener faces the
//! internet on port 80: its idle connections would use up the file
//! descriptors the public listener needs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::body;

/// Answers one request of a side listener.
pub(super) type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = body::Response> + Send>> + Send + Sync,
>;

/// What one side listener allows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// Connections served at once.
    pub(super) connections: usize,
    /// From accepting a connection, or finishing an answer, to the next
    /// request's complete head.
    pub(super) header_read: Duration,
    /// A connection's life: then it closes once the requests in progress
    /// have been answered (within [`FINISHING`]).
    pub(super) lifetime: Duration,
    /// Whether a connection may carry more than one request.
    pub(super) keep_alive: bool,
}

impl Bounds {
    /// The admin listener: Prometheus scrapes and the key page keep their
    /// connections alive, for at most a minute each.
    pub(super) const ADMIN: Bounds = Bounds {
        connections: 256,
        header_read: Duration::from_secs(10),
        lifetime: Duration::from_secs(60),
        keep_alive: true,
    };

    /// The HTTPS redirect: one answer per connection.
    pub(super) const REDIRECT: Bounds = Bounds {
        connections: 256,
        header_read: Duration::from_secs(5),
        lifetime: Duration::from_secs(10),
        keep_alive: false,
    };
}

/// How long requests in progress at the end of a connection's lifetime
/// have to finish before the connection is dropped anyway.
const FINISHING: Duration = Duration::from_secs(10);

/// Serves `listener` with `handler` within `bounds`, until the task is
/// dropped. An answer to `HEAD` goes without its body ([`body::fit`]).
pub(super) async fn serve(listener: TcpListener, bounds: Bounds, handler: Handler) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read)
        .keep_alive(bounds.keep_alive);
    super::conn::http2_bounds(&mut builder, 16);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(bounds.connections));
    loop {
        // A slot first, so that connections past the bound are not accepted.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (builder, handler) = (Arc::clone(&builder), Arc::clone(&handler));
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let headers_only = body::headers_only(&req);
                let answer = handler(req);
                async move { Ok::<_, Infallible>(body::fit(answer.await, headers_only)) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            if tokio::time::timeout(bounds.lifetime, conn.as_mut())
                .await
                .is_err()
            {
                // Requests in progress finish (a key being generated is
                // not cut off half-way); then the connection closes.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(FINISHING, conn).await;
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const TEST: Bounds = Bounds {
        connections: 2,
        header_read: Duration::from_secs(5),
        lifetime: Duration::from_secs(10),
        keep_alive: true,
    };

    async fn listening() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // `/slow` takes 5 s to answer.
        let handler: Handler = Arc::new(|req| {
            let slow = req.uri().path() == "/slow";
            Box::pin(async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                body::Response::new(body::full("ok"))
            })
        });
        tokio::spawn(serve(listener, TEST, handler));
        addr
    }

    /// Asserts `from <= took < to`.
    fn assert_took(took: Duration, from: Duration, to: Duration) {
        assert!(
            took >= from && took < to,
            "{took:?}, not in [{from:?}, {to:?})"
        );
    }

    /// Reads until the server closes the connection: what it sent. (Time
    /// is paused: waiting costs nothing, and a connection left open fails
    /// the test at once instead of hanging it.)
    async fn until_closed(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(3600), s.read_to_end(&mut out))
            .await
            .expect("the server never closed the connection")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_cut_off_and_a_silent_connection_closed() {
        let addr = listening().await;
        // A head begun and never finished: hyper's header read timeout.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let got = until_closed(&mut slow).await;
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
        assert_took(started.elapsed(), TEST.header_read, TEST.lifetime);
        // Not a byte: hyper-util waits for the first bytes to tell HTTP/1
        // from HTTP/2 without a timer, so the lifetime ends it.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(until_closed(&mut silent).await, "");
        assert_took(started.elapsed(), TEST.lifetime, TEST.lifetime * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_closed_after_its_lifetime() {
        let addr = listening().await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        // A request every few seconds: never idle long enough for the
        // header read timeout.
        loop {
            let sent = busy
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_ok();
            let mut buf = [0u8; 512];
            let n = busy.read(&mut buf).await.unwrap_or(0);
            if !sent || n == 0 {
                break;
            }
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            assert!(started.elapsed() < TEST.lifetime * 2, "never closed");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let four = Duration::from_secs(4);
        assert_took(started.elapsed(), TEST.lifetime, TEST.lifetime + four);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_at_the_end_of_the_lifetime_is_answered() {
        let addr = listening().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        tokio::time::sleep(TEST.lifetime - Duration::from_secs(1)).await;
        // Sent a second before the lifetime ends, answered four after.
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = until_closed(&mut s).await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("ok"),
            "{got}"
        );
        let four = Duration::from_secs(4);
        assert_took(
            started.elapsed(),
            TEST.lifetime + four,
            TEST.lifetime + FINISHING,
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connections_past_the_bound_wait_for_a_slot() {
        let addr = listening().await;
        let mut held: Vec<TcpStream> = Vec::new();
        for _ in 0..TEST.connections {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // The third connects (into the kernel's accept queue) but is not
        // served until a slot frees: its answer comes only once the first
        // two, which send nothing, reach their lifetime.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = until_closed(&mut third).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert_took(started.elapsed(), TEST.lifetime, Duration::MAX);
    }
}
