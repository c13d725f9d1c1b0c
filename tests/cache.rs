//! Request coalescing and the response cache through the real gateway: one
//! upstream call for identical concurrent requests, never shared across
//! queues or keys, finished history served from memory, live windows never.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;

use chime_gateway::config::{Config, Secret, UpstreamAuth};
use chime_gateway::simulator::Behavior;
use harness::{Answer, Harness, ADMIN, DOC_QUERY, MANAGER};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

const REPORT: &str = "/Chime/Report/InboundVsAnsweredChats";

fn past(queue: u32) -> String {
    let query = DOC_QUERY.replace("queueId=1", &format!("queueId={queue}"));
    format!("{REPORT}?{query}")
}

fn caching(c: &mut Config) {
    c.cache.enabled = true;
}

fn served(a: &Answer) -> &str {
    served_by(&a.headers)
}

fn served_by(headers: &http::HeaderMap) -> &str {
    headers
        .get("x-chime-gateway-cache")
        .map_or("-", |v| v.to_str().unwrap())
}

/// Sends `n` identical requests while the simulator holds its answers, waits
/// until all but the first have joined, then lets the answer go.
async fn concurrent(h: &Arc<Harness>, key: &'static str, target: &str, n: usize) -> Vec<Answer> {
    h.sim.hold();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let h = Arc::clone(h);
            let target = target.to_owned();
            tokio::spawn(async move { h.get_as(key, &target).await })
        })
        .collect();
    h.wait_for_metric(&format!("chime_gateway_coalesced_requests_total {}", n - 1))
        .await;
    h.sim.release();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn twenty_identical_requests_make_one_upstream_call() {
    let h = Arc::new(Harness::start().await);
    let answers = concurrent(&h, MANAGER, &past(1), 20).await;
    assert_eq!(h.sim.recorded().len(), 1, "one upstream call");
    let first = &answers[0].body;
    assert!(first.starts_with(b"Date,"), "{}", answers[0].text());
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(&a.body, first, "every client gets the full body");
    }
    let mut kinds: Vec<&str> = answers.iter().map(served).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds, ["coalesced", "miss"]);
    h.wait_for_metric(r#"chime_gateway_upstream_duration_seconds_count{route="report"} 1"#)
        .await;
}

#[tokio::test]
async fn a_large_streamed_answer_reaches_every_follower_in_full() {
    let h = Arc::new(Harness::start().await);
    // Larger than the flight's read-ahead window, so followers and the
    // leader take turns and passed chunks are dropped along the way.
    let size = 3 * chime_gateway::proxy::flight::WINDOW as u64 + 12_345;
    h.sim.set_behavior(Behavior::Large(size));
    let answers = concurrent(&h, MANAGER, &past(1), 4).await;
    assert_eq!(h.sim.recorded().len(), 1);
    for a in &answers {
        assert_eq!(a.body.len() as u64, size);
        assert_eq!(a.body, answers[0].body);
    }
}

#[tokio::test]
async fn different_queues_and_different_keys_never_share() {
    let h = Arc::new(Harness::start().await);
    h.sim.hold();
    let spawn = |key: &'static str, target: String| {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.get_as(key, &target).await })
    };
    let q1 = spawn(ADMIN, past(1));
    let q2 = spawn(ADMIN, past(2));
    // Same request, another key: with passthrough auth Chime sees another
    // credential, so the answers are kept apart.
    let manager = spawn(MANAGER, past(1));
    while h.sim.recorded().len() < 3 {
        tokio::task::yield_now().await;
    }
    h.sim.release();
    let (q1, q2, manager) = (q1.await.unwrap(), q2.await.unwrap(), manager.await.unwrap());
    assert_eq!(h.sim.recorded().len(), 3);
    assert!(h
        .metrics_text()
        .contains("chime_gateway_coalesced_requests_total 0"));
    assert_ne!(q1.body, q2.body, "queue 2's numbers differ from queue 1's");
    assert_eq!(q1.body, manager.body);
    for a in [&q1, &q2, &manager] {
        assert_eq!(served(a), "miss");
    }
}

#[tokio::test]
async fn followers_are_served_when_the_leading_client_leaves() {
    let h = Arc::new(Harness::start().await);
    h.sim.hold();
    let leader = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.get_as(MANAGER, &past(1)).await })
    };
    while h.sim.recorded().is_empty() {
        tokio::task::yield_now().await;
    }
    let follower = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.get_as(MANAGER, &past(1)).await })
    };
    h.wait_for_metric("chime_gateway_coalesced_requests_total 1")
        .await;
    leader.abort();
    let _ = leader.await;
    h.sim.release();
    let a = follower.await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.starts_with(b"Date,"));
    assert_eq!(h.sim.recorded().len(), 1);
}

#[tokio::test]
async fn head_is_answered_from_a_kept_get_and_never_kept_itself() {
    // Kept, HEAD's empty answer was served to the next HEAD with
    // `Content-Length: 0`, and its digest was the answer's ETag.
    let h = Harness::start_with(caching).await;
    let auth = format!("Bearer {MANAGER}");
    let target = past(1);
    let headers = [("authorization", auth.as_str())];
    let head = || h.send(Method::HEAD, &target, &headers);
    for _ in 0..2 {
        let a = head().await;
        assert_eq!((a.status, served(&a)), (StatusCode::OK, "miss"));
        assert!(a.headers.contains_key("content-length"));
    }
    let full = h.get_as(MANAGER, &past(1)).await;
    assert_eq!(served(&full), "miss");
    // Now kept: a HEAD gets the kept answer's head, body left out.
    let a = head().await;
    assert_eq!((a.status, served(&a)), (StatusCode::OK, "hit"));
    assert!(a.body.is_empty());
    assert_eq!(
        a.headers["content-length"],
        full.body.len().to_string().as_str()
    );
    assert_eq!(served(&h.get_as(MANAGER, &past(1)).await), "hit");
    let etag = &h.get_as(MANAGER, &past(1)).await.headers["etag"];
    assert_eq!(&a.headers["etag"], etag);
    let methods: Vec<_> = h.sim.recorded().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, [Method::HEAD, Method::HEAD, Method::GET]);
}

#[tokio::test]
async fn finished_history_is_served_from_the_cache_with_validators() {
    let h = Harness::start_with(caching).await;
    let first = h.get_as(MANAGER, &past(1)).await;
    assert_eq!((first.status, served(&first)), (StatusCode::OK, "miss"));
    let second = h.get_as(MANAGER, &past(1)).await;
    assert_eq!((second.status, served(&second)), (StatusCode::OK, "hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(h.sim.recorded().len(), 1, "the hit made no upstream call");
    assert!(second.headers.contains_key("age"));
    let etag = second.headers["etag"].to_str().unwrap().to_owned();

    let auth = format!("Bearer {MANAGER}");
    let revalidated = h
        .get(
            &past(1),
            &[("authorization", &auth), ("if-none-match", &etag)],
        )
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.headers["etag"], etag.as_str());
    let changed = h
        .get(
            &past(1),
            &[("authorization", &auth), ("if-none-match", "\"stale\"")],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(h.sim.recorded().len(), 1);
    // Validators are the gateway's business: Chime never saw one.
    assert!(!h.sim.recorded()[0].headers.contains_key("if-none-match"));

    // Discovery lists are kept too (briefly).
    let list = "/Chime/Report/GetQueueBasicReports?queueId=1";
    assert_eq!(h.get_as(MANAGER, list).await.status, StatusCode::OK);
    assert_eq!(served(&h.get_as(MANAGER, list).await), "hit");
    assert_eq!(h.sim.recorded().len(), 2);

    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_cache_lookups_total{result="hit"} 4"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_cache_lookups_total{result="miss"} 2"#),
        "{m}"
    );
    let held: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("chime_gateway_cache_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(held > first.body.len() as i64, "{held}");
}

/// Reads `response`'s body until at least `n` bytes have come.
async fn read_at_least(response: &mut http::Response<hyper::body::Incoming>, n: usize) -> usize {
    let mut got = 0;
    while got < n {
        let frame = response.body_mut().frame().await.unwrap().unwrap();
        got += frame.data_ref().map_or(0, |d| d.len());
    }
    got
}

/// Copies of answers still streaming share the cache's memory (`max_bytes`),
/// however slowly their clients read: beside one that holds most of it, a
/// second large answer streams through uncopied, and the memory comes back
/// once the first client leaves.
#[tokio::test]
async fn copies_of_answers_still_streaming_share_the_caches_memory() {
    let h = Harness::start_with(|c| {
        c.cache.enabled = true;
        c.cache.max_bytes = 100_000;
        c.cache.max_entry_bytes = 100_000;
    })
    .await;
    // Each answer sends one 64 KiB chunk, then nothing more.
    h.sim.set_behavior(Behavior::StallAfter(1));
    let mut first = h.open_as(MANAGER, &past(1)).await;
    assert_eq!(read_at_least(&mut first, 65_536).await, 65_536);
    h.wait_for_metric("chime_gateway_cache_copy_bytes 65536")
        .await;
    // Another credential: its own upstream call, not coalesced with the first.
    let mut second = h.open_as(ADMIN, &past(1)).await;
    assert_eq!(served_by(second.headers()), "miss");
    assert_eq!(read_at_least(&mut second, 65_536).await, 65_536);
    h.wait_for_metric(r#"chime_gateway_cache_copies_dropped_total{reason="budget"} 1"#)
        .await;
    assert!(h
        .metrics_text()
        .contains("chime_gateway_cache_copy_bytes 65536"));
    drop((first, second));
    h.wait_for_metric("chime_gateway_cache_copy_bytes 0").await;

    // The budget is whole again: an answer as large as it is kept.
    h.sim.set_behavior(Behavior::Large(100_000));
    let kept = h.get_as(ADMIN, &past(3)).await;
    assert_eq!((kept.status, kept.body.len()), (StatusCode::OK, 100_000));
    assert_eq!(served(&h.get_as(ADMIN, &past(3)).await), "hit");
    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_cache_copies_dropped_total{reason="too_large"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_cache_copies_dropped_total{reason="budget"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn windows_that_include_now_or_just_ended_are_never_cached() {
    let h = Harness::start_with(caching).await;
    let now = jiff::Timestamp::now();
    let at = |d: jiff::SignedDuration| now.checked_add(d).unwrap().to_string();
    let hour = jiff::SignedDuration::from_hours(1);
    let minutes = |m: i64| jiff::SignedDuration::from_mins(m);
    let targets = [
        // "Today so far": runs up to now.
        format!("{REPORT}?queueId=1&start=today&zone=UTC"),
        // An explicit window around now.
        format!("{REPORT}?queueId=1&start={}&stop={}", at(-hour), at(hour)),
        // Ended five minutes ago: late chats may still land (settle time).
        format!(
            "{REPORT}?queueId=1&start={}&stop={}",
            at(-hour),
            at(minutes(-5))
        ),
    ];
    for target in &targets {
        for _ in 0..2 {
            let a = h.get_as(MANAGER, target).await;
            assert_eq!((a.status, served(&a)), (StatusCode::OK, "miss"), "{target}");
        }
    }
    assert_eq!(h.sim.recorded().len(), 6);
    assert!(h
        .metrics_text()
        .contains(r#"chime_gateway_cache_lookups_total{result="hit"} 0"#));
}

#[tokio::test]
async fn a_manager_never_gets_a_cached_body_for_a_queue_they_cannot_see() {
    // One service credential for everyone: only the ACL stands between a
    // manager and an entry an admin's request put in the cache.
    let h = Harness::start_with(|c| {
        caching(c);
        c.upstream.auth = UpstreamAuth::Service(Secret::new("service-key-123"));
    })
    .await;
    let admin = h.get_as(ADMIN, &past(2)).await;
    assert_eq!(admin.status, StatusCode::OK);
    assert_eq!(served(&h.get_as(ADMIN, &past(2)).await), "hit");
    let manager = h.get_as(MANAGER, &past(2)).await;
    assert_eq!(manager.status, StatusCode::FORBIDDEN);
    assert_eq!(manager.code(), "queue_forbidden");
    assert!(!manager.text().contains("Date,"));
    // The manager's own queue is shared with the admin's entry only if the
    // admin fetched it: here it was not, so it comes from upstream.
    let own = h.get_as(MANAGER, &past(1)).await;
    assert_eq!((own.status, served(&own)), (StatusCode::OK, "miss"));
    assert_eq!(h.sim.recorded().len(), 2);
}

#[tokio::test]
async fn errors_and_no_store_answers_are_not_kept() {
    let h = Harness::start_with(caching).await;
    h.sim
        .set_behavior(Behavior::Fail(StatusCode::INTERNAL_SERVER_ERROR));
    for _ in 0..2 {
        assert_eq!(
            h.get_as(MANAGER, &past(1)).await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    h.sim.set_behavior(Behavior::Normal);
    let mut no_store = http::HeaderMap::new();
    no_store.insert("cache-control", "no-store".parse().unwrap());
    h.sim.set_extra_headers(no_store);
    for _ in 0..2 {
        let a = h.get_as(MANAGER, &past(1)).await;
        assert_eq!((a.status, served(&a)), (StatusCode::OK, "miss"));
    }
    assert_eq!(h.sim.recorded().len(), 4);
}

#[tokio::test]
async fn turned_off_every_request_reaches_chime() {
    let h = Arc::new(
        Harness::start_with(|c| {
            c.cache.enabled = false;
            c.cache.coalesce = false;
        })
        .await,
    );
    h.sim.hold();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.get_as(MANAGER, &past(1)).await })
        })
        .collect();
    while h.sim.recorded().len() < 3 {
        tokio::task::yield_now().await;
    }
    h.sim.release();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(h.sim.recorded().len(), 3);
}

/// Chime's logs know one request id per exchange; the audit line of every
/// request answered by another's exchange names that request, so whoever
/// received a report can be traced from Chime's side and back.
#[tokio::test]
async fn audit_lines_name_the_exchange_that_answered_them() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let h = Arc::new(
        Harness::start_with(|c| {
            caching(c);
            c.audit.target = chime_gateway::audit::AuditTarget::File(audit.clone());
        })
        .await,
    );
    let answers = concurrent(&h, MANAGER, &past(1), 3).await;
    let hit = h.get_as(MANAGER, &past(1)).await;
    assert_eq!(served(&hit), "hit");
    let sent = h.sim.recorded();
    assert_eq!(sent.len(), 1, "one upstream call");
    let leader = sent[0].headers["x-request-id"].to_str().unwrap().to_owned();
    h.state.audit.flush().await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    let mut seen = Vec::new();
    for l in &lines {
        assert_eq!(l["upstream_request_id"], leader.as_str(), "{l}");
        let own = l["request_id"].as_str().unwrap();
        seen.push((l["served"].as_str().unwrap(), own == leader));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            ("cache", false),
            ("coalesced", false),
            ("coalesced", false),
            ("upstream", true)
        ]
    );
    // Each client still got its own id back.
    let mut ids: Vec<_> = answers
        .iter()
        .chain([&hit])
        .map(|a| a.headers["x-request-id"].clone())
        .collect();
    ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    ids.dedup();
    assert_eq!(ids.len(), 4);
}
