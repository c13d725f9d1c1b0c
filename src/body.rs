//! The one response body type of the gateway, and constructors for it.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

use crate::BoxError;

/// Every response body: a gateway-made JSON document or a streamed upstream body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A response as produced by every layer.
pub type Response = http::Response<Body>;

/// A body holding `bytes` in full (small, gateway-generated documents only).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Wraps any body whose errors convert into [`BoxError`].
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Keeps `guard` alive until `body` is finished or dropped (permits, gauges).
pub fn with_guard<G: Send + 'static>(body: Body, guard: G) -> Body {
    body.map_frame(move |frame| {
        let _held = &guard;
        frame
    })
    .boxed_unsync()
}
