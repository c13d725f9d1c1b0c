//! The report catalog: refreshed from Chime's discovery routes, kept on a
//! failed refresh, and listed per user at /Chime/Gateway/Reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use chime_gateway::catalog::{builtin, Category, ReportDef};
use chime_gateway::config::{Secret, UpstreamAuth};
use chime_gateway::simulator::{Behavior, Simulator, SimulatorConfig};
use harness::{Harness, ADMIN, MANAGER};
use http::StatusCode;

async fn gateway_with_extra_upstream_report() -> Harness {
    let mut reports = builtin();
    reports.push(ReportDef {
        name: "TicketBacklog".into(),
        title: "Ticket backlog".into(),
        category: Category::QueueBasic,
        start_only: false,
        chart_type: "Bar".into(),
    });
    let sim = Simulator::start(SimulatorConfig {
        record: true,
        keys: vec![MANAGER.into(), ADMIN.into(), "service-key-123".into()],
        reports,
    })
    .await
    .unwrap();
    let mut config = harness::base_config(&sim.base_url());
    config.upstream.auth = UpstreamAuth::Service(Secret::new("service-key-123"));
    config.catalog.refresh_key = Some(Secret::new("service-key-123"));
    // Refresh on demand only, so the test decides when it happens.
    config.catalog.refresh_interval = std::time::Duration::ZERO;
    Harness::start_config(sim, config).await
}

const BACKLOG: &str =
    "/Chime/Report/ticketbacklog?queueId=1&start=2020-11-01T00:00:00Z&stop=2020-11-02T00:00:00Z";

#[tokio::test]
async fn refresh_adds_upstream_reports_and_failure_keeps_the_last_good_catalog() {
    let h = gateway_with_extra_upstream_report().await;
    let a = h.get_as(MANAGER, BACKLOG).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_report")
    );
    assert!(h.sim.recorded().is_empty());

    assert_eq!(
        h.state.refresh_catalog().await.unwrap(),
        builtin().len() + 1
    );
    let rec = h.sim.recorded();
    assert_eq!(rec.len(), 6, "one call per discovery route");
    assert!(rec
        .iter()
        .all(|r| r.headers["authorization"] == "Bearer service-key-123"));
    assert_eq!(
        rec[1].target,
        "/Chime/Report/GetQueueBasicReports?queueId=1"
    );
    let a = h.get_as(MANAGER, BACKLOG).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        h.sim.recorded().last().unwrap().target,
        "/Chime/Report/TicketBacklog?queueId=1&start=2020-11-01T00:00:00.000Z&stop=2020-11-02T00:00:00.000Z",
        "forwarded in the upstream's canonical spelling"
    );

    h.sim
        .set_behavior(Behavior::Fail(StatusCode::INTERNAL_SERVER_ERROR));
    assert!(h.state.refresh_catalog().await.is_err());
    h.sim.set_behavior(Behavior::Normal);
    assert_eq!(
        h.get_as(MANAGER, BACKLOG).await.status,
        StatusCode::OK,
        "catalog kept"
    );
    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_catalog_refreshes_total{result="success"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_catalog_refreshes_total{result="failure"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "chime_gateway_catalog_reports {}",
            builtin().len() + 1
        )),
        "{m}"
    );
}

#[tokio::test]
async fn listing_shows_each_user_what_they_may_call() {
    let h = Harness::start().await;
    let m = h.get_as(MANAGER, "/Chime/Gateway/Reports").await;
    assert_eq!(m.status, StatusCode::OK);
    let doc = m.json();
    assert_eq!(doc["user"], "demo-manager");
    assert_eq!(doc["queues"], serde_json::json!([1]));
    let names: Vec<&str> = doc["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"InboundVsAnsweredChats"));
    assert!(
        !names.contains(&"GlobalChatVolume"),
        "tenant-wide reports are not listed for managers"
    );
    let day = doc["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "AgentAvailability")
        .unwrap();
    assert_eq!(day["start_only"], true);
    assert_eq!(day["scope"], "queue");
    assert!(!doc["discovery"]
        .to_string()
        .contains("GetAvailableGlobalReports"));

    let a = h.get_as(ADMIN, "/Chime/Gateway/Reports").await.json();
    assert_eq!(a["queues"], "all");
    assert_eq!(a["reports"].as_array().unwrap().len(), builtin().len());
    assert!(a["discovery"]
        .to_string()
        .contains("GetAvailableGlobalReports"));

    assert_eq!(
        h.get("/Chime/Gateway/Reports", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get_as(MANAGER, "/Chime/Gateway/Reports?queueId=2")
            .await
            .code(),
        "malformed_query"
    );
    assert!(
        h.sim.recorded().is_empty(),
        "the listing is never forwarded"
    );
}
