//! Proxy: sends the typed request to Chime and streams the answer back.
//!
//! The upstream request is built only from the [`GatewayRequest`]: canonical
//! path and query under the configured base URL, the client's method (GET or
//! HEAD), allowlisted client headers ([`headers`]), `X-Request-Id`,
//! `X-Forwarded-For` / `X-Forwarded-Proto` / `Forwarded` set by the gateway
//! (client values are never forwarded), `Host` from the base URL, and
//! `Authorization` per the upstream auth mode. Response bodies stream
//! through unbuffered, except a manager's SessionDetails answer, which is
//! held (at most 1 MiB) until its `QueueId` has been checked.
//!
//! Every request has passed its own authentication, ACL and rate limit
//! before it gets here. Then, in order: a cacheable request
//! ([`crate::cache`]) is answered from the response cache if it can be;
//! a request identical to one in flight joins it ([`flight`]) and gets the
//! same streamed answer; otherwise it takes an upstream slot (503
//! `overloaded` when none is free), passes the circuit breaker and leads a
//! new flight, whose exchange runs in its own task so followers are served
//! even if the leading client leaves. With coalescing off and nothing to
//! cache, nobody else can read the answer, so there is no flight: it
//! streams straight from the upstream connection (`proxy/answer.rs`).
//! Conditional requests are answered here: `If-None-Match` is compared
//! with the answer's `ETag` (304), and neither it nor `If-Modified-Since`
//! is sent upstream, so one client's validators never decide what another
//! receives.
//!
//! Fails with 502 `upstream_unavailable` (connect failure), 504
//! `upstream_timeout` (no response headers within `response_timeout`) and
//! 502 `upstream_error` (anything else).

mod answer;
pub mod breaker;
pub mod client;
pub mod flight;
pub(crate) mod h1;
pub mod headers;
pub mod pool;
mod upstream_request;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, IF_NONE_MATCH};
use http::{HeaderName, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::acl::{Denied, SessionQueueCheck};
use crate::auth::Authenticated;
use crate::body::{self, Body, Response};
use crate::cache::{self, CacheConfig, Head, ResponseCache, Served, UpstreamKey, X_CACHE};
use crate::clock::Clock;
use crate::config::{UpstreamAuth, UpstreamConfig};
use crate::metrics::Metrics;
use crate::observe::Trace;
use crate::ratelimit::RateLimiter;
use crate::readiness::Readiness;
use crate::request::GatewayRequest;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::route::RouteKind;
use crate::trace_context::TRACEPARENT;
use crate::workers::PerWorker;
use crate::{BoxError, BoxFuture};
use answer::Answer;
pub use client::TlsSetupError;
pub use pool::{Pool, SendError, UpstreamBody};
pub use upstream_request::{InvalidTarget, UpstreamRequest};

/// Largest SessionDetails answer the gateway holds for the queue check.
const SESSION_ANSWER_LIMIT: usize = 1 << 20;

/// Names the parameters the gateway received but deliberately did not forward.
pub static X_IGNORED: HeaderName = HeaderName::from_static("x-chime-gateway-ignored");

/// Why the upstream exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
    #[error("the Chime server could not be reached")]
    Unavailable,
    /// No response headers in time.
    #[error("the Chime server did not answer in time")]
    Timeout,
    /// The exchange failed after connecting.
    #[error("the Chime server's answer could not be read")]
    Failed,
    /// The answer could not be checked (SessionDetails without a queue id).
    #[error("the Chime server's answer could not be checked, so it is withheld")]
    BadAnswer,
    /// Recent requests failed to reach Chime; not trying again yet.
    #[error(
        "the Chime server is failing; the gateway is not sending it requests for a few seconds"
    )]
    CircuitOpen {
        /// When to try again.
        retry_after: std::time::Duration,
    },
}

/// The proxy service (innermost).
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

/// Everything here is either configuration or shared through an `Arc`, so
/// [`Proxy::for_worker`] can give each worker an `Inner` of its own.
#[derive(Debug, Clone)]
struct Inner {
    /// One pool per worker thread, so an upstream connection is only ever
    /// driven by the thread whose requests use it.
    clients: Arc<PerWorker<Pool>>,
    prefix: String,
    response_timeout: std::time::Duration,
    /// `Authorization` for every upstream request when Chime is called
    /// with one service credential; `None` passes each client's key on.
    service_bearer: Option<HeaderValue>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    breaker: Arc<breaker::Breaker>,
    limiter: Arc<RateLimiter>,
    flights: Arc<flight::Flights>,
    cache_config: CacheConfig,
    cache: Option<ResponseCache>,
    clock: Arc<dyn Clock>,
}

/// What a [`Proxy`] works with besides its configuration.
#[derive(Debug, Clone)]
pub struct ProxyDeps {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness, told about connect failures.
    pub readiness: Arc<Readiness>,
    /// Hands out upstream slots.
    pub limiter: Arc<RateLimiter>,
    /// "Now", for deciding what may be cached.
    pub clock: Arc<dyn Clock>,
    /// Worker threads, each of which gets its own connection pool.
    pub workers: usize,
}

impl Proxy {
    /// A proxy to `cfg`'s upstream, coalescing and caching as `cache` says.
    pub fn new(
        cfg: &UpstreamConfig,
        cache: &CacheConfig,
        deps: ProxyDeps,
    ) -> Result<Proxy, TlsSetupError> {
        let ProxyDeps {
            metrics,
            readiness,
            limiter,
            clock,
            workers,
        } = deps;
        let parts = cfg.base_url.clone().into_parts();
        let scheme = parts.scheme.unwrap_or(http::uri::Scheme::HTTP);
        let authority = parts
            .authority
            .unwrap_or(http::uri::Authority::from_static("localhost"));
        let connect_retried = metrics
            .upstream_errors
            .with_label_values(&["connect_retried"]);
        let clients = Arc::new(PerWorker::try_new(workers, |_| {
            let connector = client::build(cfg, metrics.upstream_connections.clone())?;
            let target = pool::Target {
                scheme: scheme.clone(),
                authority: authority.clone(),
                max_idle: cfg.pool_max_idle_per_host,
                idle_timeout: cfg.pool_idle_timeout,
            };
            Ok::<_, TlsSetupError>(Pool::new(connector, target, connect_retried.clone()))
        })?);
        Ok(Proxy {
            inner: Arc::new(Inner {
                clients,
                prefix: cfg.path_prefix().to_owned(),
                response_timeout: cfg.response_timeout,
                service_bearer: match &cfg.auth {
                    UpstreamAuth::Passthrough => None,
                    UpstreamAuth::Service(secret) => {
                        Some(bearer(secret.expose()).map_err(|_| TlsSetupError::ServiceKey)?)
                    }
                },
                breaker: Arc::new(breaker::Breaker::new(
                    cfg.breaker_failures,
                    cfg.breaker_cool_down,
                )),
                cache: ResponseCache::new(cache, Arc::clone(&metrics)),
                cache_config: cache.clone(),
                flights: Arc::default(),
                metrics,
                readiness,
                limiter,
                clock,
            }),
        })
    }
}

/// `Bearer {key}`, marked sensitive (kept out of hyper's debug output).
fn bearer(key: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut text = Vec::with_capacity(7 + key.len());
    text.extend_from_slice(b"Bearer ");
    text.extend_from_slice(key.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from(text))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Proxy {
    /// A proxy sharing this one's pools, breaker, flights and cache, whose
    /// handle on them is its own: the `Arc` every request clones is then
    /// touched by one worker only, instead of bouncing between cores.
    /// `metrics` is that worker's handle ([`Metrics::for_worker`]).
    pub fn for_worker(&self, metrics: Arc<Metrics>) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                metrics,
                ..Inner::clone(&self.inner)
            }),
        }
    }
}

impl Inner {
    fn build(
        &self,
        req: &Request<()>,
        typed: &GatewayRequest,
    ) -> Result<UpstreamRequest, BoxError> {
        // A manager's session is known to be theirs only from its body, so
        // Chime is asked for it with GET even when the client sent HEAD
        // (the body is checked, then left out of the answer).
        let method = if req.method() == Method::HEAD
            && req.extensions().get::<SessionQueueCheck>().is_some()
        {
            Method::GET
        } else {
            req.method().clone()
        };
        // Room for every header set below.
        let mut out =
            UpstreamRequest::new(method, typed.upstream_path_and_query(&self.prefix), 12)?;
        headers::copy_request_headers(req.headers(), &mut out);
        let ext = req.extensions();
        let correlation = ext.get::<Trace>().map(Trace::correlation);
        if let Some(c) = correlation {
            out.push(X_REQUEST_ID.clone(), c.id.header_value());
            out.push(TRACEPARENT.clone(), c.context.header_value());
        }
        headers::Forwarding::apply(correlation.and_then(|c| c.client.as_ref()), &mut out);
        let value = match &self.service_bearer {
            Some(value) => value.clone(),
            None => bearer(
                ext.get::<Authenticated>()
                    .and_then(|a| a.key.as_ref())
                    .ok_or("proxy reached without an authenticated key")?
                    .expose(),
            )?,
        };
        out.push(AUTHORIZATION, value);
        Ok(out)
    }

    async fn forward(self: Arc<Self>, req: Request<()>) -> Result<Response, BoxError> {
        let typed = req
            .extensions()
            .get::<GatewayRequest>()
            .ok_or("proxy reached without a typed request")?;
        let trace = req.extensions().get::<Trace>();
        let if_none_match = req.headers().get(IF_NONE_MATCH);
        let upstream_req = self.build(&req, typed)?;
        let bodiless = upstream_req.method() == Method::HEAD;
        let cacheable = match &self.cache {
            Some(cache) => self
                .cache_config
                .ttl_for(typed, self.clock.now())
                .map(|ttl| (cache, ttl)),
            None => None,
        };
        // An answer to HEAD has no body, so it is never kept: a later
        // request would be served an empty resource.
        let store = cacheable
            .filter(|_| !bodiless)
            .map(|(cache, ttl)| (cache.clone(), ttl));
        // Only coalescing and the cache need the request's identity.
        let key =
            (self.cache_config.coalesce || store.is_some()).then(|| UpstreamKey::of(&upstream_req));
        if let Some((cache, _)) = cacheable {
            // A HEAD is answered from the kept answer to the same GET, when
            // there is one: its head, with that body's length and validator.
            let lookup = match key {
                Some(key) if !bodiless => key,
                _ => UpstreamKey::of_as(&upstream_req, &Method::GET),
            };
            if let Some(entry) = cache.get(lookup).await {
                if let Some(trace) = trace {
                    trace.set_cached(entry.request_id().cloned());
                }
                let mut resp = entry.respond(if_none_match);
                mark_ignored(&mut resp, typed)?;
                return Ok(resp);
            }
        }
        // tokio's clock, so that an exchange of our own starts its deadline
        // from this reading and its time is ours (one reading each, not two).
        let started = tokio::time::Instant::now();
        let (mut resp, answer, served, exchanged_for, waited) = match key {
            // Nobody can join this answer or keep a copy of it: it streams
            // straight from the upstream connection, without a flight.
            None => {
                let (head, body, took) = self.alone(upstream_req, typed, started).await?;
                let resp = head.into_response(body::empty());
                (resp, Answer::Alone(body), Served::Upstream, None, took)
            }
            Some(key) => {
                let (mut reader, mut pump, served) =
                    self.join_or_lead(key, upstream_req, typed, store, trace)?;
                let mut head = Head::clone(&*reader.head(pump.as_mut()).await?);
                let exchanged_for = head.request_id.take();
                let resp = head.into_response(body::empty());
                let waited = started.elapsed();
                let answer = Answer::Flight { reader, pump };
                (resp, answer, served, exchanged_for, waited)
            }
        };
        if let Some(trace) = trace {
            trace.set_upstream(resp.status(), waited.as_secs_f64(), served, exchanged_for);
        }
        resp.headers_mut().insert(&X_CACHE, served.header_value());
        mark_ignored(&mut resp, typed)?;
        let length = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .filter(|_| !bodiless);
        if resp.status() != StatusCode::OK {
            *resp.body_mut() = answer.into_body(length);
            return Ok(resp);
        }
        if let Some(check) = req.extensions().get::<SessionQueueCheck>() {
            let held = self.check_session(answer.into_body(length), check).await?;
            *resp.body_mut() = body::full(held);
            return Ok(resp);
        }
        if let (Some(inm), Some(etag)) = (if_none_match, resp.headers().get(http::header::ETAG)) {
            if cache::etag_matches(inm, etag) {
                let not_modified = cache::not_modified(resp.headers(), etag, served);
                // Dropped before answering: a flight's reader leaves before
                // its pump, so an unfinished pump is only handed to a task
                // if someone else still reads; an answer of our own closes
                // its connection and frees its slot.
                drop(answer);
                return Ok(not_modified);
            }
        }
        *resp.body_mut() = answer.into_body(length);
        Ok(resp)
    }

    /// One exchange whose answer only this request reads: the upstream
    /// slot and the circuit breaker as for a flight, then the answer's head,
    /// its body, which holds the slot until it ends, and how long the head
    /// took since `started` (when the request set out for the upstream).
    async fn alone(
        &self,
        req: UpstreamRequest,
        typed: &GatewayRequest,
        started: tokio::time::Instant,
    ) -> Result<(Head, answer::Alone, Duration), BoxError> {
        let slot = self.limiter.upstream_slot()?;
        self.admit()?;
        let (head, body, took) = self.exchange(req, typed.target.kind(), started).await?;
        Ok((head, answer::Alone::new(body, slot), took))
    }

    /// Lets the request through the circuit breaker, or says when to retry.
    fn admit(&self) -> Result<(), UpstreamError> {
        self.breaker.admit().map_err(|retry_after| {
            self.metrics
                .upstream_errors
                .with_label_values(&["circuit_open"])
                .inc();
            UpstreamError::CircuitOpen { retry_after }
        })
    }

    /// Follows an identical request in flight, or leads a new flight (as
    /// the request `trace` follows): returns the reader, the pump that runs
    /// the exchange (when leading) and how the answer is served.
    fn join_or_lead(
        self: &Arc<Self>,
        key: UpstreamKey,
        upstream_req: UpstreamRequest,
        typed: &GatewayRequest,
        store: Option<(ResponseCache, std::time::Duration)>,
        trace: Option<&Trace>,
    ) -> Result<(flight::Reader, Option<flight::Pump>, Served), BoxError> {
        let shared = Some(key).filter(|_| self.cache_config.coalesce);
        if let Some(key) = &shared {
            if let Some(reader) = self.flights.join(key) {
                self.metrics.coalesced.inc();
                return Ok((reader, None, Served::Coalesced));
            }
        }
        let slot = self.limiter.upstream_slot()?;
        let (leader, reader) = match self.flights.join_or_start(shared) {
            flight::Joined::Follower(reader) => {
                self.metrics.coalesced.inc();
                return Ok((reader, None, Served::Coalesced));
            }
            flight::Joined::Leader(leader, reader) => (leader, reader),
        };
        if let Err(err) = self.admit() {
            leader.fail(err.clone());
            return Err(err.into());
        }
        let store = store.map(|(cache, ttl)| (cache, key, ttl));
        let kind = typed.target.kind();
        let this = Arc::clone(self);
        // Only a leader's id goes with the answer; followers clone nothing.
        let id = trace.map(|t| t.correlation().id.clone());
        let pump =
            leader.into_pump(|leader| this.lead(leader, upstream_req, id, kind, slot, store));
        Ok((reader, Some(pump), Served::Upstream))
    }

    /// Runs one flight for the request known as `id`: the exchange, then
    /// the body, chunk by chunk, to every reader; keeps a copy for the
    /// cache when `store` says so.
    async fn lead(
        self: Arc<Self>,
        leader: flight::Leader,
        req: UpstreamRequest,
        id: Option<RequestId>,
        kind: RouteKind,
        _slot: crate::ratelimit::slots::Slot,
        store: Option<(ResponseCache, UpstreamKey, std::time::Duration)>,
    ) {
        let sent = tokio::select! {
            sent = self.exchange(req, kind, tokio::time::Instant::now()) => sent,
            () = leader.abandoned() => return,
        };
        let (mut head, mut incoming) = match sent {
            Ok((head, incoming, _took)) => (head, incoming),
            Err(err) => return leader.fail(err),
        };
        head.request_id = id;
        let head = Arc::new(head);
        let mut copy = store
            .as_ref()
            .filter(|_| head.storable())
            .and_then(|(c, _, _)| c.copy(http_body::Body::size_hint(&incoming).lower()));
        leader.head(Arc::clone(&head));
        loop {
            if !leader.room().await {
                return;
            }
            let frame = tokio::select! {
                frame = incoming.frame() => frame,
                () = leader.abandoned() => return,
            };
            match frame {
                None => break,
                Some(Err(e)) => {
                    // Chime broke off mid-body: every reader's response is
                    // aborted, never ended cleanly (observe counts it).
                    tracing::warn!(error = %e, "upstream failed mid-stream; aborting the response");
                    return;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if copy.as_mut().is_some_and(|c| c.push(&data).is_err()) {
                        copy = None;
                    }
                    leader.push(data);
                    // With a known length the end is known after the last
                    // byte: finish now rather than on one more poll.
                    if http_body::Body::is_end_stream(&incoming) {
                        break;
                    }
                }
            }
        }
        leader.complete();
        if let (Some((cache, key, ttl)), Some(copy)) = (store, copy) {
            cache.insert(key, head, copy.finish(), ttl).await;
        }
    }

    /// One upstream exchange (the pool tries a failed connect once more),
    /// its deadline counted from `started`: the answer's head, cleaned of
    /// hop-by-hop and banner headers, its body, and how long the head took
    /// since `started`.
    async fn exchange(
        &self,
        req: UpstreamRequest,
        kind: RouteKind,
        started: tokio::time::Instant,
    ) -> Result<(Head, UpstreamBody, Duration), UpstreamError> {
        // A timeout too long to add (humantime parses "1000000years") is
        // as good as none: tokio's own `timeout` uses 30 years then.
        let deadline = started
            .checked_add(self.response_timeout)
            .unwrap_or(started + Duration::from_secs(30 * 365 * 86_400));
        let sent = tokio::time::timeout_at(deadline, self.clients.get().send(&req)).await;
        let resp = match sent {
            Err(_elapsed) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&["timeout"])
                    .inc();
                self.trip();
                return Err(UpstreamError::Timeout);
            }
            Ok(Err(e)) if e.is_connect() => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&["connect"])
                    .inc();
                self.readiness.upstream_connect_failed();
                self.trip();
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream connect failed");
                return Err(UpstreamError::Unavailable);
            }
            Ok(Err(e)) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&["protocol"])
                    .inc();
                tracing::warn!(error = %e, "upstream exchange failed");
                return Err(UpstreamError::Failed);
            }
            Ok(Ok(resp)) => resp,
        };
        self.readiness.upstream_answered();
        self.breaker.success();
        let took = started.elapsed();
        // Every kind a typed request has reaches the upstream, so has this series.
        if let Some(h) = &self.metrics.route(kind).upstream {
            h.observe(took.as_secs_f64());
        }
        let (mut parts, body) = resp.into_parts();
        headers::clean_response_headers(&mut parts.headers);
        let head = Head {
            status: parts.status,
            headers: parts.headers,
            request_id: None,
        };
        Ok((head, body, took))
    }

    fn trip(&self) {
        if self.breaker.failure() {
            tracing::warn!("upstream circuit opened: failing fast for the cool-down");
        }
    }

    async fn check_session(
        &self,
        answer: Body,
        check: &SessionQueueCheck,
    ) -> Result<Bytes, BoxError> {
        let bad_answer = || {
            self.metrics
                .upstream_errors
                .with_label_values(&["bad_answer"])
                .inc();
            UpstreamError::BadAnswer
        };
        // Collected by hand: `Limited` over a boxed-error body trips a
        // higher-ranked `Send` inference in this future.
        let mut answer = answer;
        let mut held = bytes::BytesMut::new();
        while let Some(frame) = answer.frame().await {
            let Ok(data) = frame.map_err(|_| bad_answer())?.into_data() else {
                continue;
            };
            if held.len() + data.len() > SESSION_ANSWER_LIMIT {
                return Err(bad_answer().into());
            }
            held.extend_from_slice(&data);
        }
        let bytes = held.freeze();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad_answer())?;
        let queue = session_queue(&doc).ok_or_else(bad_answer)?;
        if check.0.contains(&queue) {
            Ok(bytes)
        } else {
            self.metrics
                .acl_denials
                .with_label_values(&["session_forbidden"])
                .inc();
            Err(Denied::SessionForbidden.into())
        }
    }
}

/// Says which parameters were received but not forwarded.
fn mark_ignored(resp: &mut Response, typed: &GatewayRequest) -> Result<(), BoxError> {
    if !typed.ignored.is_empty() {
        resp.headers_mut().insert(
            &X_IGNORED,
            HeaderValue::from_str(&typed.ignored.join(", "))?,
        );
    }
    Ok(())
}

/// The session's queue id: the top-level `QueueId` (any case), a positive integer.
fn session_queue(doc: &serde_json::Value) -> Option<u32> {
    let obj = doc.as_object()?;
    let mut found = obj
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("queueid"));
    let (_, value) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    value
        .as_u64()
        .filter(|&q| q > 0)
        .and_then(|q| u32::try_from(q).ok())
}

impl Proxy {
    /// Fetches a JSON document from the upstream on the gateway's own behalf
    /// (catalog refresh): `path_and_query` under the base path, with `bearer`.
    pub async fn fetch_json(
        &self,
        path_and_query: &str,
        bearer: &str,
    ) -> Result<serde_json::Value, BoxError> {
        const LIMIT: usize = 4 << 20;
        let inner = &self.inner;
        let mut req = UpstreamRequest::new(
            http::Method::GET,
            format!("{}{path_and_query}", inner.prefix),
            3,
        )?;
        req.push(AUTHORIZATION, self::bearer(bearer)?);
        req.push(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        req.push(X_REQUEST_ID.clone(), RequestId::generate().header_value());
        let resp = match tokio::time::timeout(
            inner.response_timeout,
            inner.clients.get().send(&req),
        )
        .await
        {
            Err(_) => return Err(UpstreamError::Timeout.into()),
            Ok(Err(e)) if e.is_connect() => return Err(UpstreamError::Unavailable.into()),
            Ok(Err(_)) => return Err(UpstreamError::Failed.into()),
            Ok(Ok(resp)) => resp,
        };
        if resp.status() != StatusCode::OK {
            return Err(format!("the upstream answered {}", resp.status()).into());
        }
        let bytes = Limited::new(resp.into_body(), LIMIT)
            .collect()
            .await?
            .to_bytes();
        Ok(serde_json::from_slice(&bytes)?)
    }
}

impl tower::Service<Request<()>> for Proxy {
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        Box::pin(Arc::clone(&self.inner).forward(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_queue_is_read_strictly() {
        let q = |s: &str| session_queue(&serde_json::from_str(s).unwrap());
        assert_eq!(q(r#"{"SessionId":5,"QueueId":3}"#), Some(3));
        assert_eq!(q(r#"{"queueid":3}"#), Some(3));
        assert_eq!(q(r#"{"QueueId":"3"}"#), None);
        assert_eq!(q(r#"{"QueueId":0}"#), None);
        assert_eq!(q(r#"{"QueueId":3,"queueId":4}"#), None);
        assert_eq!(q(r#"{"Session":{"QueueId":3}}"#), None);
        assert_eq!(q(r#"[{"QueueId":3}]"#), None);
    }
}
