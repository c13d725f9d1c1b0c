//! The audit log: one JSON line per request — who pulled which queue's data
//! when, and what the gateway decided — never the key.
//!
//! Lines are handed to a writer task through a bounded queue, so a slow
//! disk never stalls a request: when the queue is full the line is dropped
//! and `chime_gateway_audit_dropped_total` counts it. The writer buffers
//! (64 KiB), flushes at least every 100 ms, and counts (and logs once per
//! transition) write failures instead of stopping.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditTarget {
    /// Nowhere.
    Off,
    /// Standard output.
    Stdout,
    /// Appended to a file (created with mode 0640).
    File(PathBuf),
}

/// One request, as audited.
#[derive(Debug, Default, Serialize)]
pub struct AuditRecord<'a> {
    /// When the request ended (RFC 3339, UTC).
    pub time: String,
    /// The request id (also in the response and upstream logs).
    pub request_id: &'a str,
    /// The W3C trace id.
    pub trace_id: &'a str,
    /// The client's address.
    pub client: Option<String>,
    /// The authenticated user.
    pub user: Option<&'a str>,
    /// The key's fingerprint (never the key).
    pub key: Option<&'a str>,
    /// The user's role.
    pub role: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// Route kind.
    pub route: &'a str,
    /// Canonical report (or discovery route) name.
    pub report: Option<&'a str>,
    /// `queueId`.
    pub queue: Option<u32>,
    /// Normalised window start.
    pub start: Option<String>,
    /// Normalised window end.
    pub stop: Option<String>,
    /// Canonical zone.
    pub zone: Option<&'a str>,
    /// CSV requested.
    pub csv: Option<bool>,
    /// `allow` or `deny`.
    pub decision: &'a str,
    /// `ok` or the refusal code.
    pub reason: &'a str,
    /// Response status (absent when the client left first).
    pub status: Option<u16>,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Chime's status.
    pub upstream_status: Option<u16>,
    /// Seconds until Chime's response headers.
    pub upstream_seconds: Option<f64>,
    /// `upstream`, `coalesced` or `cache`.
    pub served: Option<&'a str>,
    /// Seconds in total, to the end of the body.
    pub seconds: f64,
}

enum Msg {
    Line(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// The audit log's sending side.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Msg>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Line(_) => f.write_str("Line"),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditLog {
    /// An audit log that writes nothing.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        AuditLog { tx: None, metrics }
    }

    /// Opens `target` (a file must be writable now: start-up fails fast
    /// otherwise) and starts the writer task with a queue of `capacity` lines.
    pub async fn start(
        target: &AuditTarget,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match target {
            AuditTarget::Off => return Ok(Self::off(metrics)),
            AuditTarget::Stdout => Box::new(tokio::io::stdout()),
            AuditTarget::File(path) => {
                let mut options = tokio::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                options.mode(0o640);
                Box::new(options.open(path).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("audit log {}: {e}", path.display()))
                })?)
            }
        };
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_lines(
            rx,
            BufWriter::with_capacity(64 * 1024, out),
            Arc::clone(&metrics),
        ));
        Ok(AuditLog {
            tx: Some(tx),
            metrics,
        })
    }

    /// Whether lines are written at all (callers skip building records otherwise).
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one record; never waits.
    pub fn record(&self, record: &AuditRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(_) => return,
        };
        line.push(b'\n');
        if tx.try_send(Msg::Line(line)).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }

    /// Waits until every line queued so far is written and flushed.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_lines(
    mut rx: mpsc::Receiver<Msg>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    metrics: Arc<Metrics>,
) {
    let failing = AtomicBool::new(false);
    let report = |result: std::io::Result<()>| match result {
        Ok(()) => {
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!("audit log writable again");
            }
        }
        Err(e) => {
            metrics.audit_write_errors.inc();
            if !failing.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, "audit log write failed; lines are being lost");
            }
        }
    };
    // Lines are flushed every 100 ms (and on request), not after each one:
    // a write system call per request would cost more than the request.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Line(line)) => {
                    report(out.write_all(&line).await);
                    dirty = true;
                }
                Some(Msg::Flush(done)) => {
                    report(out.flush().await);
                    dirty = false;
                    let _ = done.send(());
                }
                None => break,
            },
            _ = tick.tick(), if dirty => {
                report(out.flush().await);
                dirty = false;
            }
        }
    }
    report(out.flush().await);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::register(&prometheus::Registry::new()).unwrap())
    }

    #[tokio::test]
    async fn writes_one_json_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(&AuditTarget::File(path.clone()), 100, metrics())
            .await
            .unwrap();
        for id in ["a", "b", "c"] {
            log.record(&AuditRecord {
                request_id: id,
                decision: "allow",
                reason: "ok",
                ..Default::default()
            });
        }
        log.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let m = metrics();
        // A writer that never makes progress: the queue fills and lines are shed.
        let (tx, _rx) = mpsc::channel(2);
        let log = AuditLog {
            tx: Some(tx),
            metrics: Arc::clone(&m),
        };
        for _ in 0..5 {
            log.record(&AuditRecord::default());
        }
        assert_eq!(m.audit_dropped.get(), 3);
    }

    #[tokio::test]
    async fn unwritable_file_fails_at_start() {
        let err = AuditLog::start(
            &AuditTarget::File("/nonexistent/dir/audit.log".into()),
            10,
            metrics(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/audit.log"));
    }
}
