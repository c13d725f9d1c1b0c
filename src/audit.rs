//! The audit log: one JSON line per request — who pulled which queue's data
//! when, and what the gateway decided — never the key.
//!
//! Each worker thread serialises its lines into a buffer of its own; a
//! writer thread collects and writes them every 100 ms (sooner when one
//! passes 64 KiB), so a request costs neither a system call nor a
//! cross-thread wake-up, and a slow disk never stalls a request: a worker
//! with `capacity` lines waiting drops further ones and
//! `chime_gateway_audit_dropped_total` counts them. Write failures are
//! counted (and logged once per transition) instead of stopping the writer.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::workers::PerWorker;

mod json;
mod sink;

use sink::Sink;

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

/// One request, as audited; written by [`AuditRecord::write_json`].
#[derive(Debug, Default)]
pub struct AuditRecord<'a> {
    /// When the request ended (written RFC 3339, UTC, to the millisecond).
    pub time: jiff::Timestamp,
    /// The request id (also in the response and upstream logs).
    pub request_id: &'a str,
    /// The W3C trace id.
    pub trace_id: &'a str,
    /// The client's address.
    pub client: Option<&'a str>,
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
    pub start: Option<jiff::Timestamp>,
    /// Normalised window end.
    pub stop: Option<jiff::Timestamp>,
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
    /// Seconds until Chime's response headers (written to the microsecond).
    pub upstream_seconds: Option<f64>,
    /// `upstream`, `coalesced` or `cache`.
    pub served: Option<&'a str>,
    /// The `X-Request-Id` of the upstream exchange whose answer this was:
    /// `request_id` itself when served `upstream`, another request's when
    /// `coalesced` or from the `cache` (Chime's logs know only that one).
    pub upstream_request_id: Option<&'a str>,
    /// Seconds in total, to the end of the body (written to the microsecond).
    pub seconds: f64,
}

/// How often the writer collects and writes what the workers have recorded.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A worker's lines past this many bytes wake the writer before its tick.
const HIGH_WATER: usize = 64 * 1024;

/// One worker's lines not yet written.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    lines: usize,
    /// The writer was woken for this batch already.
    nudged: bool,
}

/// What the writer thread is asked to do besides its tick.
#[derive(Debug)]
enum Cmd {
    /// A worker passed [`HIGH_WATER`].
    Nudge,
    /// Write and flush everything recorded so far, then answer.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Shared {
    /// Each worker appends to its own buffer: no lock is contended on the
    /// request path (the writer takes each one briefly every tick).
    pending: PerWorker<Mutex<Pending>>,
    /// Most lines a worker may have waiting.
    capacity: usize,
    wake: std::sync::mpsc::Sender<Cmd>,
}

/// The audit log's sending side.
#[derive(Debug, Clone)]
pub struct AuditLog {
    shared: Option<Arc<Shared>>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// An audit log that writes nothing.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        AuditLog {
            shared: None,
            metrics,
        }
    }

    /// Opens `target` (a file must be writable now: start-up fails fast
    /// otherwise) and starts the writer thread. Each of `workers` worker
    /// threads may have up to `capacity` lines waiting.
    pub fn start(
        target: &AuditTarget,
        capacity: usize,
        workers: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let out = match target {
            AuditTarget::Off => return Ok(Self::off(metrics)),
            AuditTarget::Stdout => Sink::Stdout(std::io::stdout()),
            AuditTarget::File(path) => Sink::file(path)?,
        };
        let (wake, commands) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            pending: PerWorker::new(workers, |_| Mutex::default()),
            capacity: capacity.max(1),
            wake,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            out,
            metrics: Arc::clone(&metrics),
            failing: false,
            scratch: Vec::new(),
        };
        std::thread::Builder::new()
            .name("chime-gw-audit".into())
            .spawn(move || writer.run(&commands))?;
        Ok(AuditLog {
            shared: Some(shared),
            metrics,
        })
    }

    /// Whether lines are written at all (callers skip building records otherwise).
    pub fn is_on(&self) -> bool {
        self.shared.is_some()
    }

    /// Appends one record to this worker's pending lines; never waits for
    /// the disk. A line beyond the capacity is dropped and counted.
    pub fn record(&self, record: &AuditRecord<'_>) {
        let Some(shared) = &self.shared else { return };
        let mut pending = shared
            .pending
            .get()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if pending.lines >= shared.capacity {
            drop(pending);
            self.metrics.audit_dropped.inc();
            return;
        }
        record.write_json(&mut pending.buf);
        pending.buf.push(b'\n');
        pending.lines += 1;
        if pending.buf.len() >= HIGH_WATER && !pending.nudged {
            pending.nudged = true;
            let _ = shared.wake.send(Cmd::Nudge);
        }
    }

    /// Waits until every line recorded so far is written and flushed.
    pub async fn flush(&self) {
        let Some(shared) = &self.shared else { return };
        let (done, wait) = oneshot::channel();
        if shared.wake.send(Cmd::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The writer thread: every [`FLUSH_EVERY`] (or when nudged) it takes each
/// worker's pending lines and writes them in one go; a write system call
/// per request would cost more than the request. Write failures are
/// counted, and logged once per transition, instead of stopping it. A file
/// moved away by log rotation is followed by a new one ([`sink`]).
struct Writer {
    /// Shared with every [`AuditLog`]; when the writer holds the last
    /// reference it writes what is left and ends.
    shared: Arc<Shared>,
    out: Sink,
    metrics: Arc<Metrics>,
    failing: bool,
    scratch: Vec<u8>,
}

impl Writer {
    fn run(mut self, commands: &std::sync::mpsc::Receiver<Cmd>) {
        loop {
            let command = commands.recv_timeout(FLUSH_EVERY);
            let last = Arc::strong_count(&self.shared) == 1;
            let shared = Arc::clone(&self.shared);
            self.write_pending(&shared);
            if let Ok(Cmd::Flush(done)) = command {
                let _ = done.send(());
            }
            if last {
                return;
            }
        }
    }

    fn write_pending(&mut self, shared: &Shared) {
        match self.out.follow() {
            Ok(true) => tracing::info!("audit log file moved or removed; writing a new one"),
            Ok(false) => {}
            // Counted as a failed write; lines go on to the old file.
            Err(e) => self.report(Err(e)),
        }
        for slot in shared.pending.all() {
            {
                let mut pending = slot.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::swap(&mut pending.buf, &mut self.scratch);
                pending.lines = 0;
                pending.nudged = false;
            }
            if !self.scratch.is_empty() {
                let result = self.out.write_all(&self.scratch);
                self.report(result);
                self.scratch.clear();
            }
        }
        let result = self.out.flush();
        self.report(result);
    }

    fn report(&mut self, result: std::io::Result<()>) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("audit log writable again");
            }
            Ok(()) => {}
            Err(e) => {
                self.metrics.audit_write_errors.inc();
                if !self.failing {
                    self.failing = true;
                    tracing::error!(error = %e, "audit log write failed; lines are being lost");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::register(&prometheus::Registry::new()).unwrap())
    }

    /// Records one line per id.
    fn record(log: &AuditLog, ids: &[&str]) {
        for id in ids {
            log.record(&AuditRecord {
                request_id: id,
                decision: "allow",
                reason: "ok",
                ..Default::default()
            });
        }
    }

    /// The request ids of the lines in the file at `path`.
    fn ids(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn writes_one_json_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(&AuditTarget::File(path.clone()), 100, 2, metrics()).unwrap();
        record(&log, &["a", "b", "c"]);
        log.flush().await;
        assert_eq!(ids(&path), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_rotated_or_removed_file_is_followed_by_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let log = AuditLog::start(&AuditTarget::File(path.clone()), 100, 1, metrics()).unwrap();
        record(&log, &["a"]);
        log.flush().await;
        // logrotate's default: rename, then the writer starts a new file.
        std::fs::rename(&path, &rotated).unwrap();
        record(&log, &["b"]);
        log.flush().await;
        assert_eq!(ids(&rotated), ["a"]);
        assert_eq!(ids(&path), ["b"]);
        std::fs::remove_file(&path).unwrap();
        record(&log, &["c"]);
        log.flush().await;
        assert_eq!(ids(&path), ["c"]);
        // copytruncate: appending continues at the start.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        record(&log, &["d"]);
        log.flush().await;
        assert_eq!(ids(&path), ["d"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let m = metrics();
        // No writer takes the lines: the worker's buffer fills and lines are shed.
        let (wake, _commands) = std::sync::mpsc::channel();
        let log = AuditLog {
            shared: Some(Arc::new(Shared {
                pending: PerWorker::new(1, |_| Mutex::default()),
                capacity: 2,
                wake,
            })),
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
            1,
            metrics(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/audit.log"));
    }
}
