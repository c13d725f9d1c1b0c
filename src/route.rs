//! Route: the allowlist of paths the gateway serves.
//!
//! Checks the request target against the only shapes that are ever
//! forwarded: `/Chime/Report/{ReportName}`, the six discovery routes
//! `/Chime/Report/Get…Reports`, and `/Chime/Session/SessionDetails/{id}`;
//! plus the gateway's own `/Chime/Gateway/Reports` (never forwarded).
//! Matching is exact apart from ASCII case: segments must be ASCII letters
//! and digits, so dot segments, `//`, backslashes, `;` parameters and
//! percent-encoding never match anything and are refused rather than
//! "cleaned". Session ids are canonical positive integers (Chime's
//! `SessionID` is an integer key).
//!
//! Rejects with 404 `not_found` (unknown path) and 405 `method_not_allowed`
//! (anything but GET and HEAD on a known path). Adds a [`RouteMatch`] to the
//! request's extensions.

use http::{Method, Request};

use crate::catalog::{self, Category};
use crate::gate::{Gate, Passed};
use crate::observe::Trace;
use crate::BoxError;

/// Which allowlisted route a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// `/Chime/Report/{name}`: name as sent (shape checked, catalog not yet consulted).
    Report(String),
    /// `/Chime/Report/Get…Reports`.
    Discovery(Category),
    /// `/Chime/Session/SessionDetails/{id}`.
    SessionDetails(u64),
    /// `/Chime/Gateway/Reports`: the gateway's own per-user report list.
    Listing,
}

impl RouteMatch {
    /// Its kind, the label for metrics and logs.
    pub fn kind(&self) -> RouteKind {
        match self {
            RouteMatch::Report(_) => RouteKind::Report,
            RouteMatch::Discovery(_) => RouteKind::Discovery,
            RouteMatch::SessionDetails(_) => RouteKind::Session,
            RouteMatch::Listing => RouteKind::Listing,
        }
    }
}

/// The kinds of request, as metrics and logs label them: the one list of
/// the labels, so a series can be found by position rather than by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// A report.
    Report,
    /// A discovery route.
    Discovery,
    /// SessionDetails.
    Session,
    /// The gateway's own report listing.
    Listing,
    /// A request refused before it was routed.
    Unmatched,
}

impl RouteKind {
    /// Every kind, in declaration order (`kind as usize` is its position).
    pub const ALL: [RouteKind; 5] = [
        RouteKind::Report,
        RouteKind::Discovery,
        RouteKind::Session,
        RouteKind::Listing,
        RouteKind::Unmatched,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Report => "report",
            RouteKind::Discovery => "discovery",
            RouteKind::Session => "session",
            RouteKind::Listing => "listing",
            RouteKind::Unmatched => "unmatched",
        }
    }

    /// Whether requests of this kind are sent to Chime.
    pub fn reaches_upstream(self) -> bool {
        matches!(
            self,
            RouteKind::Report | RouteKind::Discovery | RouteKind::Session
        )
    }
}

/// Why a request matched no route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The path is not one the gateway serves.
    #[error("no such route; the gateway serves /Chime/Report/{{ReportName}}, the report discovery routes and /Chime/Session/SessionDetails/{{id}}")]
    NotFound,
    /// `/Chime/Session/SessionDetails/{id}` with an `id` no session can have.
    #[error("no such session; a session id is a positive integer without sign or leading zeros, at most 9223372036854775807")]
    BadSessionId,
    /// Known path, wrong method.
    #[error("only GET and HEAD are allowed")]
    MethodNotAllowed,
}

/// Matches a path (no query) against the allowlist.
pub fn match_path(path: &str) -> Result<RouteMatch, RouteError> {
    let rest = path.strip_prefix('/').ok_or(RouteError::NotFound)?;
    let mut segs = crate::split::all(rest, b'/');
    let (Some(root), Some(area)) = (segs.next(), segs.next()) else {
        return Err(RouteError::NotFound);
    };
    if !root.eq_ignore_ascii_case("Chime") {
        return Err(RouteError::NotFound);
    }
    let found = if area.eq_ignore_ascii_case("Report") {
        match (segs.next(), segs.next()) {
            (Some(name), None) if catalog::is_report_name(name) => {
                match Category::from_discovery_route(name) {
                    Some(c) => RouteMatch::Discovery(c),
                    None => RouteMatch::Report(name.to_owned()),
                }
            }
            _ => return Err(RouteError::NotFound),
        }
    } else if area.eq_ignore_ascii_case("Session") {
        match (segs.next(), segs.next(), segs.next()) {
            (Some(sd), Some(id), None) if sd.eq_ignore_ascii_case("SessionDetails") => {
                RouteMatch::SessionDetails(parse_session_id(id).ok_or(RouteError::BadSessionId)?)
            }
            _ => return Err(RouteError::NotFound),
        }
    } else if area.eq_ignore_ascii_case("Gateway") {
        match (segs.next(), segs.next()) {
            (Some(r), None) if r.eq_ignore_ascii_case("Reports") => RouteMatch::Listing,
            _ => return Err(RouteError::NotFound),
        }
    } else {
        return Err(RouteError::NotFound);
    };
    Ok(found)
}

/// A canonical positive integer: digits only, no leading zero, fits in `i64`.
fn parse_session_id(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse::<u64>().ok().filter(|&n| n <= i64::MAX as u64)
}

/// The route gate: refuses requests outside the allowlist; inserts [`RouteMatch`]
/// (which parsing takes out again).
#[derive(Debug, Clone, Copy, Default)]
pub struct Route;

impl Gate for Route {
    fn pass(&self, req: &mut Request<()>) -> Result<Passed, BoxError> {
        let m = match_path(req.uri().path())?;
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(RouteError::MethodNotAllowed.into());
        }
        if let Some(trace) = req.extensions().get::<Trace>() {
            trace.set_route(&m);
        }
        req.extensions_mut().insert(m);
        Ok(Passed::Next)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn kinds_are_listed_in_order_with_distinct_labels() {
        // Metrics find a kind's series at position `kind as usize`.
        for (i, kind) in RouteKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
        let labels: std::collections::HashSet<_> =
            RouteKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), RouteKind::ALL.len());
    }

    #[test]
    fn allowlisted_shapes() {
        assert_eq!(
            match_path("/Chime/Report/InboundVsAnsweredChats").unwrap(),
            RouteMatch::Report("InboundVsAnsweredChats".into())
        );
        assert_eq!(
            match_path("/chime/report/GetQueueBotReports").unwrap(),
            RouteMatch::Discovery(Category::QueueBot)
        );
        assert_eq!(
            match_path("/Chime/Session/SessionDetails/12345").unwrap(),
            RouteMatch::SessionDetails(12345)
        );
        assert_eq!(
            match_path("/chime/gateway/reports").unwrap(),
            RouteMatch::Listing
        );
    }

    #[test]
    fn everything_else_is_not_found() {
        for p in [
            "",
            "/",
            "/Chime",
            "/Chime/",
            "/Chime/Report",
            "/Chime/Report/",
            "/Chime/Report/A/B",
            "/Chime/Report/../Admin",
            "/Chime/Report/%41bc",
            "/Chime/Report/Abc;x=1",
            "/Chime/Report/Abc.",
            "/Chime/Report/Abc%2e",
            "/Chime//Report/Abc",
            "/Chime/Report//Abc",
            "/Chime\\Report\\Abc",
            "/Chime/Report/Ab c",
            "/Chime/Report/Äbc",
            "/Chime/Admin/Users",
            "/Other/Report/Abc",
            "/Chime/Session/SessionDetails",
            "/Chime/Session/SessionDetails/1/x",
            "/Chime/Session/Other/1",
        ] {
            assert!(matches!(match_path(p), Err(RouteError::NotFound)), "{p}");
        }
        for p in [
            "/Chime/Session/SessionDetails/",
            "/Chime/Session/SessionDetails/0",
            "/Chime/Session/SessionDetails/007",
            "/Chime/Session/SessionDetails/-1",
            "/Chime/Session/SessionDetails/+1",
            "/Chime/Session/SessionDetails/1e3",
            "/Chime/Session/SessionDetails/abc",
            "/Chime/Session/SessionDetails/9223372036854775808",
            "/Chime/Session/SessionDetails/99999999999999999999",
        ] {
            assert!(
                matches!(match_path(p), Err(RouteError::BadSessionId)),
                "{p}"
            );
        }
        assert_eq!(
            match_path("/Chime/Session/SessionDetails/9223372036854775807").unwrap(),
            RouteMatch::SessionDetails(i64::MAX as u64)
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Chime".to_owned()),
            Just("cHIME".to_owned()),
            Just("Report".to_owned()),
            Just("Session".to_owned()),
            Just("SessionDetails".to_owned()),
            Just("Gateway".to_owned()),
            Just("Reports".to_owned()),
            Just("InboundVsAnsweredChats".to_owned()),
            Just("GetQueueBotReports".to_owned()),
            Just("getavailableglobalreports".to_owned()),
            Just("1".to_owned()),
            Just("007".to_owned()),
            Just("9223372036854775807".to_owned()),
            Just("9223372036854775808".to_owned()),
            Just("..".to_owned()),
            Just(String::new()),
            Just("%41".to_owned()),
            "[ -~]{0,6}",
            "\\PC{0,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the path, matching never panics, and a path it accepts
        /// is exactly one of the allowlisted shapes (ASCII case aside):
        /// nothing else a server might normalise differently gets through.
        #[test]
        fn only_exact_shapes_match(
            root in prop_oneof![3 => Just("Chime".to_owned()), 1 => segment()],
            area in prop_oneof![
                2 => Just("Report".to_owned()),
                2 => Just("Session".to_owned()),
                1 => Just("Gateway".to_owned()),
                1 => segment(),
            ],
            rest in prop_oneof![
                2 => prop::collection::vec(segment(), 0..3),
                1 => segment().prop_map(|id| vec!["SessionDetails".to_owned(), id]),
            ],
            sep in prop::sample::select(vec!["/", "/", "/", "/", "\\", "//"]),
        ) {
            let segs: Vec<String> = [root, area].into_iter().chain(rest).collect();
            let path = format!("/{}", segs.join(sep));
            let Ok(m) = match_path(&path) else { return Ok(()) };
            prop_assert!(
                path.bytes().all(|b| b == b'/' || b.is_ascii_alphanumeric()),
                "{}",
                path
            );
            let expected = match &m {
                RouteMatch::Report(name) => {
                    prop_assert!(catalog::is_report_name(name));
                    format!("/Chime/Report/{name}")
                }
                RouteMatch::Discovery(c) => format!("/Chime/Report/{}", c.discovery_route()),
                RouteMatch::SessionDetails(n) => {
                    prop_assert!(*n >= 1 && *n <= i64::MAX as u64);
                    // Canonical: the id as written is the number's own text.
                    let written = format!("/{n}");
                    prop_assert!(path.ends_with(&written), "{}", path);
                    format!("/Chime/Session/SessionDetails/{n}")
                }
                RouteMatch::Listing => "/Chime/Gateway/Reports".to_owned(),
            };
            prop_assert!(path.eq_ignore_ascii_case(&expected), "{} as {:?}", path, m);
        }
    }
}
