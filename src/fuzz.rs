//! Invariants of the parsers that a client or Chime can feed, as checks
//! that take arbitrary input and panic when one breaks.
//!
//! `tests/fuzz` runs them under libFuzzer (`cargo fuzz`, see the README's
//! Development section), which steers the input towards code it has not
//! reached yet; the proptests call the same checks with generated input,
//! so every `cargo test` holds them too.
//!
//! - [`request`]: a request target as hyper hands it over. Whatever the
//!   route and query parsers accept, the gateway forwards a canonical
//!   request that reads back as the same typed request.
//! - [`upstream_answer`]: bytes from Chime, arriving in pieces. Whatever
//!   the gateway's HTTP/1 client accepts, hyper's client reads the same
//!   status and the same body from the same bytes: the two agree on where
//!   an answer ends, so an answer cannot carry a second one inside it for
//!   the next client of the connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::catalog::{builtin, Catalog};
use crate::proxy::h1;
use crate::proxy::UpstreamRequest;
use crate::request::{parse_with, GatewayRequest, ParseContext, RequestOptions};

/// The "now" requests are parsed at (relative times resolve against it).
const NOW: jiff::Timestamp = jiff::Timestamp::constant(1_608_033_600, 0); // 2020-12-15T12:00:00Z

/// The request check, on raw bytes: the first byte picks the options
/// (bit 0: `Accept: text/csv`; bit 1: the end sent as `end`; bit 2: a
/// default start; bit 3: CSV by default), the rest is the request target
/// (`/path?query`), refused as hyper would refuse it if it is not one.
/// Whether the gateway accepted it (and so the whole check ran).
pub fn request(data: &[u8]) -> bool {
    let Some((&flags, target)) = data.split_first() else {
        return false;
    };
    let Ok(target) = http::uri::PathAndQuery::try_from(target) else {
        return false;
    };
    request_target(
        target.path(),
        target.query(),
        flags & 1 != 0,
        &options(flags),
    )
}

/// Request options picked by bits 1–3 of `flags` (see [`request`]).
pub fn options(flags: u8) -> RequestOptions {
    RequestOptions {
        end_name: if flags & 2 != 0 { "end" } else { "stop" },
        default_start: (flags & 4 != 0).then(|| "today-7d".to_owned()),
        csv_default: flags & 8 != 0,
        ..RequestOptions::default()
    }
}

/// The request check: if `path` and `query` parse, what would be sent to
/// Chime is canonical (see [`canonical_query`]) and is a fixpoint: parsed
/// again (with the same name for the end of the window, and nothing
/// filled in by default), it is the same typed request and is sent again
/// byte for byte. Whether the gateway accepted the request.
///
/// # Panics
/// When that does not hold: the message names the input and what was sent.
pub fn request_target(
    path: &str,
    query: Option<&str>,
    accept_csv: bool,
    options: &RequestOptions,
) -> bool {
    // Refusals are fine; panics and non-canonical forwards are not.
    let Ok(first) = parse(path, query, accept_csv, options) else {
        return false;
    };
    let sent = first.upstream_path_and_query("/Chime");
    let (sent_path, sent_query) = match sent.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (sent.as_str(), None),
    };
    // Formatted only for a failure's message.
    let input = || format!("{path}?{}", query.unwrap_or(""));
    assert!(
        canonical_query(sent_query.unwrap_or("")),
        "{} -> {sent}: not canonical",
        input()
    );
    let plain = RequestOptions {
        end_name: options.end_name,
        ..RequestOptions::default()
    };
    let again = parse(sent_path, sent_query, false, &plain)
        .unwrap_or_else(|e| panic!("{} -> {sent}: refused on reading back: {e}", input()));
    assert_eq!(again.target, first.target, "{} -> {sent}", input());
    assert_eq!(again.params, first.params, "{} -> {sent}", input());
    assert!(again.ignored.is_empty(), "{} -> {sent}", input());
    assert_eq!(again.upstream_path_and_query("/Chime"), sent);
    true
}

/// Parses a request target as the gateway does, at [`NOW`] and with the
/// built-in catalog.
pub(crate) fn parse(
    path: &str,
    query: Option<&str>,
    accept_csv: bool,
    options: &RequestOptions,
) -> Result<GatewayRequest, crate::BoxError> {
    thread_local! {
        static CATALOG: Catalog = Catalog::new(&builtin());
    }
    let route = crate::route::match_path(path)?;
    let ctx = ParseContext {
        now: crate::request::Now::at(NOW),
        accept_csv,
        options,
    };
    CATALOG.with(|catalog| parse_with(&route, query, catalog, &ctx))
}

/// What may appear in a query sent to Chime: the encoder's safe set, the
/// separators it writes, and `%` only before two upper-case hex digits.
pub fn canonical_query(query: &str) -> bool {
    let b = query.as_bytes();
    b.iter().enumerate().all(|(i, &c)| match c {
        b'%' => b.get(i + 1..i + 3).is_some_and(|h| {
            h.iter()
                .all(|d| d.is_ascii_digit() || (b'A'..=b'F').contains(d))
        }),
        b'&' | b'=' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' => true,
        c => c.is_ascii_alphanumeric(),
    })
}

/// The target and host of the requests the upstream checks answer.
const TARGET: &str = "/Chime/Report/x?queueId=1";
const HOST: &str = "chime.example";

/// The upstream check, on raw bytes: the first byte says how the answer
/// arrives (bit 7: it answers a `HEAD`; bits 0–5: the size of each read,
/// 0 for all at once), the rest is what Chime sends before it closes.
/// Whether the gateway's client accepted the answer (and so the whole
/// check ran).
pub fn upstream_answer(data: &[u8]) -> bool {
    let Some((&how, answer)) = data.split_first() else {
        return false;
    };
    let method = if how & 0x80 != 0 {
        Method::HEAD
    } else {
        Method::GET
    };
    let segments = match usize::from(how & 0x3f) {
        0 => vec![answer.to_vec()],
        size => answer.chunks(size).map(<[u8]>::to_vec).collect(),
    };
    upstream_answer_in(&method, segments)
}

/// The upstream check. `segments` arrive one per read, then the stream
/// ends. Whatever the gateway's client reads from them as the answer to a
/// `method` request, hyper's client reads too, with the same status and
/// body. When the gateway's client would reuse the connection and reads a
/// second answer from what follows (to a `GET`), hyper's client reuses it
/// and reads that second answer the same way: both end the first answer
/// at the same byte.
///
/// Whether the gateway's client accepted the first answer.
///
/// # Panics
/// When the gateway's client reads an answer that hyper's does not, or
/// reads it differently.
pub fn upstream_answer_in(method: &Method, segments: Vec<Vec<u8>>) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("no runtime: {e}"),
    };
    let ours = runtime.block_on(async {
        let (io, _) = Script::new(segments.clone());
        let delivered = io.delivered();
        let (first, conn) = read_with_ours(method, h1::Conn::new(io)).await?;
        let mut answers = vec![first];
        // Reused only with nothing buffered: the first answer ended here.
        let ended_at = delivered.load(Ordering::Relaxed);
        if let Some(conn) = conn {
            if let Ok((second, _)) = read_with_ours(&Method::GET, conn).await {
                answers.push(second);
            }
        }
        Ok::<_, h1::Error>((ended_at, answers))
    });
    let Ok((ended_at, ours)) = ours else {
        return false;
    };
    let show = String::from_utf8_lossy(&segments.concat()).into_owned();
    let (io, _) = Script::new(segments);
    let io = if ours.len() == 2 {
        io.pause_at(ended_at)
    } else {
        io
    };
    let theirs = runtime.block_on(read_with_hyper(method, io, ours.len()));
    for ((ours, theirs), answer) in ours.iter().zip(theirs).zip(["first", "second"]) {
        match theirs {
            Ok(theirs) => {
                assert_eq!(
                    theirs.status(),
                    ours.status(),
                    "{answer} status of {show:?}"
                );
                assert_eq!(theirs.body(), ours.body(), "{answer} body of {show:?}");
            }
            Err(e) => panic!(
                "the {answer} answer: read {} and {} bytes, hyper refused ({e}): {show:?}",
                ours.status(),
                ours.body().len()
            ),
        }
    }
    true
}

/// The answer to a `method` request on `conn` as the gateway's client
/// reads it, its body read to the end, and the connection if it can carry
/// another exchange.
pub(crate) async fn read_with_ours(
    method: &Method,
    conn: h1::Conn,
) -> Result<(http::Response<Bytes>, Option<h1::Conn>), h1::Error> {
    let Ok(req) = UpstreamRequest::new(method.clone(), TARGET.into(), 0) else {
        unreachable!("a fixed, valid target");
    };
    let host = HeaderValue::from_static(HOST);
    let resp = conn.send(&req, &host).await.map_err(|f| f.error)?;
    let (parts, mut body) = resp.into_parts();
    let mut data = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame?.into_data() {
            data.extend_from_slice(&chunk);
        }
    }
    let reusable = body.reusable();
    Ok((http::Response::from_parts(parts, data.freeze()), reusable))
}

/// Up to `answers` answers as hyper's client reads them: the first to a
/// `method` request, a second to a `GET` on the same connection (an error
/// if hyper would not send it there). It stops at the first error.
async fn read_with_hyper(
    method: &Method,
    io: Script,
    answers: usize,
) -> Vec<Result<http::Response<Bytes>, hyper::Error>> {
    let handshake = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(
        hyper_util::rt::TokioIo::new(io),
    );
    let (mut sender, conn) = match handshake.await {
        Ok(pair) => pair,
        Err(e) => panic!("a handshake over memory cannot fail: {e}"),
    };
    let driver = tokio::spawn(conn);
    let mut read = vec![exchange_with_hyper(&mut sender, method).await];
    if answers == 2 && read[0].is_ok() {
        read.push(match sender.ready().await {
            Ok(()) => exchange_with_hyper(&mut sender, &Method::GET).await,
            Err(e) => Err(e),
        });
    }
    driver.abort();
    read
}

async fn exchange_with_hyper(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    method: &Method,
) -> Result<http::Response<Bytes>, hyper::Error> {
    let mut req = http::Request::new(http_body_util::Empty::new());
    *req.method_mut() = method.clone();
    *req.uri_mut() = http::Uri::from_static(TARGET);
    req.headers_mut()
        .insert(http::header::HOST, HeaderValue::from_static(HOST));
    let (parts, body) = sender.send_request(req).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

/// An upstream that, once a request is written to it, answers with
/// `segments`, one per read (so the answer arrives split exactly there),
/// then ends the stream; what is written to it is kept. With
/// [`Script::pause_at`] it holds back what follows the first answer until
/// a second request is written, as an upstream would.
#[derive(Debug)]
pub struct Script {
    segments: VecDeque<Vec<u8>>,
    written: Arc<Mutex<Vec<u8>>>,
    /// A read waiting for a request.
    reader: Option<std::task::Waker>,
    /// Bytes read so far.
    delivered: Arc<AtomicUsize>,
    /// Where the first answer ends.
    pause_at: Option<usize>,
}

impl Script {
    /// The upstream, and what will have been written to it.
    pub fn new(segments: Vec<Vec<u8>>) -> (Script, Arc<Mutex<Vec<u8>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let script = Script {
            segments: segments.into(),
            written: Arc::clone(&written),
            reader: None,
            delivered: Arc::new(AtomicUsize::new(0)),
            pause_at: None,
        };
        (script, written)
    }

    /// Sends nothing after the first `bytes` until a second request
    /// (a second head: the requests have no bodies) is written.
    pub fn pause_at(mut self, bytes: usize) -> Script {
        self.pause_at = Some(bytes);
        self
    }

    /// How many bytes have been read from it, as reading goes on.
    pub fn delivered(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.delivered)
    }
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let delivered = self.delivered.load(Ordering::Relaxed);
        let requests = {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            written.windows(4).filter(|w| w == b"\r\n\r\n").count()
        };
        let room = match self.pause_at {
            _ if requests == 0 => 0,
            Some(at) if requests == 1 => at.saturating_sub(delivered),
            _ => usize::MAX,
        };
        if room == 0 {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if let Some(mut segment) = self.segments.pop_front() {
            let n = segment.len().min(buf.remaining()).min(room);
            buf.put_slice(&segment[..n]);
            if n < segment.len() {
                self.segments.push_front(segment.split_off(n));
            }
            self.delivered.fetch_add(n, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The seeds `cargo fuzz` starts from are inputs the gateway accepts
    /// and the checks pass.
    #[test]
    fn every_seed_passes_its_check() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/seeds");
        let mut checked = 0;
        for (target, check) in [
            ("request", request as fn(&[u8]) -> bool),
            ("upstream_answer", upstream_answer),
        ] {
            let dir = seeds.join(target);
            for seed in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = seed.unwrap_or_else(|e| panic!("{e}")).path();
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                // A seed the gateway refuses would check nothing.
                assert!(check(&data), "{path:?} is refused");
                checked += 1;
            }
        }
        assert!(checked >= 8, "{checked} seeds");
    }

    /// A body as chunks: each chunk's size line (with an extension now
    /// and then, well formed or not), its data and CRLF; the last chunk;
    /// trailers.
    fn chunked() -> impl Strategy<Value = Vec<u8>> {
        let size_line_tail = prop::sample::select(vec![
            "",
            "",
            "",
            ";a=b",
            " ;a",
            ";a=\"x y\"",
            "\t",
            ";\n",
            ";\0",
            " 1",
            ";",
        ]);
        let chunk = ("[a-z\r\n0-9]{1,20}", size_line_tail, any::<bool>());
        let trailers =
            prop::sample::select(vec!["", "", "X-T: 1\r\n", "bad line\r\n", "X: a\nY: b\r\n"]);
        (prop::collection::vec(chunk, 0..4), trailers, any::<bool>()).prop_map(
            |(chunks, trailers, upper)| {
                let mut out = Vec::new();
                for (data, tail, pad) in chunks {
                    let size = if upper {
                        format!("{:X}", data.len())
                    } else {
                        format!("{:x}", data.len())
                    };
                    let zeros = if pad { "00" } else { "" };
                    out.extend_from_slice(format!("{zeros}{size}{tail}\r\n{data}\r\n").as_bytes());
                }
                out.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
                out
            },
        )
    }

    /// An answer: a status line (an interim one before it now and then),
    /// some framing fields, right or wrong, and a body that may or may not
    /// match them; then a second, plain answer.
    fn answer() -> impl Strategy<Value = Vec<u8>> {
        let status = prop::sample::select(vec![
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.0 200 OK",
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.1 404 Not Found",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
        ]);
        let fields = prop::collection::vec(
            prop::sample::select(vec![
                "Content-Length: {n}",
                "Content-Length: {n}",
                "Content-Length: {m}",
                "Content-Length:  {n} ",
                "Content-Length: +{n}",
                "Content-Length: {n}, {n}",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: Chunked",
                "Transfer-Encoding: gzip, chunked",
                "Connection: close",
                "Connection: keep-alive",
                "X-A: b",
            ]),
            0..4,
        );
        let body = prop_oneof![chunked(), "[a-z0-9\r\n]{0,24}".prop_map(String::into_bytes)];
        (status, fields, body).prop_map(|(status, fields, body)| {
            let (n, m) = (body.len().to_string(), (body.len() + 1).to_string());
            let mut out = format!("{status}\r\n").into_bytes();
            for field in fields {
                let field = field.replace("{n}", &n).replace("{m}", &m);
                out.extend_from_slice(format!("{field}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The gateway's client and hyper's agree on every answer the
        /// gateway's client accepts, and on where it ends.
        #[test]
        fn the_gateway_reads_answers_as_hyper_does(
            answer in answer(),
            head: bool,
            stride in 0usize..8,
        ) {
            let method = if head { Method::HEAD } else { Method::GET };
            let segments = match stride {
                0 => vec![answer],
                n => answer.chunks(n).map(<[u8]>::to_vec).collect(),
            };
            upstream_answer_in(&method, segments);
        }
    }
}
