//! The one response body type of the gateway, and constructors for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
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

/// Whether the answer to `req` must go without its body: `HEAD` over
/// HTTP/2. hyper's HTTP/1 server leaves the body out of an answer to
/// `HEAD` itself; its HTTP/2 server sends it, and a client takes DATA on
/// such a stream as a protocol error.
pub fn headers_only<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::HEAD && req.version() == http::Version::HTTP_2
}

/// `resp` as it must go out: as it is, or for a [`headers_only`] request
/// without its body: the same head, with the `Content-Length` the body
/// would have had when the body knows it. The body is then dropped unread,
/// as when a client leaves.
pub fn fit(mut resp: Response, headers_only: bool) -> Response {
    if !headers_only {
        return resp;
    }
    let known = http_body::Body::size_hint(resp.body())
        .exact()
        .filter(|&n| n > 0);
    if let Some(n) = known {
        resp.headers_mut()
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| crate::header_number::number(n));
    }
    *resp.body_mut() = empty();
    resp
}

/// Keeps `guard` alive until `body` is finished or dropped (permits, gauges).
/// The body's size still shows, so a gateway-made document goes out with
/// `Content-Length` rather than chunked.
pub fn with_guard<G: Send + Unpin + 'static>(body: Body, guard: G) -> Body {
    Guarded::new(body, guard).boxed_unsync()
}

/// [`with_guard`]'s body, unboxed where its type can be named (the
/// connection's responses). (`map_frame` would do the holding, but hides
/// the size: it cannot know what the mapping does to it.)
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G> std::fmt::Debug for Guarded<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<G> Guarded<G> {
    /// `body`, holding `guard` until it is finished or dropped.
    pub fn new(body: Body, guard: G) -> Self {
        Guarded {
            inner: body,
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use http_body::Body as _;

    use super::*;

    /// Sets its flag when dropped.
    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_guarded_body_keeps_its_size_and_holds_the_guard_to_the_end() {
        let dropped = Arc::new(AtomicBool::new(false));
        let body = with_guard(full("{\"error\":1}"), Flag(Arc::clone(&dropped)));
        // An exact size is what lets hyper write Content-Length.
        assert_eq!(body.size_hint().exact(), Some(11));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"error\":1}");
        assert!(dropped.load(Ordering::SeqCst), "released with the body");

        let dropped = Arc::new(AtomicBool::new(false));
        let body = with_guard(empty(), Flag(Arc::clone(&dropped)));
        assert!(body.is_end_stream());
        assert!(!dropped.load(Ordering::SeqCst), "held until the body goes");
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
