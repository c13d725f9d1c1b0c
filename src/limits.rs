//! Limits: refusals that need nothing but the request head.
//!
//! Rejects a request that carries a body (`Content-Length` other than 0,
//! any `Transfer-Encoding`, or body frames) with 400 `body_not_allowed`,
//! because Chime's model binding would read parameters out of a form body;
//! and a query longer than `listen.max_query_bytes` with 414
//! `query_too_long`.
//! The body is dropped here: inner layers see `Request<()>`.

use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Request;

use crate::body::Response;
use crate::gate::{decided, StepFuture};
use crate::BoxError;

/// Why a request was refused before routing.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// GET and HEAD carry no body here.
    #[error("requests must not carry a body; send every parameter in the query string")]
    BodyNotAllowed,
    /// Query string over the limit.
    #[error("the query string is longer than {limit} bytes")]
    QueryTooLong {
        /// The configured limit.
        limit: usize,
    },
}

/// Layer for [`Limits`].
#[derive(Debug, Clone)]
pub struct LimitsLayer {
    max_query_bytes: usize,
}

impl LimitsLayer {
    /// Limits with the given query length cap.
    pub fn new(max_query_bytes: usize) -> Self {
        LimitsLayer { max_query_bytes }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Limits<S> {
        Limits {
            inner,
            layer: self.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Limits<S> {
    inner: S,
    layer: LimitsLayer,
}

fn has_body<B: http_body::Body>(req: &Request<B>) -> bool {
    let h = req.headers();
    let declared = h
        .get_all(CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes() != b"0");
    declared || h.contains_key(TRANSFER_ENCODING) || !req.body().is_end_stream()
}

impl<S, B> tower::Service<Request<B>> for Limits<S>
where
    S: tower::Service<Request<()>, Response = Response, Error = BoxError>,
    B: http_body::Body,
{
    type Response = Response;
    type Error = BoxError;
    type Future = StepFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let refused = if has_body(&req) {
            Some(LimitError::BodyNotAllowed)
        } else if req.uri().query().map_or(0, str::len) > self.layer.max_query_bytes {
            Some(LimitError::QueryTooLong {
                limit: self.layer.max_query_bytes,
            })
        } else {
            None
        };
        if let Some(e) = refused {
            return decided(Err(e.into()));
        }
        let (parts, _body) = req.into_parts();
        Either::Left(self.inner.call(Request::from_parts(parts, ())))
    }
}
