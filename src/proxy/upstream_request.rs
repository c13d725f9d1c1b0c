//! The request the gateway sends to Chime, as the gateway made it.
//!
//! Its target is origin-form text the gateway wrote from the typed request
//! and its headers a list the gateway set, so sending it over HTTP/1 writes
//! them out as they are ([`super::h1`]), without an `http::Uri` parse or a
//! header map in between; HTTP/2 gets an `http::Request` made from it.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request};
use http_body_util::Empty;

/// A request for the upstream: method, origin-form target and headers.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    method: Method,
    target: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A target that is not an origin-form path and query.
#[derive(Debug, thiserror::Error)]
#[error("not an origin-form request target")]
pub struct InvalidTarget;

/// Whether an origin-form target may hold `b` (RFC 3986 `pchar`, `/`,
/// `?`, and `%` of percent-escapes): printable ASCII but space and
/// `"#<>[\]^`{|}`, so nothing in it can end the request line or the
/// target early. Comparisons only, so a check of a whole target
/// vectorises.
fn target_byte(b: u8) -> bool {
    (b > b' ')
        & (b < 0x7f)
        & (b != b'"')
        & (b != b'#')
        & (b != b'<')
        & (b != b'>')
        & (b != b'[')
        & (b != b'\\')
        & (b != b']')
        & (b != b'^')
        & (b != b'`')
        & (b != b'{')
        & (b != b'|')
        & (b != b'}')
}

impl UpstreamRequest {
    /// A request for `target` (path and query, starting with `/`), with
    /// room for `headers` headers.
    pub fn new(method: Method, target: String, headers: usize) -> Result<Self, InvalidTarget> {
        let valid =
            target.starts_with('/') && target.bytes().fold(true, |ok, b| ok & target_byte(b));
        if !valid {
            return Err(InvalidTarget);
        }
        Ok(UpstreamRequest {
            method,
            target,
            headers: Vec::with_capacity(headers),
        })
    }

    /// A `GET` (tests).
    #[cfg(test)]
    pub fn get(target: &str) -> Self {
        #[allow(clippy::unwrap_used)]
        UpstreamRequest::new(Method::GET, target.to_owned(), 4).unwrap()
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The origin-form path and query.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Every header, in the order set.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The values of `name`.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Adds a header. The gateway sets each name from one place only, so
    /// no name is set twice unless the client sent it twice.
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        self.headers.push((name, value));
    }

    /// As an `http::Request` with an absolute URI (for HTTP/2, which takes
    /// the authority from it, so any `Host` is left out).
    pub fn to_absolute(
        &self,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<Request<Empty<Bytes>>, http::Error> {
        let target = PathAndQuery::try_from(self.target.as_str())?;
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = super::pool::origin(scheme, authority, Some(target));
        let headers = req.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in self.headers.iter().filter(|(n, _)| n != HOST) {
            headers.append(name, value.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_origin_form_targets_are_taken() {
        for good in [
            "/",
            "/Chime/Report/X?queueId=1&start=2020-11-01T04:00:00.000Z&zone=America%2FNew_York",
            "/a/b;c=d?e=f+g,h@i!$'()*~",
        ] {
            assert!(
                UpstreamRequest::new(Method::GET, good.into(), 0).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            "x/y",
            "http://chime/x",
            "/a b",
            "/a\r\nHost: evil",
            "/a\n",
            "/a\0",
            "/a#frag",
            "/a\"b",
            "/a<b>",
            "/é",
            "/a\\b",
            "/a[0]",
            "/a{b}",
            "/a|b",
            "/a^b",
            "/a`b",
            "/a\x7f",
        ] {
            assert!(
                UpstreamRequest::new(Method::GET, bad.into(), 0).is_err(),
                "{bad:?}"
            );
        }
    }

    /// The comparisons say what the RFC's character classes say.
    #[test]
    fn target_bytes_are_pchar_slash_question_and_percent() {
        for b in 0..=255u8 {
            let rfc = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/?".contains(&b);
            assert_eq!(target_byte(b), rfc, "{b:#x}");
        }
    }

    #[test]
    fn the_http2_form_has_the_origin_and_every_header() {
        let mut req = UpstreamRequest::get("/Chime/x?a=1");
        req.push(http::header::ACCEPT, HeaderValue::from_static("a"));
        req.push(http::header::ACCEPT, HeaderValue::from_static("b"));
        let abs = req
            .to_absolute(&Scheme::HTTPS, &Authority::from_static("chime:8443"))
            .unwrap();
        assert_eq!(abs.uri(), "https://chime:8443/Chime/x?a=1");
        let accept: Vec<_> = abs.headers().get_all("accept").iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert_eq!(req.get_all(&http::header::ACCEPT).count(), 2);
    }
}
