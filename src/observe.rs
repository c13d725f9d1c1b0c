//! Observe: the outermost layer, which sees every outcome.
//!
//! Assigns the [`RequestId`] (kept from a well-formed `X-Request-Id`, else
//! generated), the W3C [`TraceContext`], and a [`Trace`] that inner layers
//! fill in (route, user, key fingerprint, report, queue, window, upstream
//! timing). Turns every inner error into the JSON refusal via
//! [`crate::error`], so this service never fails. Adds `X-Request-Id` to
//! every response. When the response body ends (or the client goes away) it
//! records metrics and writes one audit line; neither ever contains a key or
//! the raw query.

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::audit::{AuditLog, AuditRecord};
use crate::auth::{Fingerprint, Principal};
use crate::body::{Body, Response};
use crate::error;
use crate::gate::{Finish, Finishing};
use crate::metrics::{status_class, Metrics};
use crate::proxy::headers::Forwarding;
use crate::request::{GatewayRequest, Target, Zone};
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::route::{RouteKind, RouteMatch};
use crate::trace_context::TraceContext;
use crate::unwind::{Contained, Panicked};
use crate::BoxError;

/// How the request is known outside the gateway: its id and its trace,
/// as sent upstream ([`Trace::correlation`]).
#[derive(Debug, Clone)]
pub struct Correlation {
    /// `X-Request-Id`.
    pub id: RequestId,
    /// The W3C trace, with the gateway's own span.
    pub context: TraceContext,
    /// The client as its connection shows it (`None` outside a server
    /// connection, as in tests that call the stack directly).
    pub client: Option<Forwarding>,
}

/// What inner layers learned about a request, for metrics and logs, and
/// how it is known outside the gateway. One extension for both: each
/// insert is an allocation, and the request's extension map regrows at
/// its fourth and eighth.
#[derive(Debug, Clone)]
pub struct Trace(Arc<TraceShared>);

#[derive(Debug)]
struct TraceShared {
    correlation: Correlation,
    fields: Mutex<TraceFields>,
}

/// The fields of a [`Trace`].
#[derive(Debug, Clone, Default)]
pub struct TraceFields {
    /// Route kind, `None` until routed.
    pub route: Option<RouteKind>,
    /// What the request was for (its report, discovery route or session);
    /// [`Target::name`] is the label. Held, not copied: the name is the
    /// catalog's own.
    pub report: Option<Target>,
    /// `queueId`.
    pub queue: Option<u32>,
    /// User.
    pub user: Option<Arc<str>>,
    /// Role.
    pub role: Option<&'static str>,
    /// Key fingerprint.
    pub fingerprint: Option<Fingerprint>,
    /// Upstream status.
    pub upstream_status: Option<u16>,
    /// Seconds until upstream headers.
    pub upstream_seconds: Option<f64>,
    /// Where the answer came from: `upstream` (this request's own call),
    /// `coalesced` (an identical request's call) or `cache`.
    pub served: Option<&'static str>,
    /// The request whose upstream exchange answered this one, when that
    /// was another request's (coalesced, or the call that filled the cache).
    pub answered_by: Option<RequestId>,
    /// Normalised window start.
    pub start: Option<jiff::Timestamp>,
    /// Normalised window end.
    pub stop: Option<jiff::Timestamp>,
    /// Canonical zone.
    pub zone: Option<Zone>,
    /// CSV requested.
    pub csv: Option<bool>,
}

impl Trace {
    /// An empty trace of the request known as `correlation`.
    pub fn new(correlation: Correlation) -> Trace {
        Trace(Arc::new(TraceShared {
            correlation,
            fields: Mutex::default(),
        }))
    }

    /// The request's id and trace context.
    pub fn correlation(&self) -> &Correlation {
        &self.0.correlation
    }

    fn update(&self, f: impl FnOnce(&mut TraceFields)) {
        f(&mut self.0.fields.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The fields, leaving the trace empty (for the end of the request).
    pub fn take(&self) -> TraceFields {
        std::mem::take(&mut *self.0.fields.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records the route.
    pub fn set_route(&self, m: &RouteMatch) {
        self.update(|t| t.route = Some(m.kind()));
    }

    /// Records who is calling.
    pub fn set_principal(&self, p: &Principal) {
        self.update(|t| {
            t.user = Some(Arc::clone(&p.user));
            t.role = Some(p.role.as_str());
            t.fingerprint = Some(p.fingerprint);
        });
    }

    /// Records the typed request.
    pub fn set_request(&self, r: &GatewayRequest) {
        self.update(|t| {
            t.report = Some(r.target.clone());
            t.queue = r.params.queue_id;
            t.start = r.params.start;
            t.stop = r.params.stop;
            t.zone = r.params.zone.clone();
            t.csv = Some(r.params.csv);
        });
    }

    /// Records the upstream's answer, `served` as in [`TraceFields::served`],
    /// from the exchange of the request known as `answered_by` (`None`: this
    /// request's own).
    pub fn set_upstream(
        &self,
        status: StatusCode,
        seconds: f64,
        served: crate::cache::Served,
        answered_by: Option<RequestId>,
    ) {
        self.update(|t| {
            t.upstream_status = Some(status.as_u16());
            t.upstream_seconds = Some(seconds);
            t.served = Some(served.as_str());
            t.answered_by = answered_by;
        });
    }

    /// Records an answer from the response cache, filled by the request
    /// known as `answered_by`.
    pub fn set_cached(&self, answered_by: Option<RequestId>) {
        self.update(|t| {
            t.served = Some(crate::cache::Served::Cache.as_str());
            t.answered_by = answered_by;
        });
    }
}

/// Layer for [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    sinks: Arc<Sinks>,
}

/// Where observations go.
#[derive(Debug)]
struct Sinks {
    metrics: Arc<Metrics>,
    audit: AuditLog,
    per_user: bool,
}

impl ObserveLayer {
    /// Observes into `metrics` and `audit`; `per_user` adds per-user counters.
    pub fn new(metrics: Arc<Metrics>, audit: AuditLog, per_user: bool) -> Self {
        ObserveLayer {
            sinks: Arc::new(Sinks {
                metrics,
                audit,
                per_user,
            }),
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            sinks: Arc::clone(&self.sinks),
            client: None,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    sinks: Arc<Sinks>,
    client: Option<Forwarding>,
}

impl<S> Observe<S> {
    /// The same service for one connection's requests: each request's
    /// trace names `client` (for the auth throttle, the audit log and the
    /// forwarding headers), worked out once per connection.
    pub fn for_client(mut self, client: Forwarding) -> Self {
        self.client = Some(client);
        self
    }
}

/// Finishes a request's bookkeeping when dropped: with the response body,
/// or with the request future if the client went away first.
#[derive(Debug)]
pub struct Completion {
    start: Instant,
    method: Method,
    trace: Trace,
    sinks: Arc<Sinks>,
    status: Option<StatusCode>,
    outcome: &'static str,
    bytes: u64,
    body: BodyEnd,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let m = &self.sinks.metrics;
        m.in_flight().dec();
        // The request is over: nothing fills the trace in any more.
        let t = self.trace.take();
        let correlation = self.trace.correlation();
        let kind = t.route.unwrap_or(RouteKind::Unmatched);
        let route = kind.as_str();
        let report = t.report.as_ref().map_or("-", Target::name);
        let (class, outcome) = match (self.status, self.body) {
            (None, _) => ("none", "client_closed"),
            (Some(s), BodyEnd::Failed) => {
                m.stream_aborts.with_label_values(&["upstream"]).inc();
                (status_class(s), "upstream_aborted")
            }
            (Some(s), BodyEnd::Open) if self.method != Method::HEAD => {
                m.stream_aborts.with_label_values(&["client"]).inc();
                (status_class(s), "client_closed")
            }
            (Some(s), _) => (status_class(s), self.outcome),
        };
        let elapsed = self.start.elapsed().as_secs_f64();
        m.requests()
            .with_label_values(&[route, report, class, outcome])
            .inc();
        let by_route = m.route(kind);
        by_route.duration.observe(elapsed);
        by_route.bytes.inc_by(self.bytes);
        if let (true, Some(user)) = (self.sinks.per_user, t.user.as_deref()) {
            m.user_requests.with_label_values(&[user, outcome]).inc();
        }
        let decision = match self.status {
            _ if matches!(outcome, "client_closed" | "upstream_aborted") => "aborted",
            Some(s) if outcome == "ok" && !s.is_server_error() => "allow",
            Some(_) if outcome == "ok" => "error",
            Some(_) => "deny",
            None => "aborted",
        };
        // Formatting the record costs more than the rest of this bookkeeping.
        if self.sinks.audit.is_on() {
            self.sinks.audit.record(&AuditRecord {
                time: jiff::Timestamp::now(),
                request_id: correlation.id.as_str(),
                trace_id: correlation.context.trace_id().as_str(),
                client: correlation.client.as_ref().map(Forwarding::client_ip),
                user: t.user.as_deref(),
                key: t.fingerprint.as_ref().map(Fingerprint::as_str),
                role: t.role,
                method: self.method.as_str(),
                route,
                report: t.report.as_ref().map(Target::name),
                queue: t.queue,
                start: t.start,
                stop: t.stop,
                zone: t.zone.as_ref().map(Zone::name),
                csv: t.csv,
                decision,
                reason: outcome,
                status: self.status.map(|s| s.as_u16()),
                bytes: self.bytes,
                upstream_status: t.upstream_status,
                upstream_seconds: t.upstream_seconds,
                served: t.served,
                upstream_request_id: match &t.answered_by {
                    Some(id) => Some(id.as_str()),
                    None => (t.served == Some(crate::cache::Served::Upstream.as_str()))
                        .then(|| correlation.id.as_str()),
                },
                seconds: elapsed,
            });
        }
        tracing::debug!(
            target: "chime_gateway::access",
            request_id = %correlation.id,
            route,
            report,
            user = t.user.as_deref(),
            key = t.fingerprint.as_ref().map(Fingerprint::as_str),
            status = self.status.map(|s| s.as_u16()),
            outcome,
            bytes = self.bytes,
            seconds = elapsed,
            "request"
        );
    }
}

impl<S, B> tower::Service<Request<B>> for Observe<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// Not boxed: the layers' futures nest into the one the connection
    /// service boxes.
    type Future = Finishing<Contained<S::Future>, Completion>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Inner layers are always ready (they shed load by refusing, not by waiting).
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = RequestId::from_headers(req.headers());
        let trace = Trace::new(Correlation {
            id,
            context: TraceContext::from_headers(req.headers()),
            client: self.client.clone(),
        });
        self.sinks.metrics.in_flight().inc();
        let done = Completion {
            start: Instant::now(),
            method: req.method().clone(),
            trace: trace.clone(),
            sinks: Arc::clone(&self.sinks),
            status: None,
            outcome: "ok",
            bytes: 0,
            body: BodyEnd::Open,
        };
        req.extensions_mut().insert(trace);
        let inner = &mut self.inner;
        Finishing::new(Contained::call(|| inner.call(req)), done)
    }
}

/// The inner service's answer (an error rendered as its JSON refusal), with
/// the request id header and a body that finishes the request's
/// bookkeeping. Dropped before the answer (the client left), the
/// bookkeeping is finished at once.
impl Finish for Completion {
    type Output = Result<Response, Infallible>;

    fn finish(mut self, answer: Result<Response, BoxError>) -> Self::Output {
        let id = &self.trace.correlation().id;
        let mut resp = match answer {
            Ok(resp) => resp,
            Err(err) => {
                let c = error::classify(err.as_ref());
                if c.is_internal() {
                    tracing::error!(request_id = %id, error = %err, "internal error");
                }
                self.outcome = c.code;
                error::render(&c, id)
            }
        };
        resp.headers_mut().insert(&X_REQUEST_ID, id.header_value());
        self.status = Some(resp.status());
        Ok(resp.map(|body| count_into(body, self)))
    }

    fn spent() -> Self::Output {
        let err = BoxError::from("observed request polled after it completed");
        Ok(error::render(
            &error::classify(&*err),
            &RequestId::generate(),
        ))
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// Not (yet) at its end: if dropped like this, the client went away.
    Open,
    /// Every byte was sent.
    Complete,
    /// The upstream broke off; the client's response was aborted.
    Failed,
}

pin_project_lite::pin_project! {
    /// The response body, counting bytes and noting how it ends.
    struct Tracked {
        #[pin]
        inner: Body,
        done: Completion,
    }

    impl PinnedDrop for Tracked {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.done.body == BodyEnd::Open && http_body::Body::is_end_stream(&*this.inner) {
                this.done.body = BodyEnd::Complete;
            }
        }
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if this.done.body == BodyEnd::Failed {
            // Not polled again after an error (it may have been a panic).
            return Poll::Ready(None);
        }
        let polled = catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll_frame(cx)))
            .unwrap_or_else(|_| Poll::Ready(Some(Err(Panicked.into()))));
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.done.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.done.body = BodyEnd::Failed,
            Poll::Ready(None) => this.done.body = BodyEnd::Complete,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn count_into(body: Body, done: Completion) -> Body {
    Tracked { inner: body, done }.boxed_unsync()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tower::{Layer, ServiceExt};

    use super::*;

    /// A panic in the request path (found once by fuzzing, in the time
    /// parser) is answered with the JSON 500 and counted, not a cut
    /// connection.
    /// The layer under test (audit off), and the metrics it counts into.
    fn layer() -> (ObserveLayer, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::register(&prometheus::Registry::new()).unwrap());
        let audit = AuditLog::off(Arc::clone(&metrics));
        (
            ObserveLayer::new(Arc::clone(&metrics), audit, false),
            metrics,
        )
    }

    #[tokio::test]
    async fn a_request_whose_handling_panics_gets_the_json_500() {
        let (layer, metrics) = layer();
        let in_call = layer.layer(tower::service_fn(
            |_: Request<()>| -> std::future::Ready<Result<Response, BoxError>> {
                panic!("while deciding")
            },
        ));
        let in_poll = layer.layer(tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("while waiting");
            }
            Ok::<Response, BoxError>(Response::new(crate::body::empty()))
        }));
        let answers = [
            in_call.oneshot(Request::new(())).await.unwrap(),
            in_poll.oneshot(Request::new(())).await.unwrap(),
        ];
        for resp in answers {
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let id = resp.headers()[&X_REQUEST_ID].to_str().unwrap().to_owned();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(doc["error"]["code"], "internal");
            assert_eq!(doc["error"]["request_id"], id.as_str());
        }
        assert_eq!(metrics.in_flight().get(), 0);
    }

    /// A body that panics when polled.
    struct Bomb;

    impl http_body::Body for Bomb {
        type Data = bytes::Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            panic!("while streaming")
        }
    }

    /// A panic while the answer streams aborts that answer, as an upstream
    /// breaking off does, instead of unwinding through the connection.
    #[tokio::test]
    async fn a_body_that_panics_aborts_its_answer() {
        let (layer, metrics) = layer();
        let svc = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<Response, BoxError>(Response::new(Bomb.boxed_unsync()))
        }));
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<Panicked>(), "{err}");
        assert!(body.frame().await.is_none(), "not polled again");
        drop(body);
        assert_eq!(metrics.in_flight().get(), 0);
    }
}
