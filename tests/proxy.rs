//! The gateway carries Chime traffic end to end: what reaches the upstream,
//! what comes back, and every refusal on the way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use harness::{report, Harness, ADMIN, ANSWER_PATHS, MANAGER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

#[tokio::test]
async fn docs_example_reaches_upstream_byte_identical() {
    let h = Harness::start().await;
    let target = report();
    let a = h.get_as(MANAGER, &target).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(
        a.text()
            .starts_with("Date,QueueId,Inbound,Answered\n2020-11-01,1,"),
        "{}",
        a.text()
    );
    assert_eq!(
        a.text().lines().count(),
        1 + 31,
        "header + one row per day of November (+Dec 1)"
    );
    let rec = h.sim.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].target, target);
    assert_eq!(rec[0].method, Method::GET);
}

#[tokio::test]
async fn upstream_receives_only_the_canonical_request() {
    let h = Harness::start().await;
    let a = h
        .get_as(
            &MANAGER.to_uppercase(),
            "/chime/REPORT/inboundvsansweredchats?CSV=yes&END=2020-12-01T04:59:59.999Z&Start=2020-11-01T00:00:00-04:00&queueid=1",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let rec = h.sim.recorded();
    assert_eq!(rec[0].target, report());
    // Pass-through auth forwards the canonical (lower-case) key.
    assert_eq!(rec[0].headers["authorization"], format!("Bearer {MANAGER}"));
}

#[tokio::test]
async fn service_auth_replaces_the_client_key() {
    let h = Harness::start_with(|c| {
        c.upstream.auth = chime_gateway::config::UpstreamAuth::Service(
            chime_gateway::config::Secret::new("service-key-123"),
        );
    })
    .await;
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(a.status, StatusCode::OK);
    let rec = h.sim.recorded();
    assert_eq!(rec[0].headers["authorization"], "Bearer service-key-123");
    assert!(!format!("{:?}", rec[0].headers).contains(MANAGER));
}

#[tokio::test]
async fn paths_outside_the_allowlist_are_404_and_never_forwarded() {
    let h = Harness::start().await;
    for target in [
        "/",
        "/Chime",
        "/Chime/Admin/Users",
        "/Chime/Report/InboundVsAnsweredChats/extra",
        "/Chime/Report/..%2FAdmin",
        "/Chime/Report/%49nboundVsAnsweredChats",
        "/Chime//Report/InboundVsAnsweredChats",
        "/Chime/Report/InboundVsAnsweredChats;jsessionid=1",
        "/Chime/Session/SessionDetails/abc",
        "/api/v1/anything",
    ] {
        let a = h.get_as(ADMIN, target).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{target}");
        assert_eq!(a.code(), "not_found", "{target}");
        assert_eq!(a.headers["content-type"], "application/json");
    }
    // A malformed session id is explained as such, not as an unknown route.
    let a = h.get_as(ADMIN, "/Chime/Session/SessionDetails/abc").await;
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("no such session; a session id is a positive integer"),
        "{message}"
    );
    let a = h
        .get_as(
            ADMIN,
            "/Chime/Report/NoSuchReport?start=2020-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_report")
    );
    assert!(h.sim.recorded().is_empty(), "{:?}", h.sim.recorded());
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let h = Harness::start().await;
    let target = report();
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let a = h
            .send(
                method.clone(),
                &target,
                &[("authorization", &format!("Bearer {ADMIN}"))],
            )
            .await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(a.headers["allow"], "GET, HEAD");
        assert_eq!(a.code(), "method_not_allowed");
    }
    let head = h
        .send(
            Method::HEAD,
            &target,
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(h.sim.recorded().len(), 1, "only the HEAD was forwarded");
    assert_eq!(h.sim.recorded()[0].method, Method::HEAD);
}

#[tokio::test]
async fn nothing_is_forwarded_without_a_valid_bearer_key() {
    let h = Harness::start().await;
    let target = report();
    let a = h.get(&target, &[]).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::UNAUTHORIZED, "missing_credentials")
    );
    assert!(a.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm=\"chime\""));
    let a = h
        .get(&target, &[("authorization", "Bearer not-a-guid")])
        .await;
    assert_eq!(a.code(), "malformed_credentials");
    assert_eq!(
        a.headers["www-authenticate"],
        r#"Bearer realm="chime", error="invalid_token""#
    );
    let a = h
        .get_as("11111111-2222-3333-4444-555555555555", &target)
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::UNAUTHORIZED, "unknown_key")
    );
    assert!(!a.text().contains("11111111"), "the key is never echoed");
    // A key in the query string is not a credential: it is an unknown parameter.
    let a = h.get(&format!("{target}&apikey={MANAGER}"), &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(h.sim.recorded().is_empty());
}

#[tokio::test]
async fn queue_acl_refuses_other_queues_and_tenant_wide_reports() {
    let h = Harness::start().await;
    let a = h
        .get_as(
            MANAGER,
            "/Chime/Report/InboundVsAnsweredChats?queueId=2&start=2020-11-01&stop=2020-11-02",
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::FORBIDDEN, "queue_forbidden")
    );
    let a = h
        .get_as(
            MANAGER,
            "/Chime/Report/GlobalChatVolume?start=2020-11-01&stop=2020-11-02",
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::FORBIDDEN, "admin_only")
    );
    assert!(h.sim.recorded().is_empty());
    let a = h
        .get_as(
            ADMIN,
            "/Chime/Report/GlobalChatVolume?start=2020-11-01T00:00:00Z&stop=2020-11-02T00:00:00Z",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["Labels"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn manager_session_details_checked_before_release() {
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(tweak).await;
        // Session 4 belongs to queue 1 in the simulator, session 5 to queue 2.
        let a = h.get_as(MANAGER, "/Chime/Session/SessionDetails/4").await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!(a.json()["QueueId"], 1, "{path}");
        let a = h.get_as(MANAGER, "/Chime/Session/SessionDetails/5").await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (StatusCode::FORBIDDEN, "session_forbidden"),
            "{path}"
        );
        assert!(
            !a.text().contains("Guest"),
            "{path}: no byte of the session leaks: {}",
            a.text()
        );
        let a = h
            .get_as(
                ADMIN,
                "/Chime/Session/SessionDetails/5?zone=america/new_york",
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(a.json()["StartedAt"].as_str().unwrap().ends_with("-04:00"));
        assert_eq!(
            h.sim.recorded()[2].target,
            "/Chime/Session/SessionDetails/5?zone=America/New_York"
        );
        // HEAD: the gateway asks Chime with GET, checks the body, answers
        // without it. It was a 502 when Chime was asked with HEAD.
        let head_as = |key: &str, path: &'static str| {
            let auth = format!("Bearer {key}");
            let h = &h;
            async move {
                h.send(Method::HEAD, path, &[("authorization", &auth)])
                    .await
            }
        };
        let full = h.get_as(MANAGER, "/Chime/Session/SessionDetails/4").await;
        let a = head_as(MANAGER, "/Chime/Session/SessionDetails/4").await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
        assert!(a.body.is_empty(), "{path}");
        assert_eq!(
            a.headers["content-length"],
            full.body.len().to_string().as_str(),
            "{path}"
        );
        let last = h.sim.recorded().pop().unwrap();
        assert_eq!(last.method, Method::GET, "{path}");
        let a = head_as(MANAGER, "/Chime/Session/SessionDetails/5").await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(a.headers["x-request-id"].len(), 36, "{path}");
        // An admin's HEAD needs no check and stays a HEAD.
        let a = head_as(ADMIN, "/Chime/Session/SessionDetails/5").await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!(h.sim.recorded().pop().unwrap().method, Method::HEAD);
    }
}

#[tokio::test]
async fn hop_by_hop_and_connection_listed_headers_are_removed() {
    let h = Harness::start().await;
    let mut extra = HeaderMap::new();
    for (k, v) in [
        ("connection", "x-chime-internal"),
        ("x-chime-internal", "secret"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("set-cookie", "ASP.NET_SessionId=abc"),
        ("x-powered-by", "ASP.NET"),
        ("x-report-rows", "31"),
    ] {
        extra.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h.sim.set_extra_headers(extra);
    let auth = format!("Bearer {MANAGER}");
    let a = h
        .get(
            &report(),
            &[
                ("authorization", &auth),
                ("connection", "keep-alive, user-agent, x-custom"),
                ("user-agent", "should-be-dropped"),
                ("x-custom", "1"),
                ("keep-alive", "timeout=100"),
                ("te", "trailers"),
                ("upgrade", "websocket"),
                ("proxy-authorization", "Basic eA=="),
                ("cookie", "queueId=2"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=6.6.6.6"),
                ("x-http-method-override", "DELETE"),
                ("queue_id", "2"),
                ("accept-language", "en-US"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    for gone in [
        "x-chime-internal",
        "keep-alive",
        "proxy-connection",
        "set-cookie",
        "x-powered-by",
    ] {
        assert!(!a.headers.contains_key(gone), "{gone} reached the client");
    }
    assert_eq!(a.headers["x-report-rows"], "31");

    let rec = &h.sim.recorded()[0];
    let sent: Vec<&str> = rec.headers.keys().map(|k| k.as_str()).collect();
    for gone in [
        "user-agent",
        "x-custom",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "cookie",
        "x-http-method-override",
        "queue_id",
    ] {
        assert!(
            !rec.headers.contains_key(gone),
            "{gone} reached the upstream: {sent:?}"
        );
    }
    assert_eq!(rec.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(rec.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(rec.headers["x-forwarded-proto"], "http");
    assert_eq!(rec.headers["forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(rec.headers["accept-language"], "en-US");
    assert_eq!(rec.headers["host"], h.sim.addr().to_string());
    assert_eq!(rec.headers["x-request-id"], a.headers["x-request-id"]);
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed() {
    let h = Harness::start().await;
    let auth = format!("Bearer {MANAGER}");
    let target = report();
    let a = h
        .get(
            &target,
            &[("authorization", &auth), ("x-request-id", "partner-run-42")],
        )
        .await;
    assert_eq!(a.headers["x-request-id"], "partner-run-42");
    assert_eq!(
        h.sim.recorded()[0].headers["x-request-id"],
        "partner-run-42"
    );
    let a = h
        .get("/nope", &[("x-request-id", "bad id with spaces")])
        .await;
    let id = a.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(a.json()["error"]["request_id"], id);
}

#[tokio::test]
async fn bodies_long_queries_and_big_headers_are_refused() {
    let h = Harness::start().await;
    let target = report();
    let raw = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\nConnection: close\r\n\r\nqueueId=2"
    );
    let out = h.raw(raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("body_not_allowed"), "{out}");

    let long = format!("{target}&zone={}", "A".repeat(3000));
    let a = h.get_as(MANAGER, &long).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::URI_TOO_LONG, "query_too_long")
    );

    let big = "x".repeat(20_000);
    let raw =
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let out = h.raw(raw.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert!(h.sim.recorded().is_empty());
}

#[tokio::test]
async fn upstream_down_is_502() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sim = harness::simulator(&[]).await;
    let config = harness::base_config(&format!("http://{closed}/Chime"));
    let h = Harness::start_config(sim, config).await;
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_unavailable")
    );
    assert!(h
        .metrics_text()
        .contains(r#"chime_gateway_upstream_errors_total{kind="connect"} 1"#));
}

#[tokio::test]
async fn upstream_slower_than_the_timeout_is_504() {
    let h = Harness::start_with(|c| {
        c.upstream.response_timeout = std::time::Duration::from_millis(200)
    })
    .await;
    h.sim
        .set_behavior(chime_gateway::simulator::Behavior::Stall);
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
    );
    assert_eq!(h.sim.recorded().len(), 1);
}

/// A response timeout too long to add to a clock reading (humantime takes
/// "1000000years") means no timeout in practice, not a panic per request.
#[tokio::test]
async fn an_unaddably_long_timeout_is_no_timeout() {
    let h = Harness::start_with(|c| c.upstream.response_timeout = std::time::Duration::MAX).await;
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
}

#[tokio::test]
async fn upstream_errors_pass_through_with_their_status() {
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(tweak).await;
        h.sim.set_behavior(chime_gateway::simulator::Behavior::Fail(
            StatusCode::INTERNAL_SERVER_ERROR,
        ));
        let a = h.get_as(MANAGER, &report()).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(a.json()["Message"], "An error has occurred.", "{path}");
        assert_eq!(a.headers["x-chime-gateway-cache"], "miss", "{path}");
    }
}

#[tokio::test]
async fn head_gets_the_get_answers_headers_without_its_body() {
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(tweak).await;
        let bearer = format!("Bearer {MANAGER}");
        let auth = [("authorization", bearer.as_str())];
        let get = h.send(Method::GET, &report(), &auth).await;
        let head = h.send(Method::HEAD, &report(), &auth).await;
        assert!(get.headers.contains_key("content-length"), "{path}");
        assert_eq!(head.status, StatusCode::OK, "{path}");
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(
            head.headers.get("content-length"),
            get.headers.get("content-length"),
            "{path}"
        );
        // The connections (client's and Chime's) are still in step.
        let again = h.send(Method::GET, &report(), &auth).await;
        assert_eq!(again.body, get.body, "{path}");
    }
}

#[tokio::test]
async fn an_if_none_match_matching_chimes_etag_is_answered_304_by_the_gateway() {
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(tweak).await;
        let mut etag = HeaderMap::new();
        etag.insert("etag", "W/\"v7\"".parse().unwrap());
        etag.insert("cache-control", "private".parse().unwrap());
        h.sim.set_extra_headers(etag);
        let auth = format!("Bearer {MANAGER}");
        let with_validator = |tag: &'static str| {
            let (h, auth) = (&h, auth.as_str());
            async move {
                h.get(
                    &report(),
                    &[("authorization", auth), ("if-none-match", tag)],
                )
                .await
            }
        };
        let a = with_validator("\"v7\"").await;
        assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(a.body.is_empty(), "{path}");
        assert_eq!(a.headers["etag"], "W/\"v7\"", "{path}");
        assert_eq!(a.headers["cache-control"], "private", "{path}");
        let a = with_validator("\"v6\"").await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(!a.body.is_empty(), "{path}");
        // Chime answered both and never saw the client's validator.
        assert_eq!(h.sim.recorded().len(), 2, "{path}");
        assert!(h
            .sim
            .recorded()
            .iter()
            .all(|r| !r.headers.contains_key("if-none-match")));
    }
}

#[tokio::test]
async fn admin_endpoints_and_request_metrics() {
    let h = Harness::start().await;
    assert_eq!(h.admin_get("/healthz").await.status, StatusCode::OK);
    let ready = h.admin_get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(ready.json()["keys"], 2);
    assert_eq!(h.admin_get("/nope").await.status, StatusCode::NOT_FOUND);

    let target = report();
    h.get_as(MANAGER, &target).await;
    h.get_as(MANAGER, &target).await;
    h.get_as(MANAGER, &target.replace("queueId=1", "queueId=2"))
        .await;
    h.get(&target, &[]).await;
    let m = h.admin_get("/metrics").await;
    assert!(m.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = m.text();
    for line in [
        r#"chime_gateway_requests_total{outcome="ok",report="InboundVsAnsweredChats",route="report",status_class="2xx"} 2"#,
        r#"chime_gateway_requests_total{outcome="queue_forbidden",report="InboundVsAnsweredChats",route="report",status_class="4xx"} 1"#,
        r#"chime_gateway_requests_total{outcome="missing_credentials",report="-",route="report",status_class="4xx"} 1"#,
        r#"chime_gateway_request_duration_seconds_count{route="report"} 4"#,
        r#"chime_gateway_upstream_duration_seconds_count{route="report"} 2"#,
        "chime_gateway_in_flight_requests 0",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    assert!(
        !text.contains(MANAGER) && !text.contains("queueId"),
        "no keys or raw queries in metrics"
    );
}

#[tokio::test]
async fn windows_are_normalised_before_chime_sees_them() {
    let h = Harness::start().await;
    let auth = format!("Bearer {MANAGER}");
    // Date-only in a zone, `end` for `stop`, and Accept: text/csv for csv=true.
    let a = h
        .get(
            "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01&end=2020-11-30&zone=america/new_york",
            &[("authorization", &auth), ("accept", "text/csv")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.text().starts_with("Date,QueueId"));
    assert_eq!(
        h.sim.recorded()[0].target,
        "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true&zone=America/New_York"
    );
    // StartOnly: the stop is dropped, and the response says so.
    let a = h
        .get(
            "/Chime/Report/AgentAvailability?queueId=1&start=2020-11-03&stop=2020-11-04",
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-chime-gateway-ignored"], "stop");
    assert_eq!(
        h.sim.recorded()[1].target,
        "/Chime/Report/AgentAvailability?queueId=1&start=2020-11-03T00:00:00.000Z"
    );
    // Over the maximum window: refused, naming the limit.
    let a = h
        .get(
            "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2019-01-01&stop=2020-12-31",
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_parameter")
    );
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("366 days"));
    assert_eq!(h.sim.recorded().len(), 2);
}

/// Answers to HEAD over HTTP/2 carry no DATA: hyper's HTTP/2 server sends
/// what the body holds (its HTTP/1 server leaves it out), and a client
/// must treat DATA on such a stream as a protocol error (curl does).
#[tokio::test]
async fn head_over_http2_gets_headers_only() {
    use http_body_util::BodyExt;

    let h = Harness::start().await;
    let cases = [
        // gateway-made: the listing, a refusal
        (MANAGER, "/Chime/Gateway/Reports".to_owned(), StatusCode::OK),
        (
            MANAGER,
            report().replace("queueId=1", "queueId=2"),
            StatusCode::FORBIDDEN,
        ),
        // held and checked: a manager's session
        (
            MANAGER,
            "/Chime/Session/SessionDetails/4".to_owned(),
            StatusCode::OK,
        ),
        // streamed from Chime
        (ADMIN, report(), StatusCode::OK),
        // the admin listener
        ("", "/healthz".to_owned(), StatusCode::OK),
    ];
    for (key, target, status) in cases {
        let addr = if key.is_empty() { h.admin } else { h.addr };
        let mut send = Harness::h2(addr).await;
        let request = |method| {
            http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}{target}"))
                .header("authorization", format!("Bearer {key}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap()
        };
        let get = send.send_request(request(Method::GET)).await.unwrap();
        assert_eq!(get.status(), status, "{target}");
        let full = get.into_body().collect().await.unwrap().to_bytes();
        let head = send.send_request(request(Method::HEAD)).await.unwrap();
        assert_eq!(head.status(), status, "{target}");
        assert_eq!(
            head.headers()["content-length"],
            full.len().to_string().as_str(),
            "{target}"
        );
        let body = head.into_body().collect().await.map(|b| b.to_bytes());
        assert!(
            body.as_ref().is_ok_and(bytes::Bytes::is_empty),
            "{target}: {body:?}"
        );
    }
}
