//! Generated requests over HTTP/1.1 and HTTP/2: the routes partners call,
//! GET or HEAD, with generated header fields around a valid, mangled or
//! missing key. Whatever a client puts in its headers, the gateway answers
//! within seconds, never with a 5xx; every refusal of its own is the JSON
//! error; an answer to HEAD has no body and one to GET the body its
//! `Content-Length` says; no key comes back; and Chime gets either nothing
//! or the canonical request with only the headers the gateway sets or
//! allowlists. Run under both answer paths and with the cache on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use chime_gateway::simulator::Recorded;
use harness::{report, Answer, Harness, Tweak, ADMIN, ANSWER_PATHS, MANAGER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

/// The routes a case calls, written canonically: a report on the manager's
/// queue, a session, the listing, a report on a queue the manager may not
/// read, an unknown path.
fn targets() -> [String; 5] {
    [
        report(),
        "/Chime/Session/SessionDetails/4".to_owned(),
        "/Chime/Gateway/Reports".to_owned(),
        report().replace("queueId=1", "queueId=2"),
        "/Chime/Admin/Users".to_owned(),
    ]
}

/// The listing's index in [`targets`].
const LISTING: usize = 2;

/// Every header name Chime may receive: those the gateway sets and the
/// client headers it allowlists.
const UPSTREAM_NAMES: [&str; 11] = [
    "host",
    "authorization",
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
];

/// Names a client might send to confuse a proxy, and names the gateway reads.
const NAMES: [&str; 26] = [
    "Content-Length",
    "Transfer-Encoding",
    "Authorization",
    "authorization",
    "X-Request-Id",
    "traceparent",
    "tracestate",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "User-Agent",
    "Connection",
    "If-None-Match",
    "If-Modified-Since",
    "Cache-Control",
    "Range",
    "Cookie",
    "X-Forwarded-For",
    "Forwarded",
    "X-Forwarded-Host",
    "X-Http-Method-Override",
    "Expect",
    "Upgrade",
    "TE",
    "Proxy-Authorization",
    "Queue_Id",
];

/// A key as a client might spell it: right, in other case or braces,
/// truncated, or not a key at all.
fn authorization() -> impl Strategy<Value = Option<String>> {
    let key = prop_oneof![Just(MANAGER.to_owned()), Just(ADMIN.to_owned())];
    prop_oneof![
        4 => key.clone().prop_map(|k| Some(format!("Bearer {k}"))),
        1 => key.clone().prop_map(|k| Some(format!("bearer   {}", k.to_uppercase()))),
        1 => key.clone().prop_map(|k| Some(format!("Bearer {{{k}}}"))),
        1 => (key.clone(), 0..36usize).prop_map(|(k, n)| Some(format!("Bearer {}", &k[..n]))),
        1 => (key, value()).prop_map(|(k, v)| Some(format!("Bearer {k}{v}"))),
        1 => value().prop_map(Some),
        1 => Just(None),
    ]
}

/// Bytes a header value may hold (visible ASCII, space, tab and obs-text),
/// and values close to what the gateway parses.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\t\x20-\x7e\u{80}-\u{ff}]{0,40}",
        "[0-9a-f-]{0,60}",
        Just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        Just("text/csv;q=0.5, application/json".to_owned()),
        Just("close, Authorization, X-Request-Id".to_owned()),
        Just("\"v1\", W/\"v2\", *".to_owned()),
        Just("100-continue".to_owned()),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    /// Over HTTP/2 (prior knowledge) rather than HTTP/1.1.
    h2: bool,
    method: &'static str,
    target: usize,
    authorization: Option<String>,
    headers: Vec<(&'static str, String)>,
}

/// Fields HTTP/2 has no place for (RFC 9113 §8.2.2); hyper's client
/// refuses to send them.
const NOT_IN_H2: [&str; 4] = ["connection", "transfer-encoding", "upgrade", "te"];

fn case() -> impl Strategy<Value = Case> {
    (
        prop::bool::weighted(0.3),
        prop_oneof![4 => Just("GET"), 1 => Just("HEAD")],
        0..targets().len(),
        authorization(),
        prop::collection::vec((prop::sample::select(&NAMES[..]), value()), 0..6),
    )
        .prop_map(|(h2, method, target, authorization, headers)| Case {
            h2,
            method,
            target,
            authorization,
            headers: headers
                .into_iter()
                .filter(|(name, _)| !(h2 && NOT_IN_H2.contains(&name.to_lowercase().as_str())))
                .collect(),
        })
}

impl Case {
    /// The fields after `Host`, in order.
    fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        let auth = self.authorization.as_deref().map(|a| ("Authorization", a));
        auth.into_iter()
            .chain(self.headers.iter().map(|(n, v)| (*n, v.as_str())))
    }

    /// Whether it has a `Content-Length` other than 0.
    fn declares_a_body(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("content-length") && v != "0")
    }

    fn http1(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: gateway.test\r\n",
            self.method,
            targets()[self.target]
        );
        for (name, value) in self.fields() {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }

    fn http2(&self) -> http::Request<Empty<Bytes>> {
        let mut req = http::Request::builder()
            .method(self.method)
            .uri(format!("http://gateway.test{}", targets()[self.target]));
        for (name, value) in self.fields() {
            req = req.header(name, value.as_bytes());
        }
        req.body(Empty::new()).unwrap()
    }
}

/// The final answer in `raw` (HTTP/1.1, read to the close), past any
/// interim (1xx) ones.
fn parse(raw: &[u8]) -> Result<Answer, TestCaseError> {
    let mut at = 0;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut fields);
        let Ok(httparse::Status::Complete(n)) = head.parse(&raw[at..]) else {
            let raw = String::from_utf8_lossy(raw);
            return Err(TestCaseError::fail(format!("no complete answer: {raw:?}")));
        };
        let status = StatusCode::from_u16(head.code.unwrap_or(0))
            .map_err(|e| TestCaseError::fail(format!("status: {e}")))?;
        if !status.is_informational() {
            let mut headers = HeaderMap::new();
            for f in head.headers.iter() {
                headers.append(
                    HeaderName::from_bytes(f.name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(f.value).unwrap(),
                );
            }
            let body = Bytes::copy_from_slice(&raw[at + n..]);
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        at += n;
    }
}

/// Sends `case` on a fresh connection: its answer, or `None` for an HTTP/2
/// request the protocol itself refused.
async fn send(h: &Harness, case: &Case) -> Result<Option<Answer>, TestCaseError> {
    let exchange = async {
        if case.h2 {
            let mut send = Harness::h2(h.addr).await;
            let resp = match send.send_request(case.http2()).await {
                Ok(resp) => resp,
                // A Content-Length that a bodiless stream contradicts makes
                // the request malformed (RFC 9113 §8.1.1): h2 resets the
                // stream, the HTTP/2 form of hyper's bare 400.
                Err(_) if case.declares_a_body() => return Ok(None),
                Err(e) => return Err(TestCaseError::fail(format!("HTTP/2 exchange failed: {e}"))),
            };
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| TestCaseError::fail(format!("HTTP/2 body failed: {e}")))?;
            return Ok(Some(Answer {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            }));
        }
        parse(&h.raw_bytes(&case.http1()).await).map(Some)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| TestCaseError::fail("no answer within 5 s"))?
}

/// Checks the answer to `case` and what Chime `received` for it.
fn check(case: &Case, answer: &Answer, received: &[Recorded]) -> Result<(), TestCaseError> {
    let status = answer.status.as_u16();
    let body = answer.text();
    prop_assert!(status < 500, "status {status}: {body}");
    let mut text = format!("{:?}{body}", answer.headers);
    text.make_ascii_lowercase();
    for key in [MANAGER, ADMIN] {
        prop_assert!(!text.contains(key), "a key came back: {text}");
    }
    let request_id = answer.header("x-request-id");
    // hyper's own answers to HTTP/1 heads it cannot parse are the only bare ones.
    let bare = request_id.is_none() && (status == 400 || status == 431) && body.is_empty();
    if status >= 400 && !bare && case.method == "GET" {
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| TestCaseError::fail(format!("status {status}, not JSON ({e}): {body}")))?;
        prop_assert!(json["error"]["code"].is_string(), "{json}");
        prop_assert_eq!(json["error"]["request_id"].as_str(), request_id);
    }
    if case.method == "HEAD" {
        prop_assert!(body.is_empty(), "an answer to HEAD with a body: {body}");
    }
    if !(200..300).contains(&status) && status != 304 {
        prop_assert!(
            received.is_empty(),
            "status {status}, yet Chime got {received:?}"
        );
        return Ok(());
    }
    if let (Some(length), "GET") = (answer.header("content-length"), case.method) {
        prop_assert_eq!(length, answer.body.len().to_string(), "{}", body);
    }
    let Some(up) = received.last() else {
        // Answered by the gateway itself: the listing, or from its cache.
        prop_assert!(
            case.target == LISTING || answer.header("x-chime-gateway-cache") == Some("hit"),
            "status {status} without an upstream request"
        );
        return Ok(());
    };
    prop_assert_eq!(received.len(), 1);
    // The targets are written canonically, so they reach Chime as they are.
    prop_assert_eq!(&up.target, &targets()[case.target]);
    for name in up.headers.keys() {
        prop_assert!(
            UPSTREAM_NAMES.contains(&name.as_str()),
            "Chime got {name}: {:?}",
            up.headers.get_all(name).iter().collect::<Vec<_>>()
        );
    }
    prop_assert_eq!(
        up.headers.get("x-request-id").map(|v| v.to_str().unwrap()),
        request_id
    );
    let sent = up.headers["authorization"].to_str().unwrap();
    prop_assert!(
        sent == format!("Bearer {MANAGER}") || sent == format!("Bearer {ADMIN}"),
        "Chime got Authorization: {sent}"
    );
    Ok(())
}

#[test]
fn generated_headers_get_a_clear_answer_and_only_canonical_requests_reach_chime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cached: (&str, Tweak) = ("from the cache", |c| c.cache.enabled = true);
    for (path, tweak) in ANSWER_PATHS.into_iter().chain([cached]) {
        let h = rt.block_on(Harness::start_with(|c| {
            tweak(c);
            // Mangled keys are the point here, not the failure throttle.
            c.auth.max_failures_per_minute = NonZeroU32::MAX;
        }));
        // 256 cases, or PROPTEST_CASES.
        let mut runner = TestRunner::new(RunnerConfig {
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        let result = runner.run(&case(), |case| {
            let before = h.sim.recorded().len();
            match rt.block_on(send(&h, &case))? {
                Some(answer) => check(&case, &answer, &h.sim.recorded()[before..]),
                None => {
                    prop_assert!(h.sim.recorded().len() == before, "refused, yet forwarded");
                    Ok(())
                }
            }
        });
        if let Err(e) = result {
            panic!("answers {path}: {e}");
        }
    }
}
