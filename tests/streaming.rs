//! Report bodies stream: memory does not grow with the body, and a graceful
//! shutdown lets an in-flight stream finish.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use bytes::Bytes;
use chime_gateway::simulator::Behavior;
use harness::{report, Harness, ANSWER_PATHS, MANAGER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};

const MIB: u64 = 1024 * 1024;

async fn open_stream(h: &Harness) -> hyper::body::Incoming {
    let req = Request::get(h.url(&report()))
        .header("authorization", format!("Bearer {MANAGER}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

/// The most two TCP hops' socket buffers can hold between the simulator
/// and the client (each hop a sending and a receiving buffer at the
/// kernel's autotuning maximum), plus 8 MiB for the gateway's and hyper's
/// own buffers; 24 MiB where the maxima cannot be read.
fn kernel_buffers_on_two_hops() -> u64 {
    let max = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()?
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()
    };
    match (max("tcp_rmem"), max("tcp_wmem")) {
        (Some(r), Some(w)) => 2 * (r + w) + 8 * MIB,
        _ => 24 * MIB,
    }
}

/// 256 MiB flow through while the simulator never gets more than a few
/// socket buffers ahead of the client: the gateway holds no more than that.
#[tokio::test]
async fn large_report_streams_without_buffering() {
    let total = 256 * MIB;
    for (path, tweak) in ANSWER_PATHS {
        let h = Harness::start_with(tweak).await;
        h.sim.set_behavior(Behavior::Large(total));
        let mut body = open_stream(&h).await;
        let mut consumed = 0u64;
        let mut max_ahead = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                consumed += data.len() as u64;
                let ahead = h.sim.bytes_produced() - consumed;
                max_ahead = max_ahead.max(ahead);
            }
        }
        assert_eq!(consumed, total, "{path}");
        // The kernel's socket buffers on two hops may hold that much (they
        // grow while the client lags, as on a loaded machine); a gateway
        // that buffered the body would be ~256 MiB ahead.
        let bound = kernel_buffers_on_two_hops();
        assert!(bound < total / 2, "the test needs a larger body");
        assert!(
            max_ahead < bound,
            "{path}: upstream ran {} MiB ahead of the client (bound {} MiB)",
            max_ahead / MIB,
            bound / MIB
        );
        let m = h.metrics_text();
        assert!(
            m.contains(&format!(
                r#"chime_gateway_response_bytes_total{{route="report"}} {total}"#
            )),
            "{path}: {m}"
        );
    }
}

/// A body in many small chunks (a Chime that flushes after every row), or
/// with a `Content-Length`, reaches the client byte for byte as Chime sent
/// it, though the gateway passes on the chunks of one read as fewer,
/// larger pieces.
#[tokio::test]
async fn a_body_in_small_chunks_or_with_a_length_arrives_unchanged() {
    let total = MIB + 37;
    for (path, tweak) in ANSWER_PATHS {
        for announce in [false, true] {
            let h = Harness::start_with(tweak).await;
            h.sim.set_chunk_bytes(100);
            h.sim.set_announce_length(announce);
            h.sim.set_behavior(Behavior::Large(total));
            let direct = h.upstream_get_as(MANAGER, &report()).await;
            let through = h.get_as(MANAGER, &report()).await;
            assert_eq!(through.status, StatusCode::OK, "{path}");
            assert_eq!(direct.body.len() as u64, total, "{path}");
            let length = direct.headers.get("content-length");
            assert_eq!(length.is_some(), announce, "{path}");
            assert_eq!(
                through.headers.get("content-length"),
                length,
                "{path}, announced: {announce}"
            );
            assert!(
                direct.body == through.body,
                "{path}, announced: {announce}: the body changed on its way"
            );
        }
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_in_flight_stream() {
    let total = 32 * MIB;
    let mut h = Harness::start().await;
    h.sim.set_behavior(Behavior::Large(total));
    let mut body = open_stream(&h).await;
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();

    let gateway = h.begin_shutdown();
    // Readiness drops and new connections are refused while the stream continues.
    let mut refused = false;
    for _ in 0..200 {
        if !h.state.readiness.report().ready
            && tokio::net::TcpStream::connect(h.addr).await.is_err()
        {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "gateway kept accepting after shutdown began");
    assert!(
        !gateway.is_finished(),
        "gateway exited with a stream in flight"
    );

    let mut consumed = first.len() as u64;
    while let Some(frame) = body.frame().await {
        consumed += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(consumed, total, "the in-flight stream was cut");
    gateway.await.unwrap();
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain() {
    let mut h =
        Harness::start_with(|c| c.listen.shutdown_grace = std::time::Duration::from_millis(100))
            .await;
    h.sim.set_behavior(Behavior::Large(64 * MIB));
    // Open a stream and never read it: the drain must still end after the grace period.
    let _body = open_stream(&h).await;
    let gateway = h.begin_shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(5), gateway)
        .await
        .expect("drain exceeded its grace period")
        .unwrap();
}
