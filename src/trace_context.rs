//! W3C Trace Context: the gateway joins the caller's trace, or starts one,
//! so Chime-side traces line up with the partner's.
//!
//! A valid incoming `traceparent` (version `00`, non-zero trace and parent
//! ids, lower-case hex) keeps its trace id and flags; the gateway forwards
//! a new parent id (its own span). Anything else is replaced by a fresh
//! trace, not sampled. The trace id is written to the audit log.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace a request belongs to, and the gateway's span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // uuid's v4 generator is the crate's source of randomness already.
    let mut filled = 0;
    while filled < N {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let take = (N - filled).min(bytes.len());
        out[filled..filled + take].copy_from_slice(&bytes[..take]);
        filled += take;
    }
    out
}

/// Exactly `2 * N` lower-case hex digits, as W3C Trace Context writes them.
fn hex_digits<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// An id field: hex digits, not all zero (the spec's invalid id).
fn hex_field<const N: usize>(s: &str) -> Option<[u8; N]> {
    hex_digits::<N>(s).filter(|out| *out != [0u8; N])
}

impl TraceContext {
    /// Parses a `traceparent` value.
    pub fn parse(value: &str) -> Option<(TraceContext, [u8; 8])> {
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if version != "00" {
            return None;
        }
        // Two lower-case hex digits: not `u8::from_str_radix`, which takes
        // `+1` and upper case too.
        let [flags] = hex_digits::<1>(flags)?;
        let trace_id = hex_field::<16>(trace)?;
        let parent = hex_field::<8>(parent)?;
        Some((
            TraceContext {
                trace_id,
                span_id: random(),
                flags,
            },
            parent,
        ))
    }

    /// Joins the incoming trace, or starts a new one.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok().and_then(Self::parse).map(|(t, _)| t),
            _ => None,
        }
        .unwrap_or_else(|| TraceContext {
            trace_id: random(),
            span_id: random(),
            flags: 0,
        })
    }

    /// The trace id, 32 hex characters, encoded on the stack.
    pub fn trace_id(&self) -> TraceId {
        let mut hex = [b'0'; 32];
        let _ = hex::encode_to_slice(self.trace_id, &mut hex);
        TraceId(hex)
    }

    /// The `traceparent` to send upstream: this trace, the gateway's span.
    pub fn header_value(&self) -> HeaderValue {
        // `00-{trace id}-{span id}-{flags}`, hex-encoded in place.
        let mut s = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let _ = hex::encode_to_slice(self.trace_id, &mut s[3..35]);
        let _ = hex::encode_to_slice(self.span_id, &mut s[36..52]);
        let _ = hex::encode_to_slice([self.flags], &mut s[53..55]);
        HeaderValue::from_bytes(&s).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000001-0000000000000001-00",
        ))
    }
}

/// A trace id as text: 32 lower-case hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Always hex digits, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn joins_a_valid_trace_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(INCOMING));
        let t = TraceContext::from_headers(&h);
        assert_eq!(t.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = t.header_value();
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"), "sampling flag kept");
        assert!(!out.contains("00f067aa0ba902b7"), "the gateway's own span");
        assert_eq!(&out[36..52], hex::encode(t.span_id), "the span it sends");
        assert_eq!(out.len(), 55);
    }

    #[test]
    fn starts_a_trace_for_anything_else() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
            // Flags as `u8::from_str_radix` would read them, not as the spec writes them.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let t = TraceContext::from_headers(&HeaderMap::new());
        assert_eq!(t.trace_id().as_str().len(), 32);
        assert!(t.header_value().to_str().unwrap().ends_with("-00"));
        assert_ne!(
            t.trace_id(),
            TraceContext::from_headers(&HeaderMap::new()).trace_id()
        );
    }

    /// The spec's grammar: version `00`, then 32, 16 and 2 lower-case hex
    /// digits joined by `-`, the two ids not all zero.
    fn w3c(value: &str) -> bool {
        let lhex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let parts: Vec<&str> = value.split('-').collect();
        parts.len() == 4
            && parts[0] == "00"
            && lhex(parts[1], 32)
            && parts[1].bytes().any(|b| b != b'0')
            && lhex(parts[2], 16)
            && parts[2].bytes().any(|b| b != b'0')
            && lhex(parts[3], 2)
    }

    /// A valid header with one character replaced, inserted or removed, or
    /// arbitrary text: the shapes an attacker probes with.
    fn candidates() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let mutated =
            (0..INCOMING.len(), "[-+0-9a-fA-F xz_]{0,2}", 0usize..3).prop_map(|(at, with, cut)| {
                let mut s = INCOMING.to_string();
                s.replace_range(at..(at + cut).min(INCOMING.len()), &with);
                s
            });
        prop_oneof![mutated, "[-+0-9a-fA-F]{0,60}", ".{0,60}"]
    }

    proptest::proptest! {
        /// Accepted exactly when the spec's grammar holds, and what is sent
        /// upstream is again such a header, keeping the trace and flags.
        #[test]
        fn accepts_exactly_the_w3c_grammar(value in candidates()) {
            let parsed = TraceContext::parse(&value);
            proptest::prop_assert_eq!(parsed.is_some(), w3c(&value), "{:?}", value);
            if let Some((t, _)) = parsed {
                let out = t.header_value();
                let out = out.to_str().unwrap();
                proptest::prop_assert!(w3c(out), "{}", out);
                proptest::prop_assert_eq!(&out[..35], &value[..35]);
                proptest::prop_assert_eq!(&out[52..], &value[52..]);
            }
        }
    }
}
