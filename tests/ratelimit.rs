//! Rate limits through the real gateway: true headers, 429s, concurrency
//! caps, load shedding, and budgets shared through Redis (with fallback).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cut_proxy.rs"]
mod cut_proxy;
#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use chime_gateway::config::Secret;
use chime_gateway::ratelimit::{SharedConfig, Tier};
use chime_gateway::simulator::{Behavior, Simulator};
use cut_proxy::CutProxy;
use harness::{report, Harness, ADMIN, ANSWER_PATHS, MANAGER};
use http::StatusCode;

fn strict(c: &mut chime_gateway::config::Config, burst: u32, in_flight: usize) {
    // One unit a minute: no refill can happen while a test runs.
    c.ratelimit.tiers = vec![
        Tier::new("default", 1, burst, in_flight),
        Tier::new("internal", 1, burst, in_flight),
    ];
}

#[tokio::test]
async fn headers_tell_the_truth_through_a_burst_and_429() {
    let h = Harness::start_with(|c| strict(c, 5, 4)).await;
    for expected in (0..5).rev() {
        let a = h.get_as(MANAGER, &report()).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["x-ratelimit-limit"], "5");
        assert_eq!(
            a.headers["x-ratelimit-remaining"],
            expected.to_string().as_str()
        );
        assert_eq!(a.headers["ratelimit-policy"], "\"default\";q=5;w=300");
        let reset: u64 = a.headers["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            reset,
            (5 - expected) * 60,
            "used units drip back one a minute"
        );
        assert_eq!(
            a.headers["ratelimit"],
            format!("\"default\";r={expected};t={reset}").as_str()
        );
    }
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    assert!(a.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"default\";r=0;t="));
    assert_eq!(
        h.sim.recorded().len(),
        5,
        "the refused request was not forwarded"
    );
    // Another user has their own budget.
    assert_eq!(h.get_as(ADMIN, &report()).await.status, StatusCode::OK);
    // The one refusal is counted; `refused_requests_spend_no_budget` shows it cost nothing.
    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_ratelimit_rejections_total{limit="rate"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn refused_requests_spend_no_budget() {
    let h = Harness::start_with(|c| strict(c, 2, 4)).await;
    for _ in 0..5 {
        let a = h
            .get_as(
                MANAGER,
                "/Chime/Report/InboundVsAnsweredChats?queueId=2&start=2020-11-01&stop=2020-11-02",
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert!(!a.headers.contains_key("x-ratelimit-remaining"));
    }
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(a.headers["x-ratelimit-remaining"], "1");
}

/// Waits (without sleeping) until the simulator has received `n` requests.
async fn until_received(sim: &Simulator, n: usize) {
    for _ in 0..100_000 {
        if sim.recorded().len() >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the simulator never received {n} requests");
}

/// Starts a manager request that Chime never answers, and returns once
/// Chime has it: the request holds its slots until the task is aborted.
async fn hold_one_request(h: &Harness) -> tokio::task::JoinHandle<()> {
    h.sim.set_behavior(Behavior::Stall);
    let url = h.url(&report());
    let client = h.client.clone();
    let held = tokio::spawn(async move {
        let req = http::Request::get(url)
            .header("authorization", format!("Bearer {MANAGER}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let _ = client.request(req).await;
    });
    until_received(&h.sim, 1).await;
    held
}

#[tokio::test]
async fn per_user_in_flight_cap() {
    let h = Harness::start_with(|c| strict(c, 10, 1)).await;
    let first = hold_one_request(&h).await;
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "concurrency_limited")
    );
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(h.sim.recorded().len(), 1);
    // Another user is not affected by this user's slot.
    h.sim.set_behavior(Behavior::Normal);
    assert_eq!(h.get_as(ADMIN, &report()).await.status, StatusCode::OK);
    first.abort();
}

#[tokio::test]
async fn upstream_load_is_shed_with_503() {
    let h = Harness::start_with(|c| c.ratelimit.upstream_max_in_flight = 1).await;
    let first = hold_one_request(&h).await;
    let a = h.get_as(ADMIN, &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(h.sim.recorded().len(), 1, "shed, not queued");
    first.abort();
}

#[tokio::test]
async fn an_upstream_slot_is_held_until_the_answer_has_been_read() {
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(|c| {
            tweak(c);
            c.ratelimit.upstream_max_in_flight = 1;
        })
        .await;
        h.sim.set_behavior(Behavior::Large(64 << 20));
        let req = http::Request::get(h.url(&report()))
            .header("authorization", format!("Bearer {MANAGER}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = h.client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let mut body = resp.into_body();
        assert!(http_body_util::BodyExt::frame(&mut body).await.is_some());
        // Headers are out, the body is not: the slot is still taken.
        h.sim.set_behavior(Behavior::Normal);
        let a = h.get_as(ADMIN, &report()).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            "{path}"
        );
        // The client leaves; once the gateway notices, the slot is free.
        drop(body);
        h.wait_for_metric(r#"chime_gateway_stream_aborts_total{side="client"} 1"#)
            .await;
        let started = std::time::Instant::now();
        while h.get_as(ADMIN, &report()).await.status != StatusCode::OK {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path}: slot never freed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn redis_url() -> Option<String> {
    harness::service_url("CHIME_GATEWAY_TEST_REDIS")
}

async fn shared_gateway(url: &str, prefix: &str, burst: u32) -> Harness {
    let sim = harness::simulator(&[MANAGER, ADMIN]).await;
    let mut config = harness::base_config(&sim.base_url());
    strict(&mut config, burst, 64);
    config.ratelimit.shared = Some(SharedConfig {
        url: Secret::new(url),
        timeout: Duration::from_millis(200),
        key_prefix: prefix.to_owned(),
    });
    Harness::start_config(sim, config).await
}

#[tokio::test]
async fn two_instances_share_one_budget_through_redis() {
    let Some(url) = redis_url() else { return };
    let prefix = format!("chime-gateway-test:{}:", uuid::Uuid::new_v4());
    let a = shared_gateway(&url, &prefix, 20).await;
    let b = shared_gateway(&url, &prefix, 20).await;
    let mut allowed = 0;
    let mut remaining = Vec::new();
    for i in 0..40 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let ans = gw.get_as(MANAGER, &report()).await;
        assert_ne!(ans.status.as_u16() / 100, 5, "{}", ans.text());
        if ans.status == StatusCode::OK {
            allowed += 1;
            remaining.push(
                ans.headers["x-ratelimit-remaining"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert!(
        (18..=22).contains(&allowed),
        "one combined budget of 20, got {allowed}"
    );
    assert_eq!(remaining.first().map(String::as_str), Some("19"));
    assert!(a
        .metrics_text()
        .contains("chime_gateway_ratelimit_shared_up 1"));
}

#[tokio::test]
async fn redis_outage_falls_back_to_the_local_limiter() {
    let Some(url) = redis_url() else { return };
    let target: std::net::SocketAddr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("CHIME_GATEWAY_TEST_REDIS as redis://HOST:PORT");
    let proxy = CutProxy::start(target).await;
    let prefix = format!("chime-gateway-test:{}:", uuid::Uuid::new_v4());
    let h = shared_gateway(&format!("redis://{}", proxy.addr), &prefix, 50).await;
    for _ in 0..3 {
        assert_eq!(h.get_as(MANAGER, &report()).await.status, StatusCode::OK);
    }
    assert!(h
        .metrics_text()
        .contains("chime_gateway_ratelimit_shared_up 1"));

    proxy.cut();
    for i in 0..5 {
        let a = h.get_as(MANAGER, &report()).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "request {i} during the outage: {}",
            a.text()
        );
        assert!(a.headers.contains_key("x-ratelimit-remaining"));
    }
    let m = h.metrics_text();
    assert!(m.contains("chime_gateway_ratelimit_shared_up 0"), "{m}");
    assert!(
        m.contains("chime_gateway_ratelimit_fallbacks_total 1"),
        "{m}"
    );
}
