use super::*;
use crate::catalog::UnknownReport;

/// The request as the gateway parses it, at 2020-12-15T12:00:00Z with the
/// built-in catalog (the fuzz checks' parse).
fn parse_opts(
    path: &str,
    query: &str,
    accept_csv: bool,
    options: &RequestOptions,
) -> Result<GatewayRequest, BoxError> {
    crate::fuzz::parse(path, Some(query), accept_csv, options)
}

fn upstream_opts(
    path: &str,
    query: &str,
    accept_csv: bool,
    options: &RequestOptions,
) -> Result<String, BoxError> {
    parse_opts(path, query, accept_csv, options).map(|r| r.upstream_path_and_query("/Chime"))
}

fn upstream(path: &str, query: &str) -> Result<String, BoxError> {
    upstream_opts(path, query, false, &RequestOptions::default())
}

fn code(path: &str, query: &str) -> &'static str {
    let err = upstream(path, query).unwrap_err();
    crate::error::classify(err.as_ref()).code
}

const DOC_QUERY: &str =
    "queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true";
const R: &str = "/Chime/Report/InboundVsAnsweredChats";
const G: &str = "/Chime/Report/GlobalChatVolume";
const DAY: &str = "/Chime/Report/AgentAvailability";

#[test]
fn docs_example_passes_byte_identical() {
    assert_eq!(upstream(R, DOC_QUERY).unwrap(), format!("{R}?{DOC_QUERY}"));
    // `end` in place of `stop` reaches the upstream as `stop`.
    assert_eq!(
        upstream(R, &DOC_QUERY.replace("stop=", "end=")).unwrap(),
        format!("{R}?{DOC_QUERY}")
    );
    // ... or as `end` when so configured.
    let options = RequestOptions {
        end_name: "end",
        ..RequestOptions::default()
    };
    assert_eq!(
        upstream_opts(R, DOC_QUERY, false, &options).unwrap(),
        format!("{R}?{}", DOC_QUERY.replace("stop=", "end="))
    );
}

/// The names metrics and the audit log give each target.
#[test]
fn targets_are_named_for_metrics_and_logs() {
    let name = |path: &str, query: &str| target_of(path, query).name().to_owned();
    assert_eq!(name(&R.to_lowercase(), DOC_QUERY), "InboundVsAnsweredChats");
    assert_eq!(
        name("/Chime/Report/GetQueueBasicReports", "queueId=1"),
        "GetQueueBasicReports"
    );
    assert_eq!(
        name("/Chime/Session/SessionDetails/42", ""),
        "SessionDetails"
    );
}

/// The target a request for `path?query` parses to.
fn target_of(path: &str, query: &str) -> Target {
    parse_opts(path, query, false, &RequestOptions::default())
        .unwrap()
        .target
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
        upstream(G, "start=2020-11-01T00:00:00.1234567Z&csv=false").unwrap(),
        "/Chime/Report/GlobalChatVolume?start=2020-11-01T00:00:00.123Z"
    );
    assert_eq!(
        upstream(G, "start=2020-11-01T00:00:00Z&zone=Etc/GMT%2B5").unwrap(),
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
        code(G, "queueId=1&start=2020-12-01T00:00:00Z"),
        "parameter_not_accepted"
    );
    assert_eq!(
        code("/Chime/Session/SessionDetails/42", "csv=true"),
        "parameter_not_accepted"
    );
    let err = upstream("/Chime/Report/NoSuchReport", DOC_QUERY).unwrap_err();
    assert!(err.is::<UnknownReport>());
}

#[test]
fn start_only_reports_drop_stop_and_say_so() {
    let r = parse_opts(
        DAY,
        "queueId=1&start=2020-12-01&stop=2020-12-02",
        false,
        &RequestOptions::default(),
    )
    .unwrap();
    assert_eq!(r.ignored, vec!["stop"]);
    assert_eq!(
        r.upstream_path_and_query("/Chime"),
        format!("{DAY}?queueId=1&start=2020-12-01T00:00:00.000Z")
    );
    let r = parse_opts(
        DAY,
        "queueId=1&start=2020-12-01&end=2020-12-02",
        false,
        &RequestOptions::default(),
    )
    .unwrap();
    assert_eq!(r.ignored, vec!["end"]);
    // A StartOnly report covers one day: no window limit applies to "start to now".
    assert!(upstream(DAY, "queueId=1&start=2010-01-01").is_ok());
}

#[test]
fn default_start_when_configured() {
    assert_eq!(code(R, "queueId=1"), "missing_parameter");
    let options = RequestOptions {
        default_start: Some("today-7d".into()),
        ..RequestOptions::default()
    };
    assert_eq!(
        upstream_opts(R, "queueId=1", false, &options).unwrap(),
        format!("{R}?queueId=1&start=2020-12-08T00:00:00.000Z")
    );
}

/// (query after `queueId=1&`, expected upstream query after `queueId=1&`, or the refusal code).
fn window_cases() -> Vec<(&'static str, Result<&'static str, &'static str>)> {
    vec![
        ("start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z", Ok("start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z")),
        ("start=2020-11-01T04:00:00.000Z&end=2020-12-01T04:59:59.999Z", Ok("start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z")),
        ("start=2020-11-01&stop=2020-11-30&zone=America/New_York", Ok("start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&zone=America/New_York")),
        ("start=2020-11-01&stop=2020-11-30&zone=AMERICA/NEW_YORK", Ok("start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&zone=America/New_York")),
        ("start=2020-11-01&stop=2020-11-01", Ok("start=2020-11-01T00:00:00.000Z&stop=2020-11-01T23:59:59.999Z")),
        ("start=2020-11-01&stop=2020-11-01&zone=europe/london", Ok("start=2020-11-01T00:00:00.000Z&stop=2020-11-01T23:59:59.999Z&zone=Europe/London")),
        ("start=2020-07-01&stop=2020-07-01&zone=Europe/London", Ok("start=2020-06-30T23:00:00.000Z&stop=2020-07-01T22:59:59.999Z&zone=Europe/London")),
        ("start=today-7d&stop=today", Ok("start=2020-12-08T00:00:00.000Z&stop=2020-12-15T23:59:59.999Z")),
        ("start=today-30d&stop=now", Ok("start=2020-11-15T00:00:00.000Z&stop=2020-12-15T12:00:00.000Z")),
        ("start=startOfMonth-1M&stop=startOfMonth", Ok("start=2020-11-01T00:00:00.000Z&stop=2020-11-30T23:59:59.999Z")),
        ("start=yesterday&stop=yesterday&zone=Asia/Tokyo", Ok("start=2020-12-13T15:00:00.000Z&stop=2020-12-14T14:59:59.999Z&zone=Asia/Tokyo")),
        ("start=now-2h", Ok("start=2020-12-15T10:00:00.000Z")),
        ("start=2020-02-29&stop=2020-02-29", Ok("start=2020-02-29T00:00:00.000Z&stop=2020-02-29T23:59:59.999Z")),
        ("start=2020-01-01&stop=2020-12-31", Ok("start=2020-01-01T00:00:00.000Z&stop=2020-12-31T23:59:59.999Z")),
        // Inverted and oversized windows.
        ("start=2020-12-01&stop=2020-11-01", Err("bad_parameter")),
        ("start=now&stop=now-1s", Err("bad_parameter")),
        ("start=2019-01-01&stop=2020-12-31", Err("bad_parameter")),
        ("start=2019-11-01", Err("bad_parameter")),
        // Bad values.
        ("start=2020-13-01", Err("bad_parameter")),
        ("start=yesterdays", Err("bad_parameter")),
        ("start=now-1x", Err("bad_parameter")),
        // A 400, not a panic (found by fuzzing): a multi-byte character
        // where the next offset's sign would be.
        ("start=today-3d%D5%85one", Err("bad_parameter")),
        ("start=today-3dx5d", Err("bad_parameter")),
        ("start=2020-11-01&zone=Mars/Olympus", Err("bad_parameter")),
        ("start=2020-11-01&zone=..%2F..%2Fetc%2Fpasswd", Err("bad_parameter")),
        ("start=2020-11-01&zone=", Err("bad_parameter")),
        ("stop=2020-11-01", Err("missing_parameter")),
        ("start=2020-11-01&stop=2020-11-02&end=2020-11-02", Err("conflicting_parameters")),
    ]
}

#[test]
fn window_table() {
    for (q, want) in window_cases() {
        let got = upstream(R, &format!("queueId=1&{q}"));
        match want {
            Ok(expected) => assert_eq!(
                got.unwrap_or_else(|e| panic!("{q}: {e}")),
                format!("{R}?queueId=1&{expected}"),
                "{q}"
            ),
            Err(code) => {
                let err = got.expect_err(q);
                assert_eq!(
                    crate::error::classify(err.as_ref()).code,
                    code,
                    "{q}: {err}"
                );
            }
        }
    }
}

#[test]
fn window_limit_names_the_limit_and_has_per_report_overrides() {
    let err = upstream(R, "queueId=1&start=2019-01-01&stop=2020-12-31").unwrap_err();
    assert!(err.to_string().contains("366 days"), "{err}");
    let mut options = RequestOptions::default();
    options.max_window_per_report.insert(
        "inboundvsansweredchats".into(),
        jiff::SignedDuration::from_hours(31 * 24),
    );
    assert!(upstream_opts(
        R,
        "queueId=1&start=2020-11-01&stop=2020-11-30",
        false,
        &options
    )
    .is_ok());
    let err = upstream_opts(
        R,
        "queueId=1&start=2020-10-01&stop=2020-11-30",
        false,
        &options,
    )
    .unwrap_err();
    assert!(err.to_string().contains("31 days"), "{err}");
    assert!(
        upstream_opts(G, "start=2020-10-01&stop=2020-11-30", false, &options).is_ok(),
        "other reports keep the default"
    );
}

#[test]
fn csv_spellings_accept_and_default() {
    let base = "queueId=1&start=2020-12-01";
    for t in ["true", "TRUE", "True", "1", "yes", "Yes", "YES"] {
        assert!(
            upstream(R, &format!("{base}&csv={t}"))
                .unwrap()
                .ends_with("&csv=true"),
            "{t}"
        );
    }
    for f in ["false", "FALSE", "0", "no", "No"] {
        assert!(
            !upstream(R, &format!("{base}&csv={f}"))
                .unwrap()
                .contains("csv"),
            "{f}"
        );
    }
    for bad in ["maybe", "2", "on", "t", "y"] {
        assert_eq!(
            code(R, &format!("{base}&csv={bad}")),
            "bad_parameter",
            "{bad}"
        );
    }
    let d = RequestOptions::default();
    // Accept: text/csv means csv=true; an explicit csv parameter wins.
    assert!(upstream_opts(R, base, true, &d)
        .unwrap()
        .ends_with("&csv=true"));
    assert!(!upstream_opts(R, &format!("{base}&csv=false"), true, &d)
        .unwrap()
        .contains("csv"));
    assert!(
        !upstream_opts("/Chime/Report/GetQueueBasicReports", "queueId=1", true, &d)
            .unwrap()
            .contains("csv")
    );
    let csv_default = RequestOptions {
        csv_default: true,
        ..RequestOptions::default()
    };
    assert!(upstream_opts(R, base, false, &csv_default)
        .unwrap()
        .ends_with("&csv=true"));
    assert!(
        !upstream_opts(R, &format!("{base}&csv=no"), false, &csv_default)
            .unwrap()
            .contains("csv")
    );
}

#[test]
fn accept_header_negotiation() {
    let accept = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ACCEPT, v.parse().unwrap());
        accepts_csv(&h)
    };
    assert!(accept("text/csv"));
    assert!(accept("TEXT/CSV"));
    assert!(accept("application/json;q=0.5, text/csv"));
    assert!(accept("text/csv; charset=utf-8; q=0.8"));
    assert!(!accept("text/csv;q=0"));
    assert!(!accept("*/*"));
    assert!(!accept("text/*"));
    assert!(!accept("application/json"));
    assert!(!accepts_csv(&http::HeaderMap::new()));
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
fn errors_name_the_parameter_and_an_example_but_not_the_value() {
    let err = upstream(G, "start=secret-value-123").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`start`") && msg.contains("2020-11-01T04:00:00.000Z"),
        "{msg}"
    );
    assert!(!msg.contains("secret-value-123"), "{msg}");
    let err = upstream(G, "start=2020-12-01&zone=Nowhere/Special").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`zone`") && msg.contains("tz database") && msg.contains("America/New_York"),
        "{msg}"
    );
}

#[test]
fn instants_format_like_strftime() {
    use jiff::Timestamp;
    let slow = |ts: Timestamp| ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let mut secs: i64 = -62_135_596_800; // 0001-01-01
    let step = 7_919_993_i64;
    while secs < 253_402_300_799 {
        let ts = Timestamp::new(
            secs,
            ((secs.unsigned_abs() % 1000) * 1_000_000 + 123_456) as i32,
        )
        .unwrap();
        assert_eq!(super::format_instant(ts), slow(ts));
        // Its date is remembered now; the text is the same.
        assert_eq!(super::format_instant(ts), slow(ts));
        secs += step;
    }
    for edge in [
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.999999999Z",
        "9999-12-30T00:00:00.5Z",
    ] {
        let ts: Timestamp = edge.parse().unwrap();
        assert_eq!(super::format_instant(ts), slow(ts), "{edge}");
    }
}

mod canonical_form {
    //! Whatever a client sends, what reaches the upstream is the gateway's
    //! own canonical spelling: read back by the same parser it means the
    //! same request and is spelled the same (a fixpoint), so nothing a
    //! client wrote survives except through a typed value.

    use proptest::prelude::*;

    use super::*;

    /// Parameter names as clients spell them, right or wrong.
    fn name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "queueId",
            "QUEUEID",
            "queueid",
            "queue%49d",
            "start",
            "Start",
            "stop",
            "end",
            "END",
            "csv",
            "Csv",
            "zone",
            "ZONE",
            "bogus",
            "",
            "start%00",
            "queueId[]",
        ])
    }

    const QUEUE_IDS: &[&str] = &["1", "42", "4294967295"];
    const STARTS: &[&str] = &[
        "2020-11-01",
        "2020-12-01T04:59:59.999Z",
        "2020-11-01T04:00:00Z",
        "2020-12-15T07:00:00-05:00",
        "2020-12-15T07:00:00%2B05:30",
        "today-7d",
        "today",
        "now-2h",
        "startOfMonth-1M",
        "yesterday",
    ];
    const STOPS: &[&str] = &[
        "2020-12-14",
        "2020-12-15T11:59:59.999Z",
        "today",
        "now",
        "startOfMonth",
    ];
    const CSVS: &[&str] = &["true", "TRUE", "yes", "1", "no", "false", "0"];
    const ZONES: &[&str] = &[
        "America/New_York",
        "europe/london",
        "Asia/Kolkata",
        "UTC",
        "Etc/GMT%2B5",
        "Etc/GMT-14",
        "asia/kathmandu",
    ];
    /// Values no parameter takes.
    const NEAR_MISSES: &[&str] = &[
        "01",
        "4294967296",
        "-1",
        "+1",
        "1%20",
        "0x1",
        "2019-01-01",
        "Mars/Olympus",
        "..%2F..%2Fetc%2Fpasswd",
        "%",
        "%zz",
        "%C3%A9",
        "%26",
        "%3D",
    ];

    /// Values: the right shapes for each parameter, near misses, and text
    /// full of the characters a query or an upstream might read specially.
    fn value() -> impl Strategy<Value = String> {
        let known = [QUEUE_IDS, STARTS, STOPS, CSVS, ZONES, NEAR_MISSES].concat();
        prop_oneof![
            4 => prop::sample::select(known).prop_map(str::to_owned),
            1 => "[-%+&=;/:._~ a-zA-Z0-9]{0,12}",
            1 => ".{0,8}",
        ]
    }

    /// One parameter, as `name=value`, under one of its spellings and with
    /// one of its valid values (absent a third of the time).
    fn valid(names: &[&'static str], values: &[&'static str]) -> BoxedStrategy<Option<String>> {
        let pair = (
            prop::sample::select(names.to_vec()),
            prop::sample::select(values.to_vec()),
        )
            .prop_map(|(n, v)| format!("{n}={v}"));
        prop::option::weighted(0.7, pair).boxed()
    }

    /// Mostly requests that should pass (each parameter validly spelled,
    /// in any order), some with a pair from [`name`] and [`value`] mixed
    /// in, and some arbitrary text.
    fn query() -> impl Strategy<Value = String> {
        let params = (
            valid(&["queueId", "QUEUEID", "queueid", "queue%49d"], QUEUE_IDS),
            valid(&["start", "Start", "START"], STARTS),
            valid(&["stop", "end", "END"], STOPS),
            valid(&["csv", "Csv", "CSV"], CSVS),
            valid(&["zone", "Zone"], ZONES),
        );
        let junk = (name(), prop::option::weighted(0.9, value()))
            .prop_map(|(n, v)| v.map_or(n.to_owned(), |v| format!("{n}={v}")));
        let request = (params, prop::option::weighted(0.2, junk))
            .prop_map(|((q, s, e, c, z), junk)| {
                [q, s, e, c, z, junk]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .prop_shuffle();
        prop_oneof![
            9 => (request, prop::sample::select(vec!["&", "&", "&", "&&", ";"]))
                .prop_map(|(pairs, sep)| pairs.join(sep)),
            1 => ".{0,60}",
        ]
    }

    fn path() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            R,
            "/chime/report/INBOUNDVSANSWEREDCHATS",
            G,
            DAY,
            "/Chime/Report/GetQueueBasicReports",
            "/Chime/Session/SessionDetails/42",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn the_upstream_request_is_a_canonical_fixpoint(
            path in path(),
            query in query(),
            accept_csv: bool,
            flags in 0u8..16,
        ) {
            let options = crate::fuzz::options(flags);
            crate::fuzz::request_target(path, Some(&query), accept_csv, &options);
        }
    }
}

/// "Now" is read only for what needs it, and once per parse: a window of
/// two instants reads nothing.
#[test]
fn now_is_read_only_when_the_window_needs_it() {
    let catalog = Catalog::new(&crate::catalog::builtin());
    let options = RequestOptions::default();
    let readings = |query: &str| {
        let clock = crate::clock::FixedClock::new("2020-12-15T12:00:00Z".parse().unwrap());
        let route = crate::route::match_path("/Chime/Report/InboundVsAnsweredChats").unwrap();
        let ctx = ParseContext {
            now: Now::from_clock(&clock),
            accept_csv: false,
            options: &options,
        };
        parse_with(&route, Some(query), &catalog, &ctx).unwrap();
        clock.readings().0
    };
    let absolute = "queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-11-02T04:59:59.999Z";
    assert_eq!(readings(absolute), 0);
    assert_eq!(readings("queueId=1&start=today-1d&stop=now"), 1);
    assert_eq!(readings("queueId=1&start=2020-12-01T00:00:00Z"), 1);
    assert_eq!(readings("queueId=1&start=2020-12-01"), 1);
}
