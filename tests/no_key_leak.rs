//! No key ever appears in logs, metrics or error bodies.
//!
//! Alone in its own test binary: tracing caches per-callsite interest
//! globally, so a thread-local subscriber only sees every event when no
//! other test runs in the same process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::io::Write;
use std::sync::{Arc, Mutex};

use harness::{report, Harness, MANAGER};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_key_appears_in_logs_metrics_or_error_bodies() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start().await;
    let unknown = "5ec7e7ab-1111-4222-8333-944445555666";
    let mut bodies = Vec::new();
    let target = report();
    let forms = [
        MANAGER.to_owned(),
        MANAGER.to_uppercase(),
        format!("{{{MANAGER}}}"),
        unknown.to_owned(),
        unknown.to_uppercase(),
    ];
    for key in &forms {
        bodies.push(h.get_as(key, &target).await.text());
        bodies.push(
            h.get_as(
                key,
                "/Chime/Report/InboundVsAnsweredChats?queueId=2&start=2020-01-01T00:00:00Z",
            )
            .await
            .text(),
        );
        bodies.push(
            h.get_as(
                key,
                "/Chime/Report/GlobalChatVolume?start=2020-01-01T00:00:00Z",
            )
            .await
            .text(),
        );
        bodies.push(h.get_as(key, &format!("/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-01-01T00:00:00Z&key={key}")).await.text());
        bodies.push(h.get(&format!("{target}&apikey={key}"), &[]).await.text());
        bodies.push(
            h.get(
                &target,
                &[
                    ("x-api-key", key),
                    ("authorization", &format!("Token {key}")),
                ],
            )
            .await
            .text(),
        );
        bodies.push(h.get(&format!("/Chime/Report/{key}"), &[]).await.text());
    }
    bodies.push(h.admin_get("/metrics").await.text());
    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let access = log_text.matches("chime_gateway::access").count();
    assert!(
        access >= 30,
        "access lines captured: {access}; {}",
        log_text
            .lines()
            .filter(|l| l.contains("chime_gateway"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let haystacks = [
        ("logs", log_text.to_lowercase()),
        ("bodies", bodies.join("\n").to_lowercase()),
    ];
    for secret in [MANAGER, unknown] {
        let bare = secret.replace('-', "");
        for (what, text) in &haystacks {
            for needle in [secret.to_owned(), bare.clone(), secret[..13].to_owned()] {
                assert!(!text.contains(&needle), "{needle} found in {what}");
            }
        }
    }
}
