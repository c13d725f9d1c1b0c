//! Metrics, audit log and trace propagation after scripted traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/command.rs"]
mod command;
#[path = "support/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chime_gateway::audit::AuditTarget;
use chime_gateway::ratelimit::Tier;
use chime_gateway::simulator::Behavior;
use harness::{report, Harness, ADMIN, MANAGER};
use http::StatusCode;

/// allowed ×2, 403, 429, 401 (manager budget of 2), 502 (admin, upstream hangs up).
async fn scripted(h: &Harness) -> Vec<StatusCode> {
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let auth = format!("Bearer {MANAGER}");
    let mut statuses = vec![
        h.get(
            &report(),
            &[("authorization", &auth), ("traceparent", incoming)],
        )
        .await
        .status,
        h.get_as(MANAGER, &report()).await.status,
        h.get_as(MANAGER, &report().replace("queueId=1", "queueId=2"))
            .await
            .status,
        h.get_as(MANAGER, &report()).await.status,
        h.get(&report(), &[]).await.status,
    ];
    h.sim.set_behavior(Behavior::Hangup);
    statuses.push(h.get_as(ADMIN, &report()).await.status);
    h.sim.set_behavior(Behavior::Normal);
    statuses
}

async fn observed() -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let h = Harness::start_with(|c| {
        c.ratelimit.tiers = vec![
            Tier::new("default", 1, 2, 4),
            Tier::new("internal", 1, 10, 4),
        ];
        c.audit.target = AuditTarget::File(audit.clone());
        c.metrics.per_user = true;
    })
    .await;
    let statuses = scripted(&h).await;
    assert_eq!(
        statuses.iter().map(StatusCode::as_u16).collect::<Vec<_>>(),
        [200, 200, 403, 429, 401, 502]
    );
    (h, dir)
}

#[tokio::test]
async fn counters_and_histograms_are_exact() {
    let (h, _dir) = observed().await;
    let m = h.admin_get("/metrics").await.text();
    let r = r#"report="InboundVsAnsweredChats",route="report""#;
    for line in [
        format!(r#"chime_gateway_requests_total{{outcome="ok",{r},status_class="2xx"}} 2"#),
        format!(r#"chime_gateway_requests_total{{outcome="queue_forbidden",{r},status_class="4xx"}} 1"#),
        format!(r#"chime_gateway_requests_total{{outcome="rate_limited",{r},status_class="4xx"}} 1"#),
        r#"chime_gateway_requests_total{outcome="missing_credentials",report="-",route="report",status_class="4xx"} 1"#.to_owned(),
        format!(r#"chime_gateway_requests_total{{outcome="upstream_error",{r},status_class="5xx"}} 1"#),
        r#"chime_gateway_request_duration_seconds_count{route="report"} 6"#.to_owned(),
        r#"chime_gateway_upstream_duration_seconds_count{route="report"} 2"#.to_owned(),
        r#"chime_gateway_auth_failures_total{reason="missing"} 1"#.to_owned(),
        r#"chime_gateway_acl_denials_total{reason="queue_forbidden"} 1"#.to_owned(),
        r#"chime_gateway_ratelimit_rejections_total{limit="rate"} 1"#.to_owned(),
        r#"chime_gateway_upstream_errors_total{kind="protocol"} 1"#.to_owned(),
        r#"chime_gateway_user_requests_total{outcome="ok",user="demo-manager"} 2"#.to_owned(),
        "chime_gateway_in_flight_requests 0".to_owned(),
        "chime_gateway_keys_loaded 2".to_owned(),
        format!("chime_gateway_catalog_reports {}", chime_gateway::catalog::builtin().len()),
    ] {
        assert!(m.contains(&line), "missing {line}\n{m}");
    }
    // Histogram buckets are cumulative and end in +Inf with the count.
    assert!(
        m.contains(r#"chime_gateway_request_duration_seconds_bucket{route="report",le="+Inf"} 6"#)
    );
    assert!(
        m.contains(r#"chime_gateway_request_duration_seconds_bucket{route="report",le="300"} 6"#)
    );
    // Never a key, a fingerprint's source, or a raw query.
    for secret in [MANAGER, ADMIN, "queueId=", "start=2020", "Bearer"] {
        assert!(!m.contains(secret), "{secret} in /metrics");
    }
    lint_exposition(&m);
}

#[tokio::test]
async fn one_audit_line_per_request_with_its_decision() {
    let (h, dir) = observed().await;
    h.state.audit.flush().await;
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    for secret in [MANAGER, ADMIN] {
        assert!(!text.contains(secret));
    }
    let first = &lines[0];
    for field in [
        "time",
        "request_id",
        "trace_id",
        "client",
        "user",
        "key",
        "role",
        "method",
        "route",
        "report",
        "queue",
        "start",
        "stop",
        "zone",
        "csv",
        "decision",
        "reason",
        "status",
        "bytes",
        "upstream_status",
        "upstream_seconds",
        "served",
        "upstream_request_id",
        "seconds",
    ] {
        assert!(first.get(field).is_some(), "field {field} missing: {first}");
    }
    assert_eq!(first["user"], "demo-manager");
    assert_eq!(first["role"], "manager");
    assert_eq!(first["key"].as_str().unwrap().len(), 8);
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["report"], "InboundVsAnsweredChats");
    assert!(first["zone"].is_null(), "no zone sent");
    assert_eq!(first["queue"], 1);
    assert_eq!(first["start"], "2020-11-01T04:00:00.000Z");
    assert_eq!(first["stop"], "2020-12-01T04:59:59.999Z");
    assert_eq!(first["csv"], true);
    assert_eq!(
        (first["decision"].as_str(), first["reason"].as_str()),
        (Some("allow"), Some("ok"))
    );
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(first["bytes"].as_u64().unwrap() > 0);
    assert_eq!(first["served"], "upstream");
    assert_eq!(first["upstream_request_id"], first["request_id"]);
    assert!(
        lines[2]["upstream_request_id"].is_null(),
        "refused: no exchange"
    );
    let reasons: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["decision"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("allow", "ok"),
            ("allow", "ok"),
            ("deny", "queue_forbidden"),
            ("deny", "rate_limited"),
            ("deny", "missing_credentials"),
            ("deny", "upstream_error"),
        ]
    );
    assert!(
        lines[4]["user"].is_null(),
        "no user for a request without a key"
    );
    assert_eq!(lines[2]["queue"], 2);
}

/// How long Chime took is read once, from when the request set out for it,
/// whether the request runs alone or leads a flight: in the audit line and
/// the upstream histogram it is at least Chime's delay and at most the
/// whole request's time.
#[tokio::test]
async fn the_upstream_time_covers_chimes_delay() {
    let delay = Duration::from_millis(200);
    for coalesce in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let h = Harness::start_with(|c| {
            c.cache.enabled = false;
            c.cache.coalesce = coalesce;
            c.audit.target = AuditTarget::File(audit.clone());
        })
        .await;
        h.sim.set_behavior(Behavior::Slow(delay));
        assert_eq!(h.get_as(MANAGER, &report()).await.status, StatusCode::OK);
        h.state.audit.flush().await;
        let text = std::fs::read_to_string(&audit).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let upstream = line["upstream_seconds"].as_f64().unwrap();
        let whole = line["seconds"].as_f64().unwrap();
        assert!(
            upstream >= delay.as_secs_f64() && upstream <= whole,
            "coalesce = {coalesce}: {line}"
        );
        let m = h.metrics_text();
        let sum: f64 = m
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"chime_gateway_upstream_duration_seconds_sum{route="report"} "#)
            })
            .unwrap()
            .parse()
            .unwrap();
        // The audit line keeps microseconds.
        assert!(
            sum >= delay.as_secs_f64() && sum <= upstream + 1e-6,
            "coalesce = {coalesce}: histogram {sum}, audit {upstream}"
        );
    }
}

#[tokio::test]
async fn trace_context_is_propagated() {
    let h = Harness::start().await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let auth = format!("Bearer {MANAGER}");
    h.get(
        &report(),
        &[("authorization", &auth), ("traceparent", incoming)],
    )
    .await;
    h.get(&report(), &[("authorization", &auth)]).await;
    let rec = h.sim.recorded();
    let joined = rec[0].headers["traceparent"].to_str().unwrap();
    assert!(joined.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && joined.ends_with("-01"));
    assert_ne!(joined, incoming, "the gateway forwards its own span");
    let started = rec[1].headers["traceparent"].to_str().unwrap();
    assert_eq!(started.len(), 55);
    assert!(!started.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
}

/// A Rust-side lint of the text exposition (the same rules `promtool check
/// metrics` applies that matter here), plus promtool itself when CI provides it.
fn lint_exposition(text: &str) {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap();
            assert!(!doc.trim().is_empty(), "{name} has an empty HELP");
            assert!(help.insert(name.to_owned()), "{name} has two HELP lines");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} typed twice"
            );
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name_ok(name), "bad metric name {name}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "{name} has no TYPE");
        }
    }
    for (name, kind) in &types {
        assert!(help.contains(name), "{name} has no HELP");
        assert!(
            name.starts_with("chime_gateway_"),
            "{name} lacks the prefix"
        );
        match kind.as_str() {
            "counter" => assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            ),
            "histogram" => assert!(
                name.ends_with("_seconds") || name.ends_with("_bytes"),
                "{name} needs a base unit"
            ),
            _ => assert!(
                !name.ends_with("_total"),
                "non-counter {name} ends in _total"
            ),
        }
    }
    if let Ok(promtool) = std::env::var("CHIME_GATEWAY_PROMTOOL") {
        let out = command::run(
            std::process::Command::new(promtool).args(["check", "metrics"]),
            Some(text),
        );
        command::assert_clean(&out, "promtool check metrics");
    }
}

/// The shipped dashboard and alert rules only use metrics the gateway exports.
#[tokio::test]
async fn dashboard_and_alerts_use_exported_metrics() {
    let (h, _dir) = observed().await;
    let exported = h.admin_get("/metrics").await.text();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dashboard = std::fs::read_to_string(root.join("grafana/chime-gateway.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(doc["panels"].as_array().unwrap().len() >= 6);
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let mut used = BTreeSet::new();
    for text in [&dashboard, &alerts] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("chime_gateway_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_owned();
            used.insert(family);
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        assert!(
            exported.contains(&format!("# TYPE {name} ")),
            "{name} is not exported"
        );
    }
}
