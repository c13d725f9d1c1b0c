//! A simulated Chime: the reporting API as published, on a loopback port.
//!
//! Used by `demo`, the integration tests and the benchmarks. It behaves like
//! Chime, not like a test double: it requires a known bearer key (401
//! otherwise), binds parameters the ASP.NET way (names case-insensitive,
//! the first of duplicates wins, `+` is a space), requires `queueId` on
//! per-queue reports and `start` on every report, rejects unknown zones,
//! shifts dates into `zone`, answers CSV for `csv=true` and chart JSON
//! otherwise, lists reports on the discovery routes and serves
//! SessionDetails (session `n` belongs to queue `(n - 1) % 3 + 1`).
//!
//! Tests steer it with [`Behavior`] (slow, failing, huge or stalled
//! answers) and read what it received with [`Simulator::recorded`].

mod data;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::body::{self, Response};
use crate::catalog::{Catalog, ReportDef};

/// How the simulator answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Like Chime.
    #[default]
    Normal,
    /// Like Chime, after a delay.
    Slow(Duration),
    /// Always this status, with Chime's generic error body.
    Fail(StatusCode),
    /// Reports answer with a CSV body of exactly this many bytes, produced
    /// lazily as the reader consumes it.
    Large(u64),
    /// Reports start a CSV body and break the connection after this many bytes.
    ResetAfter(u64),
    /// Reports start a CSV body and send nothing more after this many
    /// bytes, keeping the connection open.
    StallAfter(u64),
    /// Accept the request and never answer.
    Stall,
    /// Close the connection without answering.
    Hangup,
}

/// One request as the simulator received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: Method,
    /// Path and query exactly as received.
    pub target: String,
    /// Headers as received.
    pub headers: HeaderMap,
    /// The HTTP version it came over.
    pub version: http::Version,
}

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Accepted bearer keys (any case; compared lower-cased).
    pub keys: Vec<String>,
    /// Reports it knows.
    pub reports: Vec<ReportDef>,
    /// Keep every request for [`Simulator::recorded`] (tests); off for
    /// long-running use, where the record would grow without bound.
    pub record: bool,
}

#[derive(Debug)]
struct Shared {
    keys: HashSet<String>,
    catalog: Catalog,
    behavior: Mutex<Behavior>,
    record: bool,
    recorded: Mutex<Vec<Recorded>>,
    extra_headers: Mutex<HeaderMap>,
    produced: Arc<AtomicU64>,
    /// The data in each chunk of a [`Behavior::Large`] body.
    chunk_bytes: AtomicUsize,
    /// Whether [`Behavior::Large`] bodies announce their length.
    announce_length: AtomicBool,
    /// While true, requests are recorded and then wait before answering.
    held: tokio::sync::watch::Sender<bool>,
}

/// A running simulated Chime; stops when dropped.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(cfg: SimulatorConfig) -> std::io::Result<Simulator> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?, cfg).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr, cfg: SimulatorConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            keys: cfg.keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
            catalog: Catalog::new(&cfg.reports),
            behavior: Mutex::new(Behavior::Normal),
            record: cfg.record,
            recorded: Mutex::new(Vec::new()),
            extra_headers: Mutex::new(HeaderMap::new()),
            produced: Arc::new(AtomicU64::new(0)),
            chunk_bytes: AtomicUsize::new(DEFAULT_CHUNK_BYTES),
            announce_length: AtomicBool::new(false),
            held: tokio::sync::watch::Sender::new(false),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Simulator { addr, shared, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure as the gateway's upstream.
    pub fn base_url(&self) -> String {
        format!("http://{}/Chime", self.addr)
    }

    /// Changes how it answers from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *lock(&self.shared.behavior) = behavior;
    }

    /// Holds every answer (after recording its request) until [`Self::release`]:
    /// lets tests line up concurrent requests without timing.
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Lets held and future answers go.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Adds these headers to every answer from now on (to test header hygiene).
    pub fn set_extra_headers(&self, headers: HeaderMap) {
        *lock(&self.shared.extra_headers) = headers;
    }

    /// Every request received so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    /// Writes [`Behavior::Large`] bodies in chunks of `n` bytes (at least
    /// one) from now on; 64 KiB until then.
    pub fn set_chunk_bytes(&self, n: usize) {
        self.shared.chunk_bytes.store(n.max(1), Ordering::SeqCst);
    }

    /// Sends [`Behavior::Large`] bodies with a `Content-Length` (`true`)
    /// or chunked (`false`, the default) from now on.
    pub fn set_announce_length(&self, announce: bool) {
        self.shared
            .announce_length
            .store(announce, Ordering::SeqCst);
    }

    /// Bytes of [`Behavior::Large`] bodies produced so far.
    pub fn bytes_produced(&self) -> u64 {
        self.shared.produced.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move {
                    if *lock(&shared.behavior) == Behavior::Hangup {
                        record(&shared, &req);
                        return Err("hang up");
                    }
                    let mut resp = handle(&shared, req).await;
                    let extra = lock(&shared.extra_headers).clone();
                    for (name, value) in &extra {
                        resp.headers_mut().append(name, value.clone());
                    }
                    Ok::<_, &'static str>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The value Chime's model binding would take for `name` from a raw query:
/// names match case-insensitively, `+` is a space, the first of duplicates
/// wins. Tests use it to check what Chime would make of what the gateway
/// forwards.
pub fn bind_like_aspnet(raw_query: &str, name: &str) -> Option<String> {
    data::Query::parse(raw_query).get(name).map(str::to_owned)
}

/// Chime's (ASP.NET Web API's) error body.
fn message(status: StatusCode, text: &str) -> Response {
    let doc = serde_json::json!({ "Message": text });
    let mut resp = Response::new(body::full(serde_json::to_vec(&doc).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn record<B>(shared: &Shared, req: &Request<B>) {
    if !shared.record {
        return;
    }
    lock(&shared.recorded).push(Recorded {
        method: req.method().clone(),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: req.headers().clone(),
        version: req.version(),
    });
}

async fn handle<B>(shared: &Shared, req: Request<B>) -> Response {
    record(shared, &req);
    // `wait_for` fails only if the sender (owned by `shared`) is gone.
    let _ = shared.held.subscribe().wait_for(|held| !held).await;
    let behavior = lock(&shared.behavior).clone();
    match behavior {
        Behavior::Stall => std::future::pending::<()>().await,
        Behavior::Slow(d) => tokio::time::sleep(d).await,
        Behavior::Fail(status) => return message(status, "An error has occurred."),
        Behavior::Normal
        | Behavior::Large(_)
        | Behavior::ResetAfter(_)
        | Behavior::StallAfter(_)
        | Behavior::Hangup => {}
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return message(
            StatusCode::METHOD_NOT_ALLOWED,
            "The requested resource does not support this http method.",
        );
    }
    let key = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, k)| k.trim().to_ascii_lowercase());
    if !key.is_some_and(|k| shared.keys.contains(&k)) {
        return message(
            StatusCode::UNAUTHORIZED,
            "Authorization has been denied for this request.",
        );
    }
    let query = data::Query::parse(req.uri().query().unwrap_or(""));
    let large = |total, cut| {
        Some(data::Large {
            total,
            cut,
            chunk: shared.chunk_bytes.load(Ordering::SeqCst),
            announce_length: shared.announce_length.load(Ordering::SeqCst),
            produced: Arc::clone(&shared.produced),
        })
    };
    let large = match behavior {
        Behavior::Large(n) => large(n, None),
        Behavior::ResetAfter(n) => large(u64::MAX, Some(data::Cut::Reset(n))),
        Behavior::StallAfter(n) => large(u64::MAX, Some(data::Cut::Stall(n))),
        _ => None,
    };
    data::answer(&shared.catalog, req.uri().path(), &query, large)
}

/// The chunk size of [`Behavior::Large`] bodies unless set otherwise.
const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;

/// The simulator's answer for [`Behavior::Large`]: `total` bytes of CSV in
/// chunks of `chunk` bytes, each produced only when the reader asks for it,
/// chunked or with its `Content-Length` as `announce_length` says; with
/// `cut`, an error (a broken connection) or silence after that many bytes.
fn large_answer(large: data::Large) -> Response {
    use futures_util::stream;
    use http_body_util::StreamBody;
    let data::Large {
        total,
        cut,
        chunk,
        announce_length,
        produced,
    } = large;
    let header = Bytes::from_static(b"Date,QueueId,Value\n");
    let row: Bytes = {
        let mut line = b"2020-11-01T00:00:00.000Z,1,".to_vec();
        line.resize(chunk.max(line.len() + 1) - 1, b'7');
        line.push(b'\n');
        line.into()
    };
    let chunks = stream::unfold(0u64, move |sent| {
        let header = header.clone();
        let row = row.clone();
        let produced = Arc::clone(&produced);
        async move {
            if sent >= total {
                return None;
            }
            match cut {
                Some(data::Cut::Reset(n)) if sent >= n => {
                    return Some((
                        Err(std::io::Error::other("connection reset mid-body")),
                        u64::MAX,
                    ));
                }
                Some(data::Cut::Stall(n)) if sent >= n => std::future::pending::<()>().await,
                _ => {}
            }
            let want = usize::try_from(total - sent).map_or(chunk, |left| left.min(chunk));
            let chunk = if sent == 0 {
                let mut first = header.to_vec();
                first.extend_from_slice(&row[..want.saturating_sub(first.len())]);
                first.truncate(want);
                Bytes::from(first)
            } else {
                row.slice(..want)
            };
            produced.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((
                Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk)),
                sent + want as u64,
            ))
        }
    });
    let mut resp = Response::new(body::stream(StreamBody::new(chunks)));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if announce_length {
        headers.insert(CONTENT_LENGTH, crate::header_number::number(total));
    }
    resp
}
