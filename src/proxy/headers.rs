//! Header hygiene between client and upstream.
//!
//! Requests: only an allowlist of client headers is copied (never Cookie,
//! Authorization, Host, method-override or `X-Forwarded-*` headers, and
//! nothing whose name contains `_`), minus any header the client's
//! `Connection` names. Responses: hop-by-hop headers, those the upstream's
//! `Connection` names, cookies and server fingerprints are removed.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::upstream_request::UpstreamRequest;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The client as its connection shows it (never as its headers claim):
/// its address, for the auth throttle and the audit log, and what the
/// upstream is told (`X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`),
/// worked out once per connection and carried in each request's trace
/// ([`crate::observe::Correlation`]).
#[derive(Debug, Clone)]
pub struct Forwarding {
    ip: IpAddr,
    client_ip: HeaderValue,
    forwarded: HeaderValue,
    proto: &'static str,
}

impl Forwarding {
    /// For a client at `ip` that connected over `proto` (`http`/`https`).
    pub fn new(ip: IpAddr, proto: &'static str) -> Forwarding {
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        // Address text and the two fixed protocols are always valid values.
        let value =
            |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("unknown"));
        Forwarding {
            ip,
            client_ip: value(ip.to_string()),
            forwarded: value(format!("for={node};proto={proto}")),
            proto,
        }
    }

    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The client's address, as text.
    pub fn client_ip(&self) -> &str {
        self.client_ip.to_str().unwrap_or("unknown")
    }

    /// Sets the forwarding headers on an upstream request; without a
    /// connection (`None`) only `X-Forwarded-Proto: http`.
    pub fn apply(this: Option<&Forwarding>, out: &mut UpstreamRequest) {
        let proto = this.map_or("http", |f| f.proto);
        if let Some(f) = this {
            out.push(X_FORWARDED_FOR.clone(), f.client_ip.clone());
            out.push(FORWARDED.clone(), f.forwarded.clone());
        }
        out.push(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and
/// `Proxy-Connection`): meaningful for one connection only.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Client headers that may reach the upstream. Conditional headers do not:
/// the gateway answers them itself (see [`super`]), because one upstream
/// answer may go to several clients.
static FORWARDED_REQUEST_HEADERS: [HeaderName; 4] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
];

/// Upstream response headers never passed to clients: Chime's session
/// cookies and server/framework version banners.
static DROPPED_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::SET_COOKIE,
    header::SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
    HeaderName::from_static("x-aspnetmvc-version"),
];

/// Names listed in `Connection` headers (lower-cased by `HeaderName`).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Copies the allowlisted client headers into `out`, in the order of
/// `FORWARDED_REQUEST_HEADERS` (the upstream key hashes them in order).
pub fn copy_request_headers(client: &HeaderMap, out: &mut UpstreamRequest) {
    // One pass over the few names a client sends says which allowlisted
    // ones are there, instead of a hash lookup for each allowlisted name.
    let mut present = [false; FORWARDED_REQUEST_HEADERS.len()];
    let mut connection = false;
    for name in client.keys() {
        if let Some(i) = FORWARDED_REQUEST_HEADERS.iter().position(|f| f == name) {
            present[i] = true;
        }
        connection |= name == header::CONNECTION;
    }
    if !present.contains(&true) {
        return;
    }
    let listed = if connection {
        connection_listed(client)
    } else {
        Vec::new()
    };
    for (name, _) in FORWARDED_REQUEST_HEADERS
        .iter()
        .zip(present)
        .filter(|&(name, present)| present && !listed.contains(name))
    {
        for value in client.get_all(name) {
            out.push(name.clone(), value.clone());
        }
    }
}

/// Removes what must not travel from the upstream to the client.
pub fn clean_response_headers(headers: &mut HeaderMap) {
    // One pass over the few names present finds what to drop (usually
    // nothing) instead of fourteen removals; names a `Connection` header
    // lists go too, and that header is itself hop-by-hop.
    let mut doomed: Vec<HeaderName> = headers.keys().filter(|n| is_dropped(n)).cloned().collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(connection_listed(headers));
    for name in &doomed {
        headers.remove(name);
    }
}

/// Whether an upstream response header never reaches the client.
fn is_dropped(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || DROPPED_RESPONSE_HEADERS.contains(name)
        || *name == PROXY_CONNECTION
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn request_headers_are_allowlisted() {
        let client = map(&[
            ("accept", "text/csv"),
            ("user-agent", "PowerBI"),
            ("cookie", "queueId=2"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-http-method-override", "DELETE"),
            ("queue_id", "2"),
            ("authorization", "Bearer x"),
            ("host", "evil"),
            ("connection", "keep-alive, User-Agent"),
            ("te", "trailers"),
            ("if-none-match", "\"abc\""),
            ("if-modified-since", "Sat, 21 Nov 2026 00:00:00 GMT"),
        ]);
        let mut out = UpstreamRequest::get("/");
        copy_request_headers(&client, &mut out);
        assert_eq!(
            out.headers(),
            [(header::ACCEPT, HeaderValue::from_static("text/csv"))]
        );
    }

    /// Whatever order the client sends them in, the copies come in one
    /// order (the upstream key hashes them), each name's values in the
    /// client's order.
    #[test]
    fn request_headers_are_copied_in_one_order() {
        let mut client = map(&[
            ("user-agent", "PowerBI"),
            ("accept-language", "nl"),
            ("host", "x"),
        ]);
        client.append(header::ACCEPT, HeaderValue::from_static("text/csv"));
        client.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        let mut out = UpstreamRequest::get("/");
        copy_request_headers(&client, &mut out);
        let names: Vec<_> = out
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("accept", "text/csv"),
                ("accept", "*/*"),
                ("accept-language", "nl"),
                ("user-agent", "PowerBI"),
            ]
        );
        // Nothing allowlisted: nothing copied.
        let mut out = UpstreamRequest::get("/");
        copy_request_headers(
            &map(&[("host", "x"), ("authorization", "Bearer x")]),
            &mut out,
        );
        assert!(out.headers().is_empty());
    }

    #[test]
    fn response_hop_by_hop_and_listed_headers_removed() {
        let mut h = map(&[
            ("content-type", "text/csv"),
            ("connection", "close, x-internal"),
            ("x-internal", "secret"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("set-cookie", "ASP.NET_SessionId=abc"),
            ("server", "Microsoft-IIS/10.0"),
            ("x-powered-by", "ASP.NET"),
            ("upgrade", "h2c"),
        ]);
        clean_response_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::CONTENT_TYPE], "text/csv");
    }

    #[test]
    fn each_dropped_header_is_removed_on_its_own() {
        for name in HOP_BY_HOP
            .iter()
            .chain(&DROPPED_RESPONSE_HEADERS)
            .chain([&PROXY_CONNECTION])
        {
            let mut h = map(&[("content-type", "text/csv"), ("etag", "\"1\"")]);
            h.insert(name.clone(), HeaderValue::from_static("x"));
            clean_response_headers(&mut h);
            assert!(!h.contains_key(name), "{name}");
            assert_eq!(h.len(), 2, "{name}: {h:?}");
        }
    }
}
