//! The admin API on the admin listener: every operation, its refusals, and
//! who may call it (token, loopback Host, the CSRF header).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use chime_gateway::config::{KeySource, Secret, UpstreamAuth};
use chime_gateway::demo::write_demo_keys;
use harness::{Answer, Harness, DOC_QUERY};
use http::{Method, StatusCode};
use serde_json::json;

fn report(queue: u32) -> String {
    let q = DOC_QUERY.replace("queueId=1", &format!("queueId={queue}"));
    format!("/Chime/Report/InboundVsAnsweredChats?{q}")
}

/// A gateway whose keys are a private copy of the demo key file.
async fn with_key_file(
    tweak: impl FnOnce(&mut chime_gateway::config::Config),
) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_demo_keys(dir.path()).unwrap();
    let h = Harness::start_with(|c| {
        c.keys.source = KeySource::File(path);
        // New keys are unknown to the simulated Chime: it sees the service key.
        c.upstream.auth = UpstreamAuth::Service(Secret::new("service-key-123"));
        tweak(c);
    })
    .await;
    (h, dir)
}

async fn call(h: &Harness, method: Method, path: &str, body: Option<serde_json::Value>) -> Answer {
    h.admin_call(method, path, body, &[]).await
}

fn assert_refused(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(
        (a.status, a.code().as_str()),
        (status, code),
        "{}",
        a.text()
    );
    assert!(a.json()["error"]["request_id"].is_string());
}

#[tokio::test]
async fn users_and_keys_through_their_whole_life() {
    let (h, _dir) = with_key_file(|_| {}).await;
    let s = call(&h, Method::GET, "/api/session", None).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.json()["store"], "file");
    assert_eq!(s.json()["auth"], "loopback");

    // Add a user; a duplicate, a bad name and an unknown tier are refused.
    let new_user =
        json!({"name": "ops@example.com", "role": "manager", "queues": [1], "tier": "default"});
    let a = call(&h, Method::POST, "/api/users", Some(new_user.clone())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_refused(
        &call(&h, Method::POST, "/api/users", Some(new_user)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let bad = json!({"name": "a b", "role": "manager"});
    assert_refused(
        &call(&h, Method::POST, "/api/users", Some(bad)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let tier = json!({"name": "x", "role": "manager", "tier": "gold"});
    assert_refused(
        &call(&h, Method::POST, "/api/users", Some(tier)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let unknown_field = json!({"name": "y", "role": "manager", "admin": true});
    assert_refused(
        &call(&h, Method::POST, "/api/users", Some(unknown_field)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // Change queues (the name is percent-encoded in the path, as the page sends it).
    let user = "/api/users/ops%40example.com";
    let a = call(&h, Method::PATCH, user, Some(json!({"queues": [1, 2]}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_refused(
        &call(
            &h,
            Method::PATCH,
            "/api/users/nobody",
            Some(json!({"queues": [1]})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Generate: the key is in this answer only, and works at once.
    let g = call(&h, Method::POST, &format!("{user}/keys"), Some(json!({}))).await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.text());
    let first = g.json()["key"].as_str().unwrap().to_owned();
    let first_fp = g.json()["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(h.get_as(&first, &report(2)).await.status, StatusCode::OK);
    // A second key needs an explicit rotation.
    assert_refused(
        &call(&h, Method::POST, &format!("{user}/keys"), Some(json!({}))).await,
        StatusCode::CONFLICT,
        "conflict",
    );

    // Rotate without grace: the old key dies now, the new one works.
    let r = call(
        &h,
        Method::POST,
        &format!("{user}/keys"),
        Some(json!({"rotate": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let second = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["retired"][0]["fingerprint"], first_fp.as_str());
    assert_eq!(
        h.get_as(&first, &report(1)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.get_as(&second, &report(1)).await.status, StatusCode::OK);
    // A grace period keeps the old key alive a while.
    let r = call(
        &h,
        Method::POST,
        &format!("{user}/keys"),
        Some(json!({"rotate": true, "grace": "1h"})),
    )
    .await;
    let third = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(h.get_as(&second, &report(1)).await.status, StatusCode::OK);
    assert_eq!(h.get_as(&third, &report(1)).await.status, StatusCode::OK);
    assert_refused(
        &call(
            &h,
            Method::POST,
            &format!("{user}/keys"),
            Some(json!({"grace": "1h"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // The list shows fingerprints and states, never a key.
    let list = call(&h, Method::GET, "/api/users", None).await;
    assert_eq!(list.status, StatusCode::OK);
    for key in [&first, &second, &third] {
        assert!(!list.text().contains(key.as_str()));
    }
    let ops = list.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "ops@example.com")
        .cloned()
        .unwrap();
    assert_eq!(ops["queues"], json!([1, 2]));
    let states: Vec<&str> = ops["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["expired", "active", "active"]);
    assert!(
        ops["keys"][1]["last_used"].is_string(),
        "last use is recorded: {ops}"
    );

    // Revoke one key by fingerprint, then the rest by user.
    let third_fp = r.json()["fingerprint"].as_str().unwrap().to_owned();
    let a = call(&h, Method::DELETE, &format!("/api/keys/{third_fp}"), None).await;
    assert_eq!(a.json()["revoked"], json!([third_fp]));
    assert_eq!(
        h.get_as(&third, &report(1)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.get_as(&second, &report(1)).await.status, StatusCode::OK);
    let a = call(&h, Method::DELETE, &format!("{user}/keys"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        h.get_as(&second, &report(1)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_refused(
        &call(&h, Method::DELETE, &format!("{user}/keys"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Wrong methods and paths answer in the same error shape.
    assert_refused(
        &call(&h, Method::PUT, "/api/users", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_refused(
        &call(&h, Method::GET, "/api/nothing", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_refused(
        &h.admin_call(
            Method::POST,
            "/api/users",
            None,
            &[("content-type", "application/json")],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

#[tokio::test]
async fn explain_traces_the_decision_and_forwards_nothing() {
    let (h, _dir) = with_key_file(|_| {}).await;
    let explain = |who: serde_json::Value, target: String| {
        let mut body = who;
        body["target"] = json!(target);
        call(&h, Method::POST, "/api/explain", Some(body))
    };
    let allowed = explain(json!({"user": "demo-manager"}), report(1)).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
    let doc = allowed.json();
    assert_eq!(doc["decision"], "allow");
    assert_eq!(doc["forwarded"], false);
    assert_eq!(
        doc["upstream_request"],
        "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true"
    );
    let steps: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["route", "parse", "acl", "rate_limit", "cache"]);
    assert_eq!(doc["steps"][3]["limits"]["tier"], "default");

    let fp = doc["fingerprint"].as_str().unwrap().to_owned();
    let denied = explain(json!({"fingerprint": fp}), report(2)).await.json();
    assert_eq!(denied["decision"], "deny");
    assert_eq!(
        (denied["status"].as_u64(), denied["code"].as_str()),
        (Some(403), Some("queue_forbidden"))
    );
    assert_eq!(
        denied["steps"].as_array().unwrap().last().unwrap()["step"],
        "acl"
    );

    let bad = explain(
        json!({"user": "demo-admin"}),
        "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=yesterdayish".into(),
    )
    .await
    .json();
    assert_eq!(
        (bad["decision"].as_str(), bad["code"].as_str()),
        (Some("deny"), Some("bad_parameter"))
    );

    assert_eq!(h.sim.recorded().len(), 0, "explain never reaches Chime");
    assert_refused(
        &explain(json!({"user": "ghost"}), report(1)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_refused(
        &explain(json!({"user": "demo-admin", "fingerprint": fp}), report(1)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_refused(
        &explain(
            json!({"user": "demo-admin"}),
            "http://evil.example/x".into(),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

#[tokio::test]
async fn a_token_is_required_when_configured_and_compared_exactly() {
    let token = "correct-horse-battery-staple-42";
    let (h, _dir) = with_key_file(|c| c.admin.token = Some(Secret::new(token))).await;
    let no_token = call(&h, Method::GET, "/api/users", None).await;
    assert_refused(&no_token, StatusCode::UNAUTHORIZED, "admin_unauthorized");
    assert!(no_token.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("chime-gateway-admin"));
    for wrong in [
        "Bearer correct-horse",
        "Bearer correct-horse-battery-staple-43",
        "Basic Y29ycmVjdA==",
    ] {
        let a = h
            .admin_call(Method::GET, "/api/users", None, &[("authorization", wrong)])
            .await;
        assert_refused(&a, StatusCode::UNAUTHORIZED, "admin_unauthorized");
        assert!(!a.text().contains(token));
    }
    let bearer = format!("Bearer {token}");
    let ok = h
        .admin_call(
            Method::GET,
            "/api/users",
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    // With a token, any Host may be used (a reverse proxy in front).
    let proxied = h
        .admin_call(
            Method::GET,
            "/api/session",
            None,
            &[("authorization", &bearer), ("host", "admin.example.com")],
        )
        .await;
    assert_eq!(proxied.json()["auth"], "token");
}

#[tokio::test]
async fn cross_site_requests_are_refused() {
    let (h, _dir) = with_key_file(|_| {}).await;
    // A form post from another site carries no custom header.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let forged = http::Request::post(format!("http://{}/api/users", h.admin))
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"name":"evil","role":"admin"}"#,
        )))
        .unwrap();
    let resp = client.request(forged).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // DNS rebinding: the right header, but a foreign Host without a token.
    let rebound = h
        .admin_call(
            Method::GET,
            "/api/users",
            None,
            &[("host", "attacker.example:9090")],
        )
        .await;
    assert_refused(&rebound, StatusCode::FORBIDDEN, "admin_cross_site");
    let list = call(&h, Method::GET, "/api/users", None).await;
    assert!(!list.text().contains("evil"));
}

#[tokio::test]
async fn compiled_in_keys_are_read_only_and_the_page_is_self_contained() {
    let h = Harness::start().await;
    assert_eq!(
        call(&h, Method::GET, "/api/users", None).await.status,
        StatusCode::OK
    );
    assert_refused(
        &call(
            &h,
            Method::POST,
            "/api/users/demo-admin/keys",
            Some(json!({"rotate": true})),
        )
        .await,
        StatusCode::CONFLICT,
        "read_only_key_store",
    );
    let page = h.admin_get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    for asset in ["/", "/admin.js", "/admin.css"] {
        let a = h.admin_get(asset).await;
        assert_eq!(a.status, StatusCode::OK);
        let text = a.text();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
    }
    assert!(page.text().contains("<label for=\"filter\">"));
}

#[tokio::test]
async fn the_api_can_be_turned_off() {
    let h = Harness::start_with(|c| c.admin.api = false).await;
    assert_eq!(
        call(&h, Method::GET, "/api/users", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.admin_get("/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.admin_get("/healthz").await.status, StatusCode::OK);
}
