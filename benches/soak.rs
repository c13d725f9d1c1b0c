//! A bounded soak test (not part of `cargo test`):
//!
//!     cargo bench --bench soak -- --minutes 10 --rate 50
//!
//! Runs the gateway binary in demo mode as its own process, sends a steady
//! mix of valid, 401, 403, 429-prone and upstream-404 requests, checks that
//! every answer is one that kind of request may get, and samples the
//! gateway's resident memory and open file descriptors. Exits non-zero if
//! an answer was unexpected or memory or descriptors kept growing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const MANAGER: &str = "b5c38d85-a042-4cef-8418-eb06752e346b";

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss_kb, fds)
}

fn client(source: &str) -> Client<HttpConnector, Empty<Bytes>> {
    let mut http = HttpConnector::new();
    http.set_local_address(Some(source.parse().unwrap()));
    Client::builder(TokioExecutor::new()).build(http)
}

#[tokio::main]
async fn main() {
    let minutes = arg("--minutes", 10.0);
    let rate = arg("--rate", 50.0).max(1.0);
    let (port, admin) = (free_port(), free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chime-gateway"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the gateway");
    let pid = child.id();
    let good = client("127.0.0.1");
    // Wrong keys come from another address, so the failed-auth throttle does
    // not turn the valid traffic into 429s.
    let bad = client("127.0.0.2");
    let base = format!("http://127.0.0.1:{port}");
    let ready = Instant::now();
    while good
        .get(format!("http://127.0.0.1:{admin}/healthz").parse().unwrap())
        .await
        .is_err()
    {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kinds: [(&str, String, Option<&str>, &[u16]); 4] = [
        ("valid", format!("{base}/Chime/Report/InboundVsAnsweredChats?queueId=1&start=today-7d&stop=today&csv=true"), Some(MANAGER), &[200, 429]),
        ("forbidden", format!("{base}/Chime/Report/InboundVsAnsweredChats?queueId=2&start=today-7d&stop=today"), Some(MANAGER), &[403]),
        ("upstream-404", format!("{base}/Chime/Session/SessionDetails/99999999"), Some("0f0e9a4c-2b7d-4c1e-9d3a-6b5f8e2a7c10"), &[404, 429]),
        ("bad-key", format!("{base}/Chime/Report/InboundVsAnsweredChats?queueId=1&start=today"), Some("00000000-0000-4000-8000-000000000000"), &[401, 429]),
    ];
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let (mut counts, mut unexpected) = (BTreeMap::new(), 0u64);
    let mut samples = vec![sample(pid)];
    let mut last_sample = Instant::now();
    let mut n = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let (name, url, key, allowed) = &kinds[n % kinds.len()];
        n += 1;
        let mut req = Request::get(url.as_str());
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let c = if *name == "bad-key" { &bad } else { &good };
        let status = match c.request(req.body(Empty::new()).unwrap()).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                status
            }
            Err(_) => 0,
        };
        *counts.entry(format!("{name} {status}")).or_insert(0u64) += 1;
        if !allowed.contains(&status) {
            unexpected += 1;
        }
        if last_sample.elapsed() >= Duration::from_secs(10) {
            samples.push(sample(pid));
            last_sample = Instant::now();
        }
    }
    samples.push(sample(pid));
    let _ = child.kill();
    let _ = child.wait();
    println!("soak: {n} requests in {minutes} min at {rate}/s");
    for (k, v) in &counts {
        println!("  {k}: {v}");
    }
    let warm = samples[samples.len().min(2) - 1];
    let last = *samples.last().unwrap();
    println!(
        "  rss: {} KiB after warm-up, {} KiB at the end; fds: {} -> {}",
        warm.0, last.0, warm.1, last.1
    );
    let rss_ok = last.0 <= warm.0 + warm.0 / 5 + 8 * 1024;
    let fds_ok = last.1 <= warm.1 + 16;
    println!("  unexpected answers: {unexpected}; rss flat: {rss_ok}; fds flat: {fds_ok}");
    if unexpected > 0 || !rss_ok || !fds_ok {
        std::process::exit(1);
    }
}
