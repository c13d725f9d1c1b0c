//! Gates: the request steps that decide from the request alone, without
//! waiting on anything (route, parse, ACL, the report listing).
//!
//! A step implements [`Gate`]; [`GateLayer`] turns it into a tower layer
//! whose service runs the gate and then either calls the next service,
//! answers itself, or fails with the gate's error — without calling the
//! next service. One mechanism, so each step's module holds only its rule.
//! A step that also finishes the next service's answer keeps what it needs
//! for that in a [`Finish`] and returns a [`Finishing`] future.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;

use crate::body::Response;
use crate::BoxError;

/// The future of a step that decides at once: the next service's answer,
/// or the step's own answer or refusal, ready without waiting. Not boxed:
/// the steps' futures nest into one, allocated once per request.
pub type StepFuture<F> = Either<F, Ready<Result<Response, BoxError>>>;

/// What a step does with the next service's answer once it has it: the
/// state the step keeps for then (the request's bookkeeping, a rate-limit
/// admission), consumed by [`finish`](Finish::finish).
pub trait Finish {
    /// The step's own answer.
    type Output;
    /// Turns the next service's `answer` into the step's.
    fn finish(self, answer: Result<Response, BoxError>) -> Self::Output;
    /// The answer to a poll after the answer was given, which neither
    /// tower nor hyper makes: an error response rather than a panic.
    fn spent() -> Self::Output;
}

pin_project_lite::pin_project! {
    /// The next service's future, its answer finished by a [`Finish`]. Not
    /// boxed, like [`StepFuture`]: it nests into the request's one future.
    pub struct Finishing<F, S> {
        #[pin]
        inner: F,
        finish: Option<S>,
    }
}

impl<F, S> Finishing<F, S> {
    /// `inner`, to be finished by `finish`.
    pub fn new(inner: F, finish: S) -> Self {
        Finishing {
            inner,
            finish: Some(finish),
        }
    }
}

impl<F, S> Future for Finishing<F, S>
where
    F: Future<Output = Result<Response, BoxError>>,
    S: Finish,
{
    type Output = S::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<S::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(match this.finish.take() {
            Some(finish) => finish.finish(answer),
            None => S::spent(),
        })
    }
}

/// A [`StepFuture`] that is already decided.
pub fn decided<F>(result: Result<Response, BoxError>) -> StepFuture<F> {
    Either::Right(std::future::ready(result))
}

/// What a gate decided for a request it did not refuse.
#[derive(Debug)]
pub enum Passed {
    /// Go on to the next step (the gate may have added extensions).
    Next,
    /// The gate answers the request itself.
    Answer(Response),
}

/// One synchronous step of the request path.
pub trait Gate: Clone + Send + Sync + 'static {
    /// Checks (and annotates) the request.
    fn pass(&self, req: &mut Request<()>) -> Result<Passed, BoxError>;
}

/// Layer running a [`Gate`] in front of a service.
#[derive(Debug, Clone)]
pub struct GateLayer<G> {
    gate: G,
}

impl<G> GateLayer<G> {
    /// A layer for `gate`.
    pub fn new(gate: G) -> Self {
        GateLayer { gate }
    }
}

impl<G: Clone, S> tower::Layer<S> for GateLayer<G> {
    type Service = Gated<G, S>;
    fn layer(&self, inner: S) -> Gated<G, S> {
        Gated {
            gate: Arc::new(self.gate.clone()),
            inner,
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Debug, Clone)]
pub struct Gated<G, S> {
    /// This stack's own copy (one stack per worker), so cloning the stack
    /// per request touches no reference count another worker touches.
    gate: Arc<G>,
    inner: S,
}

impl<G, S> tower::Service<Request<()>> for Gated<G, S>
where
    G: Gate,
    S: tower::Service<Request<()>, Response = Response, Error = BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = StepFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<()>) -> Self::Future {
        match self.gate.pass(&mut req) {
            Ok(Passed::Next) => Either::Left(self.inner.call(req)),
            Ok(Passed::Answer(resp)) => decided(Ok(resp)),
            Err(e) => decided(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    #[derive(Debug, Clone)]
    struct Deny;
    impl Gate for Deny {
        fn pass(&self, req: &mut Request<()>) -> Result<Passed, BoxError> {
            match req.uri().path() {
                "/answer" => Ok(Passed::Answer(Response::new(crate::body::full("mine")))),
                "/next" => Ok(Passed::Next),
                _ => Err("denied".into()),
            }
        }
    }

    #[tokio::test]
    async fn refuses_without_calling_the_next_service() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let inner = tower::service_fn(move |_req: Request<()>| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, BoxError>(Response::new(crate::body::empty())) }
        });
        let svc = GateLayer::new(Deny).layer(inner);
        let req = |p: &str| Request::get(p).body(()).unwrap();
        assert!(svc.clone().oneshot(req("/other")).await.is_err());
        assert!(svc.clone().oneshot(req("/answer")).await.is_ok());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(svc.clone().oneshot(req("/next")).await.is_ok());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
