//! Faults and hostile clients: each gives a clear, bounded result, and the
//! gateway keeps serving other requests meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use bytes::Bytes;
use chime_gateway::simulator::Behavior;
use harness::{report, Harness, ADMIN, ANSWER_PATHS, MANAGER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn still_serving(h: &Harness) {
    h.sim.set_behavior(Behavior::Normal);
    assert_eq!(
        h.get_as(ADMIN, &report()).await.status,
        StatusCode::OK,
        "other requests still served"
    );
}

#[tokio::test]
async fn a_dead_upstream_opens_the_circuit() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sim = harness::simulator(&[]).await;
    let mut config = harness::base_config(&format!("http://{closed}/Chime"));
    config.upstream.breaker_failures = 2;
    config.upstream.breaker_cool_down = Duration::from_secs(60);
    let h = Harness::start_config(sim, config).await;
    for _ in 0..2 {
        assert_eq!(
            h.get_as(MANAGER, &report()).await.code(),
            "upstream_unavailable"
        );
    }
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "upstream_circuit_open")
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    let m = h.metrics_text();
    // Two requests, each with one retry of the failed connect; none while open.
    assert!(
        m.contains(r#"chime_gateway_upstream_errors_total{kind="connect"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_upstream_errors_total{kind="connect_retried"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_upstream_errors_total{kind="circuit_open"} 1"#),
        "{m}"
    );
    // Refusals that need no upstream still work, and so does the admin listener.
    assert_eq!(h.get(&report(), &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.admin_get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_upstream_reset_mid_body_aborts_the_response() {
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(tweak).await;
        h.sim.set_behavior(Behavior::ResetAfter(1 << 20));
        let req = Request::get(h.url(&report()))
            .header("authorization", format!("Bearer {MANAGER}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = h.client.request(req).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{path}: headers were already sent"
        );
        let collected = resp.into_body().collect().await;
        assert!(
            collected.is_err(),
            "{path}: the client must see a broken body, never a clean end"
        );
        still_serving(&h).await;
        let m = h.metrics_text();
        assert!(
            m.contains(r#"chime_gateway_stream_aborts_total{side="upstream"} 1"#),
            "{path}: {m}"
        );
        assert!(m.contains(r#"outcome="upstream_aborted""#), "{path}: {m}");
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_stops_the_upstream_transfer() {
    let total = 256u64 << 20;
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(tweak).await;
        h.sim.set_behavior(Behavior::Large(total));
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\r\n",
            report()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "{path}"
        );
        drop(s);
        // The gateway notices, drops the upstream request, and counts it.
        h.wait_for_metric(r#"chime_gateway_stream_aborts_total{side="client"} 1"#)
            .await;
        let produced = h.sim.bytes_produced();
        assert!(
            produced < total / 4,
            "{path}: upstream kept producing: {produced}"
        );
        still_serving(&h).await;
    }
}

#[tokio::test]
async fn slowloris_connections_are_closed() {
    let h =
        Harness::start_with(|c| c.listen.header_read_timeout = Duration::from_millis(200)).await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /Chime/Report/X HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .expect("the gateway must close a connection whose headers never finish")
        .ok();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    still_serving(&h).await;
}

/// A gateway that parks a connection after 30 ms of quiet and allows a
/// request head 300 ms.
async fn slow_head_harness() -> Harness {
    Harness::start_with(|c| {
        c.listen.park_after = Duration::from_millis(30);
        c.listen.header_read_timeout = Duration::from_millis(300);
    })
    .await
}

/// The slow head's connection was closed well within 2 s of `start`, and
/// the gateway serves on.
async fn cut_off_in_time(h: &Harness, start: std::time::Instant) {
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    still_serving(h).await;
}

/// A client that sends a byte of its head whenever its connection has
/// just been parked is never idle; the head's deadline still ends it (the
/// head's clock runs across parking).
#[tokio::test]
async fn a_head_trickling_in_across_parking_is_cut_off() {
    let h = slow_head_harness().await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let head = b"GET /Chime/Report/X HTTP/1.1\r\nHost: x\r\n";
    let start = std::time::Instant::now();
    let mut closed = false;
    for byte in head.iter().cycle().take(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a head trickling in must not hold its connection open"
    );
    cut_off_in_time(&h, start).await;
}

/// Part of a second head sent with the first request, and nothing after:
/// no later read starts the head's clock, yet the connection, parked and
/// served again with those bytes, is still closed at the head's deadline.
#[tokio::test]
async fn a_partial_head_behind_a_pipelined_request_is_cut_off() {
    let h = slow_head_harness().await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\r\nGET /Chime/Report/X HTTP/1.1\r\nHo",
        report()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .expect("a head that never finishes must not hold its connection open")
        .ok();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    cut_off_in_time(&h, start).await;
}

#[tokio::test]
async fn pipelined_garbage_ends_the_connection_after_the_valid_request() {
    let h = Harness::start().await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\r\n\x16\x03\x01garbage\r\n\r\n",
        report()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
    assert!(
        text.contains("HTTP/1.1 400"),
        "the garbage is answered 400 and the connection closed"
    );
    assert_eq!(h.sim.recorded().len(), 1);
    still_serving(&h).await;
}

#[tokio::test]
async fn connections_past_the_limit_wait_in_the_backlog() {
    let h = Harness::start_with(|c| c.listen.max_connections = 1).await;
    let first = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    // The second connection is accepted by the kernel but not served while the first is open.
    let mut second = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    second
        .write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\nConnection: close\r\n\r\n", report()).as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), second.read_to_end(&mut out)).await;
    assert!(
        early.is_err() && out.is_empty(),
        "served past max_connections"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(3), second.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}

/// An audit target that cannot be written (a full disk: /dev/full) loses
/// lines, counts them, and never fails or stalls a request.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_unwritable_audit_log_never_fails_requests() {
    let h = Harness::start_with(|c| {
        c.audit.target = chime_gateway::audit::AuditTarget::File("/dev/full".into());
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.get_as(MANAGER, &report()).await.status, StatusCode::OK);
    }
    h.state.audit.flush().await;
    let m = h.metrics_text();
    assert!(
        !m.contains("chime_gateway_audit_write_errors_total 0"),
        "{m}"
    );
}

/// HTTP/2 rapid reset (CVE-2023-44487): a client that opens and cancels
/// streams as fast as it can does not make the gateway queue work; hyper's
/// reset limits apply and other clients are served meanwhile.
#[tokio::test]
async fn http2_rapid_reset_is_contained() {
    let h = Harness::start().await;
    h.sim
        .set_behavior(Behavior::Slow(Duration::from_millis(200)));
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let mut driver = tokio::spawn(conn);
    let mut cancelled = 0;
    for _ in 0..2000 {
        let req = Request::get(format!("http://x{}", report()))
            .header("authorization", format!("Bearer {MANAGER}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        if send.ready().await.is_err() {
            break; // the server sent GOAWAY
        }
        let pending = send.send_request(req);
        // Poll once so HEADERS go out, then cancel (RST_STREAM).
        let _ = tokio::time::timeout(Duration::from_micros(1), pending).await;
        cancelled += 1;
        tokio::task::yield_now().await;
    }
    // The server ends the connection (GOAWAY). It runs on its own worker
    // threads, so on a busy machine its answer may only arrive after the
    // client's last stream: wait for the connection to end, boundedly.
    assert!(cancelled >= 1, "no stream was opened");
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut driver).await;
    assert!(
        ended.is_ok(),
        "the server should end a rapid-reset connection; {cancelled} streams were cancelled and it is still open"
    );
    // Cancelled streams leave nothing behind, and everyone else is served.
    h.sim.set_behavior(Behavior::Normal);
    assert_eq!(h.get_as(ADMIN, &report()).await.status, StatusCode::OK);
    h.wait_for_metric("chime_gateway_in_flight_requests 0")
        .await;
    driver.abort();
}

/// A client that stops reading its report is dropped after the stall
/// timeout, which releases the upstream request.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let h = Harness::start_with(|c| c.listen.stall_timeout = Duration::from_millis(300)).await;
    h.sim.set_behavior(Behavior::Large(1 << 30));
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\r\n",
        report()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Read nothing: buffers fill, the gateway's writes stall.
    h.wait_for_metric(r#"chime_gateway_stream_aborts_total{side="client"} 1"#)
        .await;
    assert!(
        h.sim.bytes_produced() < 1 << 28,
        "the upstream transfer was stopped"
    );
    let m = h.metrics_text();
    assert!(m.contains("chime_gateway_in_flight_requests 0"), "{m}");
    drop(s);
    still_serving(&h).await;
}

/// Reads one response with a `Content-Length` body; returns its head.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> String {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    while buf.len() < end + length {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..end + length);
    head
}

fn parked(h: &Harness) -> i64 {
    h.state.metrics.parked_connections.get()
}

/// Waits (bounded) until `parked` connections are parked.
async fn until_parked(h: &Harness, want: i64) {
    for _ in 0..300 {
        if parked(h) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("parked connections: {}, expected {want}", parked(h));
}

/// A keep-alive connection quiet for `listen.park_after` gives its HTTP
/// state back; its next requests (pipelined ones too) are served on the
/// same connection as before, and a parked connection still closes at the
/// idle timeout.
#[tokio::test]
async fn quiet_connections_are_parked_and_keep_serving() {
    let h = Harness::start_with(|c| {
        c.listen.park_after = Duration::from_millis(50);
        c.listen.idle_timeout = Duration::from_millis(700);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "GET /Chime/Report/GetQueueBasicReports?queueId=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\r\n"
    );
    let mut buf = Vec::new();
    for round in 1..=3 {
        // The third round pipelines two requests into a parked connection.
        let copies = if round == 3 { 2 } else { 1 };
        s.write_all(req.repeat(copies).as_bytes()).await.unwrap();
        for _ in 0..copies {
            let head = read_response(&mut s, &mut buf).await;
            assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
            assert!(
                !head.to_ascii_lowercase().contains("connection: close"),
                "round {round}: {head}"
            );
        }
        until_parked(&h, 1).await;
    }
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut rest))
        .await
        .expect("a parked connection still closes at the idle timeout")
        .unwrap();
    assert_eq!(n, 0, "closed, not answered");
    until_parked(&h, 0).await;
}

fn worker_connections(h: &Harness, workers: usize) -> Vec<i64> {
    (0..workers)
        .map(|i| {
            let worker = i.to_string();
            h.state
                .metrics
                .worker_connections
                .with_label_values(&[&worker])
                .get()
        })
        .collect()
}

#[tokio::test]
async fn connections_are_spread_evenly_over_the_workers_and_all_serve() {
    let h = Harness::start_with(|c| c.listen.workers = 3).await;
    let req = format!(
        "GET /Chime/Report/GetQueueBasicReports?queueId=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\r\n"
    );
    let mut conns = Vec::new();
    for _ in 0..9 {
        // One at a time: each is answered, so placed, before the next.
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(req.as_bytes()).await.unwrap();
        let head = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        conns.push((s, buf));
    }
    assert_eq!(worker_connections(&h, 3), vec![3, 3, 3]);
    // Those handed to another worker keep serving there.
    for (s, buf) in &mut conns {
        s.write_all(req.as_bytes()).await.unwrap();
        let head = read_response(s, buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    drop(conns);
    for worker in 0..3 {
        h.wait_for_metric(&format!(
            "chime_gateway_worker_connections{{worker=\"{worker}\"}} 0"
        ))
        .await;
    }
}
