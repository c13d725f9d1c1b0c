//! Parse: the request target becomes a typed [`GatewayRequest`].
//!
//! Uses the route ([`RouteMatch`]) and the report [`Catalog`]; every value is
//! parsed into its type (`queueId` a canonical positive 32-bit integer,
//! `start`/`stop` instants, `csv` a boolean, `zone` a tz-database zone).
//! Which parameters a route accepts is fixed here. Rejects with 404
//! `unknown_report` and the 400 family of [`QueryError`], each naming the
//! parameter and showing a valid example. Adds the [`GatewayRequest`] to the
//! request's extensions; nothing downstream looks at the raw query again,
//! and the upstream receives only [`GatewayRequest::upstream_path_and_query`].

mod instant;
mod query;
pub mod time;

pub use instant::write as instant_text;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use http::Request;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;

use crate::catalog::{Catalog, CatalogHandle, Category, ReportDef};
use crate::gate::{Gate, Passed};
use crate::observe::Trace;
use crate::route::{RouteKind, RouteMatch};
use crate::BoxError;
use query::Name;

/// A parameter problem; every message names the parameter.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not decodable at all.
    #[error("malformed query string: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A name the gateway does not know.
    #[error("unknown parameter `{name}`; accepted parameters are queueId, start, stop (or end), csv and zone")]
    UnknownParameter {
        /// The name, made printable.
        name: String,
    },
    /// The same parameter twice (after decoding and case folding).
    #[error("parameter `{name}` is given more than once")]
    DuplicateParameter {
        /// Canonical name.
        name: &'static str,
    },
    /// Two parameters that mean the same thing.
    #[error("give either `{a}` or `{b}`, not both")]
    ConflictingParameters {
        /// One.
        a: &'static str,
        /// The other.
        b: &'static str,
    },
    /// A required parameter is absent.
    #[error("parameter `{name}` is required, e.g. `{example}`")]
    MissingParameter {
        /// Canonical name.
        name: &'static str,
        /// A valid example.
        example: &'static str,
    },
    /// A value that does not parse.
    #[error("parameter `{name}`: {problem}; for example `{example}`")]
    BadValue {
        /// Canonical name.
        name: &'static str,
        /// What is wrong with the value (never quotes it).
        problem: String,
        /// A valid example.
        example: &'static str,
    },
    /// A known parameter this route does not take.
    #[error("parameter `{name}` is not accepted by {route}")]
    NotAccepted {
        /// Canonical name.
        name: &'static str,
        /// Which kind of route.
        route: &'static str,
    },
}

/// A time-zone id from the bundled tz database, in canonical spelling.
#[derive(Debug, Clone)]
pub struct Zone {
    name: Arc<str>,
    tz: TimeZone,
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Zone {}

impl Zone {
    /// Looks `id` up case-insensitively in the tz database bundled with the binary.
    pub fn parse(id: &str) -> Option<Zone> {
        static DB: std::sync::OnceLock<TimeZoneDatabase> = std::sync::OnceLock::new();
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let tz = DB.get_or_init(TimeZoneDatabase::bundled).get(id).ok()?;
        let name = tz.iana_name()?.into();
        Some(Zone { name, tz })
    }

    /// Canonical id (`America/New_York`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

/// What the request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A report from the catalog.
    Report(Arc<ReportDef>),
    /// A discovery route.
    Discovery(Category),
    /// One session's details.
    SessionDetails(u64),
}

impl Target {
    /// Its name for metrics and logs: the report's canonical name, the
    /// discovery route, or `SessionDetails`.
    pub fn name(&self) -> &str {
        match self {
            Target::Report(def) => &def.name,
            Target::Discovery(c) => c.discovery_route(),
            Target::SessionDetails(_) => "SessionDetails",
        }
    }

    /// The route kind, as in [`RouteMatch::kind`] (a bounded metric label).
    pub fn kind(&self) -> RouteKind {
        match self {
            Target::Report(_) => RouteKind::Report,
            Target::Discovery(_) => RouteKind::Discovery,
            Target::SessionDetails(_) => RouteKind::Session,
        }
    }
}

/// Typed parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `queueId`.
    pub queue_id: Option<u32>,
    /// `start`.
    pub start: Option<Timestamp>,
    /// `stop` (or `end`).
    pub stop: Option<Timestamp>,
    /// `csv=true`.
    pub csv: bool,
    /// `zone`.
    pub zone: Option<Zone>,
}

/// A fully parsed request: the only thing the ACL and the proxy look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRequest {
    /// Route and report.
    pub target: Target,
    /// Parameters.
    pub params: Params,
    /// The name the end of the window is sent under (`stop` or `end`).
    pub end_name: &'static str,
    /// Parameters the client sent that are deliberately not forwarded
    /// (`stop` on a StartOnly report); the response says so in a header.
    pub ignored: Vec<&'static str>,
}

/// How requests are parsed: the `[request]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestOptions {
    /// Forward the end of the window as `stop` (default, as in Chime's examples) or `end`.
    pub end_name: &'static str,
    /// The longest window (`start` to `stop`, or to now).
    #[serde(serialize_with = "crate::config::ser_signed")]
    pub max_window: jiff::SignedDuration,
    /// Per-report maximum windows, by lower-cased report name.
    #[serde(serialize_with = "crate::config::ser_signed_map")]
    pub max_window_per_report: std::collections::HashMap<String, jiff::SignedDuration>,
    /// `start` when the client gives none (a time expression); `None`: 400.
    pub default_start: Option<String>,
    /// Whether reports are CSV when neither `csv` nor `Accept: text/csv` says.
    pub csv_default: bool,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            end_name: "stop",
            max_window: jiff::SignedDuration::from_hours(366 * 24),
            max_window_per_report: std::collections::HashMap::new(),
            default_start: None,
            csv_default: false,
        }
    }
}

/// What a parse needs besides the request target.
#[derive(Debug)]
pub struct ParseContext<'a> {
    /// Now, for relative times and the window limit.
    pub now: Now<'a>,
    /// The client sent `Accept: text/csv`.
    pub accept_csv: bool,
    /// Options.
    pub options: &'a RequestOptions,
}

/// "Now" for one parse, read from the clock only when the request needs it:
/// a window given as two instants (what scheduled report jobs send) needs
/// no reading at all, and a relative one needs the same reading for
/// `start` and `stop`.
#[derive(Debug)]
pub struct Now<'a> {
    clock: &'a dyn crate::clock::Clock,
    read: std::cell::OnceCell<Timestamp>,
}

impl<'a> Now<'a> {
    /// Always `ts` (its clock is never read).
    pub fn at(ts: Timestamp) -> Self {
        Now {
            clock: &crate::clock::SystemClock,
            read: std::cell::OnceCell::from(ts),
        }
    }

    /// `clock`'s reading at the first [`Now::get`].
    pub fn from_clock(clock: &'a dyn crate::clock::Clock) -> Self {
        Now {
            clock,
            read: std::cell::OnceCell::new(),
        }
    }

    /// Now.
    pub fn get(&self) -> Timestamp {
        *self.read.get_or_init(|| self.clock.now())
    }
}

/// Whether an `Accept` header asks for CSV (`text/csv` with a non-zero q).
pub fn accepts_csv(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            media.eq_ignore_ascii_case("text/csv") && !q_zero
        })
}

/// Formats an instant the way Chime's examples do: `2020-11-01T04:00:00.000Z`.
pub fn format_instant(ts: Timestamp) -> String {
    let mut out = String::with_capacity(24);
    write_instant(&mut out, ts);
    out
}

/// Appends `ts` as [`format_instant`] writes it. Only digits, `-`, `T`,
/// `:`, `.` and `Z`, so it needs no escaping in a query or in JSON.
pub fn write_instant(out: &mut String, ts: Timestamp) {
    match instant_text(ts) {
        Some(text) => out.push_str(std::str::from_utf8(&text).unwrap_or_default()),
        None => {
            let _ = write!(out, "{}", ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, `:` and `/`
/// (`+` in particular, which ASP.NET would read as a space).
fn push_encoded(out: &mut String, value: &str) {
    let safe =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/');
    if value.bytes().all(safe) {
        out.push_str(value);
        return;
    }
    for b in value.bytes() {
        if safe(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

impl GatewayRequest {
    /// The upstream path and canonical query under `prefix` (e.g. `/Chime`).
    /// Parameters always appear in the order queueId, start, stop, csv, zone.
    pub fn upstream_path_and_query(&self, prefix: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + 128);
        out.push_str(prefix);
        match &self.target {
            Target::Report(r) => {
                out.push_str("/Report/");
                out.push_str(&r.name);
            }
            Target::Discovery(c) => {
                out.push_str("/Report/");
                out.push_str(c.discovery_route());
            }
            Target::SessionDetails(id) => {
                let _ = write!(out, "/Session/SessionDetails/{id}");
            }
        }
        let p = &self.params;
        let mut sep = '?';
        // `name=` after the right separator; the caller writes the value.
        let mut name = |out: &mut String, name: &str| {
            out.push(sep);
            sep = '&';
            out.push_str(name);
            out.push('=');
        };
        if let Some(q) = p.queue_id {
            name(&mut out, "queueId");
            out.push_str(itoa::Buffer::new().format(q));
        }
        if let Some(t) = p.start {
            name(&mut out, "start");
            write_instant(&mut out, t);
        }
        if let Some(t) = p.stop {
            name(&mut out, self.end_name);
            write_instant(&mut out, t);
        }
        if p.csv {
            name(&mut out, "csv");
            out.push_str("true");
        }
        if let Some(z) = &p.zone {
            name(&mut out, "zone");
            push_encoded(&mut out, z.name());
        }
        out
    }
}

fn bad(name: Name, problem: &str) -> QueryError {
    QueryError::BadValue {
        name: name.as_str(),
        problem: problem.to_owned(),
        example: query::example(name),
    }
}

/// A canonical positive 32-bit integer: no sign, no leading zero, digits only.
fn parse_queue_id(v: &str) -> Result<u32, QueryError> {
    let canonical = !v.is_empty()
        && v.len() <= 10
        && !v.starts_with('0')
        && v.bytes().all(|b| b.is_ascii_digit());
    v.parse::<u32>()
        .ok()
        .filter(|&n| canonical && n <= i32::MAX as u32)
        .ok_or_else(|| {
            bad(
                Name::QueueId,
                "must be a positive whole number without sign, leading zeros or separators",
            )
        })
}

/// `366 days`, `36 hours`, or humantime's spelling for odd lengths.
fn describe(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs();
    match (secs % 86_400, secs % 3_600) {
        (0, _) => format!("{} days", secs / 86_400),
        (_, 0) => format!("{} hours", secs / 3_600),
        _ => humantime::format_duration(d.unsigned_abs()).to_string(),
    }
}

fn parse_csv(v: &str) -> Result<bool, QueryError> {
    const TRUE: [&str; 3] = ["true", "1", "yes"];
    const FALSE: [&str; 3] = ["false", "0", "no"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(v)) {
        Ok(true)
    } else if FALSE.iter().any(|t| t.eq_ignore_ascii_case(v)) {
        Ok(false)
    } else {
        Err(bad(Name::Csv, "must be true or false (also 1/0, yes/no)"))
    }
}

/// What a route takes.
struct Accepts {
    route: &'static str,
    queue: Presence,
    window: Presence,
    stop: bool,
    csv: bool,
    zone: bool,
}

#[derive(PartialEq, Eq)]
enum Presence {
    Required,
    Refused,
}

fn accepts(target: &Target) -> Accepts {
    let (route, queue, window, stop, csv, zone) = match target {
        Target::Report(r) if r.category.is_per_queue() => (
            "per-queue reports",
            Presence::Required,
            Presence::Required,
            !r.start_only,
            true,
            true,
        ),
        Target::Report(r) => (
            "tenant-wide reports",
            Presence::Refused,
            Presence::Required,
            !r.start_only,
            true,
            true,
        ),
        Target::Discovery(Category::Global) => (
            "GetAvailableGlobalReports",
            Presence::Refused,
            Presence::Refused,
            false,
            false,
            false,
        ),
        Target::Discovery(_) => (
            "queue discovery routes",
            Presence::Required,
            Presence::Refused,
            false,
            false,
            false,
        ),
        Target::SessionDetails(_) => (
            "SessionDetails",
            Presence::Refused,
            Presence::Refused,
            false,
            false,
            true,
        ),
    };
    Accepts {
        route,
        queue,
        window,
        stop,
        csv,
        zone,
    }
}

/// [`parse_with`] at the current time with default options and no `Accept`.
pub fn parse(
    route: &RouteMatch,
    raw_query: Option<&str>,
    catalog: &Catalog,
) -> Result<GatewayRequest, BoxError> {
    let options = RequestOptions::default();
    let ctx = ParseContext {
        now: Now::from_clock(&crate::clock::SystemClock),
        accept_csv: false,
        options: &options,
    };
    parse_with(route, raw_query, catalog, &ctx)
}

/// Parses a routed request's query into a [`GatewayRequest`]. Fails with
/// [`crate::catalog::UnknownReport`] (404) or [`QueryError`] (400).
pub fn parse_with(
    route: &RouteMatch,
    raw_query: Option<&str>,
    catalog: &Catalog,
    ctx: &ParseContext<'_>,
) -> Result<GatewayRequest, BoxError> {
    let target = match route {
        RouteMatch::Report(name) => Target::Report(catalog.find(name)?),
        RouteMatch::Discovery(c) => Target::Discovery(*c),
        RouteMatch::SessionDetails(id) => Target::SessionDetails(*id),
        RouteMatch::Listing => return Err("the report listing is answered before parsing".into()),
    };
    Ok(parse_params(target, raw_query, ctx)?)
}

fn parse_params(
    target: Target,
    raw_query: Option<&str>,
    ctx: &ParseContext<'_>,
) -> Result<GatewayRequest, QueryError> {
    let mut pairs = query::parse(raw_query.unwrap_or(""))?;
    let rules = accepts(&target);
    let refuse = |name: Name| QueryError::NotAccepted {
        name: name.as_str(),
        route: rules.route,
    };
    let mut params = Params::default();

    let queue = pairs.take(Name::QueueId);
    params.queue_id = match (queue, &rules.queue) {
        (Some(v), Presence::Required) => Some(parse_queue_id(&v)?),
        (Some(_), Presence::Refused) => return Err(refuse(Name::QueueId)),
        (None, Presence::Required) => {
            return Err(QueryError::MissingParameter {
                name: "queueId",
                example: query::example(Name::QueueId),
            })
        }
        (None, Presence::Refused) => None,
    };

    // The zone first: dates and relative times are read in it.
    if let Some(v) = pairs.take(Name::Zone) {
        if !rules.zone {
            return Err(refuse(Name::Zone));
        }
        params.zone = Some(Zone::parse(&v).ok_or_else(|| {
            bad(
                Name::Zone,
                "is not a time-zone id of the IANA tz database (see the TZ identifier column of https://en.wikipedia.org/wiki/List_of_tz_database_time_zones)",
            )
        })?);
    }
    let tz = params
        .zone
        .as_ref()
        .map_or(jiff::tz::TimeZone::UTC, |z| z.tz().clone());

    let mut ignored = Vec::new();
    let start = pairs.take(Name::Start);
    let stop = match (pairs.take(Name::Stop), pairs.take(Name::End)) {
        (Some(_), Some(_)) => {
            return Err(QueryError::ConflictingParameters {
                a: "stop",
                b: "end",
            })
        }
        (Some(v), None) => Some((Name::Stop, v)),
        (None, Some(v)) => Some((Name::End, v)),
        (None, None) => None,
    };
    if rules.window == Presence::Refused {
        if start.is_some() {
            return Err(refuse(Name::Start));
        }
        if let Some((name, _)) = stop {
            return Err(refuse(name));
        }
    } else {
        let (start_name, start_raw) = match (start, &ctx.options.default_start) {
            (Some(v), _) => (Name::Start, v),
            (None, Some(default)) => (Name::Start, Cow::Borrowed(default.as_str())),
            (None, None) => {
                return Err(QueryError::MissingParameter {
                    name: "start",
                    example: query::example(Name::Start),
                })
            }
        };
        let start = time::evaluate(&start_raw, time::End::Start, || ctx.now.get(), &tz)
            .map_err(|problem| bad(start_name, &problem))?;
        params.start = Some(start);
        match stop {
            // A StartOnly report covers the day of `start`; Chime ignores a
            // stop, so the gateway drops it and says so in a response header.
            Some((name, _)) if !rules.stop => ignored.push(name.as_str()),
            Some((name, v)) => {
                let stop = time::evaluate(&v, time::End::Stop, || ctx.now.get(), &tz)
                    .map_err(|problem| bad(name, &problem))?;
                if start > stop {
                    return Err(bad(name, "must not be before start"));
                }
                params.stop = Some(stop);
            }
            None => {}
        }
        let limit = match &target {
            Target::Report(r) => {
                crate::catalog::by_report_name(&ctx.options.max_window_per_report, &r.name)
                    .copied()
                    .unwrap_or(ctx.options.max_window)
            }
            _ => ctx.options.max_window,
        };
        let until = params.stop.unwrap_or_else(|| ctx.now.get()).max(start);
        if rules.stop && until.duration_since(start) > limit {
            return Err(QueryError::BadValue {
                name: if params.stop.is_some() {
                    "stop"
                } else {
                    "start"
                },
                problem: format!(
                    "the window from start to {} is longer than this report's maximum of {}",
                    if params.stop.is_some() { "stop" } else { "now" },
                    describe(limit)
                ),
                example: "start=today-30d&stop=today",
            });
        }
    }

    params.csv = ctx.options.csv_default || (rules.csv && ctx.accept_csv);
    if let Some(v) = pairs.take(Name::Csv) {
        if !rules.csv {
            return Err(refuse(Name::Csv));
        }
        params.csv = parse_csv(&v)?;
    }
    if !rules.csv {
        params.csv = false;
    }
    Ok(GatewayRequest {
        target,
        params,
        end_name: ctx.options.end_name,
        ignored,
    })
}

/// The parse gate (see the module docs).
#[derive(Debug, Clone)]
pub struct Parse {
    catalog: Arc<CatalogHandle>,
    options: Arc<RequestOptions>,
    clock: Arc<dyn crate::clock::Clock>,
}

impl Parse {
    /// Parses against `catalog` with `options`, reading "now" from `clock`.
    pub fn new(
        catalog: Arc<CatalogHandle>,
        options: Arc<RequestOptions>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        Parse {
            catalog,
            options,
            clock,
        }
    }
}

impl Gate for Parse {
    fn pass(&self, req: &mut Request<()>) -> Result<Passed, BoxError> {
        // Taken, not read: nothing after parsing looks at the route, and the
        // typed request then takes its place in the extensions' map (which
        // would otherwise grow past its first three slots).
        let route = req
            .extensions_mut()
            .remove::<RouteMatch>()
            .ok_or("parse reached without a route")?;
        let ctx = ParseContext {
            now: Now::from_clock(&*self.clock),
            accept_csv: accepts_csv(req.headers()),
            options: &self.options,
        };
        let typed = parse_with(&route, req.uri().query(), &self.catalog.current(), &ctx)?;
        if let Some(trace) = req.extensions().get::<Trace>() {
            trace.set_request(&typed);
        }
        req.extensions_mut().insert(typed);
        Ok(Passed::Next)
    }
}

#[cfg(test)]
mod tests;
