//! Where an upstream answer's body comes from: a flight, which identical
//! requests may share and the cache may copy, or the upstream connection
//! itself, when coalescing and the cache are off for the request and a
//! flight would only add a hand-over per chunk.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::flight::{Pump, Reader};
use super::UpstreamBody;
use crate::ratelimit::slots::Slot;
use crate::BoxError;

/// An answer's body, not yet handed to the response.
pub(super) enum Answer {
    /// Followed through a flight; the leading request also drives its pump.
    Flight { reader: Reader, pump: Option<Pump> },
    /// Read by this request alone.
    Alone(Alone),
}

impl Answer {
    /// The response body; `length` is the answer's `Content-Length` unless
    /// Chime was asked with `HEAD`.
    pub(super) fn into_body(self, length: Option<u64>) -> crate::body::Body {
        match self {
            Answer::Flight { reader, pump } => reader.into_body(length, pump),
            Answer::Alone(body) => crate::body::stream(body),
        }
    }
}

/// The upstream body of an answer only one request reads, holding that
/// request's upstream slot until it ends.
pub(super) struct Alone {
    body: UpstreamBody,
    _slot: Slot,
}

impl Alone {
    pub(super) fn new(body: UpstreamBody, slot: Slot) -> Self {
        Alone { body, _slot: slot }
    }
}

impl Body for Alone {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                // As for a flight: the client's response is aborted, never
                // ended cleanly (observe counts it).
                tracing::warn!(error = %e, "upstream failed mid-stream; aborting the response");
                Poll::Ready(Some(Err(super::flight::broke_off())))
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
