//! Property tests over the request parser and the ACL: for any query, the
//! gateway either refuses, or forwards a canonical query (a fixed point of
//! parse + serialise) whose queueId — as Chime's own model binding would
//! read it — is one the principal may see.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use chime_gateway::acl::decide;
use chime_gateway::auth::{ApiKey, Principal, Role};
use chime_gateway::catalog::{builtin, Catalog};
use chime_gateway::request::{self, GatewayRequest, Now, ParseContext, RequestOptions};
use chime_gateway::route::match_path;
use chime_gateway::simulator::bind_like_aspnet;
use proptest::prelude::*;

fn manager() -> Principal {
    Principal {
        user: "m".into(),
        role: Role::Manager,
        queues: Arc::new(BTreeSet::from([1, 3])),
        tier: "default".into(),
        fingerprint: ApiKey::generate().hash().fingerprint(),
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("queueId".to_owned()),
        Just("QUEUEID".to_owned()),
        Just("queueid".to_owned()),
        Just("%71ueueId".to_owned()),
        Just("queue%49d".to_owned()),
        Just("queueId[]".to_owned()),
        Just("start".to_owned()),
        Just("Start".to_owned()),
        Just("stop".to_owned()),
        Just("end".to_owned()),
        Just("csv".to_owned()),
        Just("zone".to_owned()),
        "[a-zA-Z%_]{0,6}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_owned()),
        Just("2".to_owned()),
        Just("3".to_owned()),
        Just("%32".to_owned()),
        Just("%31".to_owned()),
        Just("01".to_owned()),
        Just("+1".to_owned()),
        Just("1,2".to_owned()),
        Just("2147483647".to_owned()),
        Just("4294967297".to_owned()),
        Just("2020-11-01T04:00:00Z".to_owned()),
        Just("2020-12-01T00:00:00.5-05:00".to_owned()),
        Just("2020-11-01T04:00:00+00:00".to_owned()),
        Just("true".to_owned()),
        Just("NO".to_owned()),
        Just("America/New_York".to_owned()),
        Just("etc/gmt%2B5".to_owned()),
        Just("%00".to_owned()),
        "[a-zA-Z0-9%+,;=:._-]{0,10}",
    ]
}

/// Random pairs, half of the time after a valid base so that many queries
/// get past the parser and the ACL's allow path is exercised too.
fn query() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just(""),
        Just("queueId=1&start=2020-11-01T04:00:00Z"),
        Just("queueId=3&start=2020-11-01T04:00:00Z"),
        Just("start=2020-11-01T04:00:00Z"),
    ];
    (
        base,
        prop::collection::vec((name(), value(), any::<bool>()), 0..5),
    )
        .prop_map(|(base, pairs)| {
            let mut parts: Vec<String> = pairs
                .into_iter()
                .map(|(n, v, with_eq)| if with_eq { format!("{n}={v}") } else { n })
                .collect();
            if !base.is_empty() {
                parts.insert(0, base.to_owned());
            }
            parts.join("&")
        })
}

const ROUTES: [&str; 4] = [
    "/Chime/Report/InboundVsAnsweredChats",
    "/Chime/Report/GetQueueAgentReports",
    "/Chime/Report/AgentAvailability",
    "/Chime/Report/GlobalChatVolume",
];

fn parse(path: &str, raw: &str) -> Result<GatewayRequest, chime_gateway::BoxError> {
    let options = RequestOptions::default();
    let ctx = ParseContext {
        now: Now::at("2020-12-15T00:00:00Z".parse().unwrap()),
        accept_csv: false,
        options: &options,
    };
    request::parse_with(
        &match_path(path).unwrap(),
        Some(raw),
        &Catalog::new(&builtin()),
        &ctx,
    )
}

fn check(path: &str, raw: &str) -> Result<(), TestCaseError> {
    let Ok(parsed) = parse(path, raw) else {
        return Ok(()); // refused: nothing is forwarded
    };
    let upstream = parsed.upstream_path_and_query("/Chime");
    let (up_path, up_query) = upstream.split_once('?').unwrap_or((&upstream, ""));
    // Canonical: parsing what we forward gives the same typed request and the same bytes.
    let again = parse(up_path, up_query).map_err(|e| {
        TestCaseError::fail(format!(
            "forwarded query does not re-parse: {upstream}: {e}"
        ))
    })?;
    prop_assert_eq!(&again.target, &parsed.target);
    prop_assert_eq!(&again.params, &parsed.params);
    prop_assert_eq!(again.upstream_path_and_query("/Chime"), upstream.clone());
    prop_assert!(up_query
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'+' && b != b';'));
    // The ACL: when it allows, Chime binds a queue the manager may see.
    if decide(&manager(), &parsed).is_ok() {
        if let Some(q) = bind_like_aspnet(up_query, "queueId") {
            let q: u32 = q
                .parse()
                .map_err(|_| TestCaseError::fail(format!("Chime would bind {q:?}")))?;
            prop_assert!([1, 3].contains(&q), "queue {} reached Chime for {}", q, raw);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn forwarded_queries_are_canonical_and_allowed(route in 0..ROUTES.len(), raw in query()) {
        check(ROUTES[route], &raw)?;
    }

    #[test]
    fn valid_bases_are_allowed_for_own_queues(queue in prop_oneof![Just(1u32), Just(3u32)], extra in "(&csv=(true|false|1|0))?") {
        // The allow path is reachable: a manager's own queue is forwarded.
        let raw = format!("queueId={queue}&start=2020-11-01T04:00:00Z{extra}");
        let parsed = parse(ROUTES[0], &raw).unwrap();
        prop_assert!(decide(&manager(), &parsed).is_ok());
        check(ROUTES[0], &raw)?;
    }

    #[test]
    fn arbitrary_queries_never_panic(route in 0..ROUTES.len(), raw in "\\PC{0,80}") {
        check(ROUTES[route], &raw)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The time normaliser never panics: any value in any zone either
    /// becomes an instant within 1970–9999 or is refused.
    #[test]
    fn time_values_never_panic(
        raw in prop_oneof![
            "\\PC{0,40}",
            "(now|today|yesterday|tomorrow|startOfWeek|startOfMonth|startOfYear)([+-][0-9]{1,7}[smhdwMyx]){0,6}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
        ],
        zone in prop_oneof![Just("UTC"), Just("America/New_York"), Just("Pacific/Chatham"), Just("America/Santiago")],
        stop in any::<bool>(),
    ) {
        use chime_gateway::request::time::{evaluate, End};
        let tz = jiff::tz::TimeZoneDatabase::bundled().get(zone).unwrap();
        let now: jiff::Timestamp = "2024-03-10T06:59:59.999Z".parse().unwrap();
        if let Ok(ts) = evaluate(&raw, if stop { End::Stop } else { End::Start }, || now, &tz) {
            prop_assert!(ts >= jiff::Timestamp::UNIX_EPOCH);
            prop_assert!(ts.to_zoned(jiff::tz::TimeZone::UTC).year() <= 9999);
        }
    }
}
