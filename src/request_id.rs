//! Request ids: every response carries `X-Request-Id`, every error body and
//! log line names it, and it is forwarded upstream so Chime-side logs join.
//!
//! A well-formed incoming id (1–64 characters of `A-Z a-z 0-9 . _ : -`) is
//! kept so a partner's own correlation id survives; anything else is replaced
//! by a freshly generated UUID.

use http::HeaderValue;

/// The request id header.
pub static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

const MAX_LEN: usize = 64;

/// A validated request id, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// Accepts `raw` if it is a well-formed id.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !ok {
            return None;
        }
        HeaderValue::from_str(raw).ok().map(RequestId)
    }

    /// A new random id.
    pub fn generate() -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        RequestId(HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("unknown")))
    }

    /// The incoming id when well-formed, else a new one.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut values = headers.get_all(&X_REQUEST_ID).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok().and_then(Self::parse),
            _ => None,
        }
        .unwrap_or_else(Self::generate)
    }

    /// The id as text (always ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_well_formed_ids() {
        let mut h = http::HeaderMap::new();
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_static("partner-42.abc:1_x"),
        );
        assert_eq!(RequestId::from_headers(&h).as_str(), "partner-42.abc:1_x");
    }

    #[test]
    fn replaces_bad_ids() {
        for bad in ["", "has space", "semi;colon", "quote\"", &"a".repeat(65)] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        let mut h = http::HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("<script>"));
        let id = RequestId::from_headers(&h);
        assert_ne!(id.as_str(), "<script>");
        assert_eq!(id.as_str().len(), 36);
    }

    #[test]
    fn duplicate_incoming_ids_are_replaced() {
        let mut h = http::HeaderMap::new();
        h.append(&X_REQUEST_ID, HeaderValue::from_static("one"));
        h.append(&X_REQUEST_ID, HeaderValue::from_static("two"));
        let id = RequestId::from_headers(&h);
        assert!(id.as_str() != "one" && id.as_str() != "two");
    }

    proptest::proptest! {
        /// Kept exactly when 1 to 64 characters of `A-Z a-z 0-9 . _ : -`,
        /// and then byte for byte; anything else (control characters, header
        /// and JSON syntax, non-ASCII, too long) gives a fresh UUID.
        #[test]
        fn keeps_exactly_the_safe_alphabet(raw in "[-A-Za-z0-9._:]{0,70}|.{0,70}|[a-z]{0,10}[\\x00-\\x1f\"\\\\;, <>]{1,2}[a-z]{0,10}") {
            let safe = (1..=64).contains(&raw.len())
                && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
            proptest::prop_assert_eq!(RequestId::parse(&raw).map(|id| id.to_string()), safe.then(|| raw.clone()));
            if let Ok(value) = HeaderValue::from_str(&raw) {
                let mut h = http::HeaderMap::new();
                h.insert(&X_REQUEST_ID, value);
                let id = RequestId::from_headers(&h);
                if safe {
                    proptest::prop_assert_eq!(id.as_str(), raw.as_str());
                } else {
                    proptest::prop_assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{}", id);
                }
            }
        }
    }
}
