//! Generated request heads: the routes partners call, with generated header
//! fields around a valid, mangled or missing key. Whatever a client puts in
//! its headers, the gateway answers within seconds, never with a 5xx, every
//! refusal of its own is the JSON error, no key comes back, and Chime gets
//! either nothing or the canonical request with only the headers the
//! gateway sets or allowlists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::num::NonZeroU32;
use std::time::Duration;

use chime_gateway::simulator::Recorded;
use harness::{report, Harness, Tweak, ADMIN, ANSWER_PATHS, MANAGER};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
const UPSTREAM_NAMES: [&str; 12] = [
    "host",
    "authorization",
    "x-request-id",
    "traceparent",
    "tracestate",
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
    method: &'static str,
    target: usize,
    authorization: Option<String>,
    headers: Vec<(&'static str, String)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![4 => Just("GET"), 1 => Just("HEAD")],
        0..targets().len(),
        authorization(),
        prop::collection::vec((prop::sample::select(&NAMES[..]), value()), 0..6),
    )
        .prop_map(|(method, target, authorization, headers)| Case {
            method,
            target,
            authorization,
            headers,
        })
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: gateway.test\r\n",
            self.method,
            targets()[self.target]
        );
        if let Some(a) = &self.authorization {
            out.push_str(&format!("Authorization: {a}\r\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Sends `case` on a fresh connection; the whole answer, read to the close.
async fn send(h: &Harness, case: &Case) -> Result<Vec<u8>, TestCaseError> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(&case.bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| TestCaseError::fail("no answer within 5 s"))
}

/// Checks the answer to `case` and what Chime `received` for it.
fn check(case: &Case, answer: &[u8], received: &[Recorded]) -> Result<(), TestCaseError> {
    let no_answer = || {
        TestCaseError::fail(format!(
            "no complete answer: {:?}",
            String::from_utf8_lossy(answer)
        ))
    };
    // The final answer's head, past any interim (1xx) ones.
    let mut at = 0;
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let (head, len) = loop {
        let mut head = httparse::Response::new(&mut fields);
        match head.parse(&answer[at..]) {
            Ok(httparse::Status::Complete(n)) if head.code.is_some_and(|c| c < 200) => at += n,
            Ok(httparse::Status::Complete(n)) => break (head, at + n),
            _ => return Err(no_answer()),
        }
    };
    let status = head.code.unwrap_or(0);
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| String::from_utf8_lossy(f.value).into_owned())
    };
    let body = String::from_utf8_lossy(&answer[len..]);
    let text = String::from_utf8_lossy(answer).to_lowercase();
    prop_assert!(status < 500, "status {status}: {body}");
    for key in [MANAGER, ADMIN] {
        prop_assert!(!text.contains(key), "a key came back: {text}");
    }
    let request_id = header("x-request-id");
    let bare = request_id.is_none() && (status == 400 || status == 431) && body.is_empty();
    if status >= 400 && !bare && case.method == "GET" {
        // hyper's own answers to heads it cannot parse are the only bare ones.
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| TestCaseError::fail(format!("status {status}, not JSON ({e}): {body}")))?;
        prop_assert!(json["error"]["code"].is_string(), "{json}");
        prop_assert_eq!(json["error"]["request_id"].as_str(), request_id.as_deref());
    }
    if !(200..300).contains(&status) && status != 304 {
        prop_assert!(
            received.is_empty(),
            "status {status}, yet Chime got {received:?}"
        );
        return Ok(());
    }
    if let (Some(length), "GET") = (header("content-length"), case.method) {
        prop_assert_eq!(length, answer[len..].len().to_string(), "{}", body);
    }
    let Some(up) = received.last() else {
        // Answered by the gateway itself: the listing, or from its cache.
        prop_assert!(
            case.target == LISTING || header("x-chime-gateway-cache").as_deref() == Some("hit"),
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
        request_id.as_deref()
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
            let answer = rt.block_on(send(&h, &case))?;
            check(&case, &answer, &h.sim.recorded()[before..])
        });
        if let Err(e) = result {
            panic!("answers {path}: {e}");
        }
    }
}
