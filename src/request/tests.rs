use super::*;
use crate::catalog::{builtin, UnknownReport};

fn cat() -> Catalog {
    Catalog::new(&builtin())
}

fn upstream(path: &str, query: &str) -> Result<String, BoxError> {
    let route = crate::route::match_path(path).unwrap();
    parse(&route, Some(query), &cat()).map(|r| r.upstream_path_and_query("/Chime"))
}

fn code(path: &str, query: &str) -> &'static str {
    let err = upstream(path, query).unwrap_err();
    crate::error::classify(err.as_ref()).code
}

const DOC_QUERY: &str =
    "queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true";

#[test]
fn docs_example_passes_byte_identical() {
    assert_eq!(
        upstream("/Chime/Report/InboundVsAnsweredChats", DOC_QUERY).unwrap(),
        format!("/Chime/Report/InboundVsAnsweredChats?{DOC_QUERY}")
    );
}

#[test]
fn canonicalises_spelling_order_and_instants() {
    assert_eq!(
        upstream(
            "/chime/report/inboundvsansweredchats",
            "CSV=YES&End=2020-12-01T00:59:59.999-04:00&zone=america/new_york&START=2020-11-01T04:00:00Z&QueueId=1"
        )
        .unwrap(),
        "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true&zone=America/New_York"
    );
    assert_eq!(
        upstream(
            "/Chime/Report/GlobalChatVolume",
            "start=2020-11-01T00:00:00.1234567Z&csv=false"
        )
        .unwrap(),
        "/Chime/Report/GlobalChatVolume?start=2020-11-01T00:00:00.123Z"
    );
    assert_eq!(
        upstream(
            "/Chime/Report/GlobalChatVolume",
            "start=2020-11-01T00:00:00Z&zone=Etc/GMT%2B5"
        )
        .unwrap(),
        "/Chime/Report/GlobalChatVolume?start=2020-11-01T00:00:00.000Z&zone=Etc/GMT%2B5"
    );
}

#[test]
fn routes_take_only_their_parameters() {
    assert_eq!(
        upstream("/Chime/Report/GetQueueBasicReports", "queueId=3").unwrap(),
        "/Chime/Report/GetQueueBasicReports?queueId=3"
    );
    assert_eq!(
        upstream("/Chime/Report/GetAvailableGlobalReports", "").unwrap(),
        "/Chime/Report/GetAvailableGlobalReports"
    );
    assert_eq!(
        upstream("/Chime/Session/SessionDetails/42", "zone=UTC").unwrap(),
        "/Chime/Session/SessionDetails/42?zone=UTC"
    );
    assert_eq!(
        code("/Chime/Report/GetAvailableGlobalReports", "queueId=1"),
        "parameter_not_accepted"
    );
    assert_eq!(
        code("/Chime/Report/GetQueueBasicReports", ""),
        "missing_parameter"
    );
    assert_eq!(
        code(
            "/Chime/Report/GetQueueBasicReports",
            "queueId=1&start=2020-01-01T00:00:00Z"
        ),
        "parameter_not_accepted"
    );
    assert_eq!(
        code(
            "/Chime/Report/GlobalChatVolume",
            "queueId=1&start=2020-01-01T00:00:00Z"
        ),
        "parameter_not_accepted"
    );
    assert_eq!(
        code("/Chime/Session/SessionDetails/42", "csv=true"),
        "parameter_not_accepted"
    );
}

#[test]
fn report_rules() {
    let r = "/Chime/Report/InboundVsAnsweredChats";
    assert_eq!(code(r, "start=2020-01-01T00:00:00Z"), "missing_parameter");
    assert_eq!(code(r, "queueId=1"), "missing_parameter");
    assert_eq!(
        code(
            r,
            "queueId=1&start=2020-02-01T00:00:00Z&stop=2020-01-01T00:00:00Z"
        ),
        "bad_parameter"
    );
    assert_eq!(
        code(r, "queueId=1&start=2020-01-01T00:00:00Z&stop=2020-01-02T00:00:00Z&end=2020-01-02T00:00:00Z"),
        "conflicting_parameters"
    );
    assert_eq!(
        code(
            "/Chime/Report/AgentAvailability",
            "queueId=1&start=2020-01-01T00:00:00Z&stop=2020-01-02T00:00:00Z"
        ),
        "parameter_not_accepted"
    );
    assert!(upstream(
        "/Chime/Report/AgentAvailability",
        "queueId=1&start=2020-01-01T00:00:00Z"
    )
    .is_ok());
    let err = upstream("/Chime/Report/NoSuchReport", DOC_QUERY).unwrap_err();
    assert!(err.is::<UnknownReport>());
}

#[test]
fn queue_id_must_be_canonical() {
    let r = "/Chime/Report/GetQueueBasicReports";
    for bad in [
        "0",
        "01",
        "+1",
        "-1",
        "1.0",
        "1,2",
        "0x1",
        " 1",
        "1 ",
        "%201",
        "2147483648",
        "99999999999",
        "１",
        "1e2",
        "[1]",
    ] {
        let q = format!("queueId={}", bad.replace(' ', "%20"));
        let err = upstream(r, &q).unwrap_err();
        assert!(err.is::<QueryError>(), "{bad}: {err}");
    }
    assert!(upstream(r, "queueId=2147483647").is_ok());
}

#[test]
fn csv_and_zone_values() {
    let r = "/Chime/Report/GlobalChatVolume";
    for t in ["true", "TRUE", "1", "yes", "Yes"] {
        assert!(upstream(r, &format!("start=2020-01-01T00:00:00Z&csv={t}"))
            .unwrap()
            .ends_with("&csv=true"));
    }
    for f in ["false", "0", "no", "NO"] {
        assert!(!upstream(r, &format!("start=2020-01-01T00:00:00Z&csv={f}"))
            .unwrap()
            .contains("csv"));
    }
    assert_eq!(
        code(r, "start=2020-01-01T00:00:00Z&csv=maybe"),
        "bad_parameter"
    );
    assert_eq!(
        code(r, "start=2020-01-01T00:00:00Z&zone=Mars/Olympus"),
        "bad_parameter"
    );
    assert_eq!(
        code(r, "start=2020-01-01T00:00:00Z&zone=../../etc/passwd"),
        "bad_parameter"
    );
    assert_eq!(code(r, "start=2020-01-01"), "bad_parameter");
    assert_eq!(code(r, "start=1969-12-31T23:59:59Z"), "bad_parameter");
}

#[test]
fn errors_name_the_parameter_but_not_the_value() {
    let err = upstream("/Chime/Report/GlobalChatVolume", "start=secret-value-123").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`start`") && msg.contains("2020-11-01T04:00:00.000Z"),
        "{msg}"
    );
    assert!(!msg.contains("secret-value-123"), "{msg}");
}
