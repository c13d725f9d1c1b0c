//! The simulated Chime's routes and deterministic data.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use jiff::civil::Date;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{Timestamp, ToSpan};

use super::message;
use crate::body::{self, Response};
use crate::catalog::{Catalog, Category, ReportDef};

/// Query parameters bound the ASP.NET way.
#[derive(Debug, Default)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: &str) -> Query {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            let bytes = s.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match (bytes[i], hex) {
                    (b'%', Some(b)) => {
                        out.push(b);
                        i += 3;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        Query(
            raw.split('&')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let (k, v) = s.split_once('=').unwrap_or((s, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The first value for `name`, name matched case-insensitively (as model binding does).
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn json(value: &serde_json::Value) -> Response {
    let mut resp = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn bad_request(field: &str, problem: &str) -> Response {
    let doc = serde_json::json!({
        "Message": "The request is invalid.",
        "ModelState": { field: [problem] },
    });
    let mut resp = json(&doc);
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp
}

fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "No HTTP resource was found that matches the request URI.",
    )
}

/// Where a [`Large`] body stops short of its end: after the chunk that
/// reaches this many bytes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cut {
    /// The connection breaks.
    Reset(u64),
    /// Nothing more is sent; the connection stays open.
    Stall(u64),
}

/// A [`super::Behavior::Large`] (or `ResetAfter`, `StallAfter`) answer to
/// give instead of a report's rows.
pub(super) struct Large {
    /// Bytes of CSV in all.
    pub(super) total: u64,
    /// Where the body stops short of `total`, if it does.
    pub(super) cut: Option<Cut>,
    /// Bytes of data in each chunk.
    pub(super) chunk: usize,
    /// Send a `Content-Length` rather than chunked framing.
    pub(super) announce_length: bool,
    /// Counts the bytes produced.
    pub(super) produced: Arc<AtomicU64>,
}

/// Routes one authenticated request.
pub(super) fn answer(catalog: &Catalog, path: &str, q: &Query, large: Option<Large>) -> Response {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        [chime, report, name]
            if chime.eq_ignore_ascii_case("Chime") && report.eq_ignore_ascii_case("Report") =>
        {
            if let Some(c) = Category::from_discovery_route(name) {
                return discovery(catalog, c, q);
            }
            match catalog.find(name) {
                Ok(def) => report_answer(&def, q, large),
                Err(_) => not_found(),
            }
        }
        [chime, session, details, id]
            if chime.eq_ignore_ascii_case("Chime")
                && session.eq_ignore_ascii_case("Session")
                && details.eq_ignore_ascii_case("SessionDetails") =>
        {
            session_details(id, q)
        }
        _ => not_found(),
    }
}

fn discovery(catalog: &Catalog, category: Category, q: &Query) -> Response {
    if category.is_per_queue()
        && q.get("queueId")
            .and_then(|v| v.parse::<i32>().ok())
            .is_none()
    {
        return bad_request("queueId", "The queueId field is required.");
    }
    let list: Vec<_> = catalog
        .reports()
        .iter()
        .filter(|r| r.category == category)
        .map(|r| {
            serde_json::json!({
                "Controller": format!("Report/{}", r.name),
                "Title": r.title,
                "ChartType": r.chart_type,
                "Category": category.label(),
                "StartOnly": r.start_only,
            })
        })
        .collect();
    json(&serde_json::Value::Array(list))
}

/// A model-binding failure: the field and Chime's message for it.
struct Invalid(&'static str, &'static str);

impl From<Invalid> for Response {
    fn from(Invalid(field, problem): Invalid) -> Response {
        bad_request(field, problem)
    }
}

fn zone(q: &Query) -> Result<TimeZone, Invalid> {
    match q.get("zone") {
        None => Ok(TimeZone::UTC),
        Some(id) => TimeZoneDatabase::bundled()
            .get(id)
            .map_err(|_| Invalid("zone", "The time zone id is not recognised.")),
    }
}

fn instant(q: &Query, name: &'static str) -> Result<Option<Timestamp>, Invalid> {
    q.get(name)
        .map(|v| {
            v.parse::<Timestamp>()
                .map_err(|_| Invalid(name, "The value is not a valid date."))
        })
        .transpose()
}

/// Deterministic pseudo-random count for a report, queue and day.
fn value(report: &str, queue: i64, day: Date, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    let day_key = i64::from(day.year()) * 400 + i64::from(day.day_of_year());
    for b in report
        .bytes()
        .chain(queue.to_le_bytes())
        .chain(day_key.to_le_bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    20 + h % 180
}

fn report_answer(def: &ReportDef, q: &Query, large: Option<Large>) -> Response {
    let queue = if def.category.is_per_queue() {
        match q.get("queueId").and_then(|v| v.trim().parse::<i32>().ok()) {
            Some(id) => i64::from(id),
            None => return bad_request("queueId", "The queueId field is required."),
        }
    } else {
        0
    };
    let tz = match zone(q) {
        Ok(tz) => tz,
        Err(invalid) => return invalid.into(),
    };
    let start = match instant(q, "start") {
        Ok(Some(t)) => t,
        Ok(None) => return bad_request("start", "The start field is required."),
        Err(invalid) => return invalid.into(),
    };
    let stop = match instant(q, "stop") {
        Ok(t) => t.unwrap_or_else(Timestamp::now),
        Err(invalid) => return invalid.into(),
    };
    let csv = q.get("csv").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let Some(large) = large {
        return super::large_answer(large);
    }
    let first = start.to_zoned(tz.clone()).date();
    let last = if def.start_only {
        first
    } else {
        stop.to_zoned(tz).date()
    };
    let mut days = Vec::new();
    let mut d = first;
    // Cap the rows so a silly window cannot exhaust the simulator.
    while d <= last && days.len() < 3700 {
        days.push(d);
        d = match d.checked_add(1.day()) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    let series = ["Inbound", "Answered"];
    let values = |i: u64, day: Date| {
        let v = value(&def.name, queue, day, 0);
        if i == 0 {
            v
        } else {
            v * (70 + value(&def.name, queue, day, 1) % 30) / 100
        }
    };
    if csv {
        let mut out = String::from("Date,QueueId,");
        out.push_str(&series.join(","));
        out.push('\n');
        for day in &days {
            out.push_str(&format!(
                "{day},{queue},{},{}\n",
                values(0, *day),
                values(1, *day)
            ));
        }
        let mut resp = Response::new(body::full(out));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        resp
    } else {
        let labels: Vec<String> = days.iter().map(|d| d.to_string()).collect();
        let data: Vec<_> = series
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let points: Vec<u64> = days.iter().map(|d| values(i as u64, *d)).collect();
                serde_json::json!({ "Name": name, "Data": points })
            })
            .collect();
        json(&serde_json::json!({
            "Title": def.title,
            "ChartType": def.chart_type,
            "Labels": labels,
            "Series": data,
        }))
    }
}

fn session_details(id: &str, q: &Query) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    if !(1..=10_000_000).contains(&id) {
        return message(StatusCode::NOT_FOUND, "Session not found.");
    }
    let tz = match zone(q) {
        Ok(tz) => tz,
        Err(invalid) => return invalid.into(),
    };
    let queue = (id - 1) % 3 + 1;
    let started =
        Timestamp::from_second(1_600_000_000 + id * 3_600).unwrap_or(Timestamp::UNIX_EPOCH);
    let ended = started.checked_add(7.minutes()).unwrap_or(started);
    let at = |t: Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    };
    let reply = started.checked_add(1.minute()).unwrap_or(started);
    json(&serde_json::json!({
        "SessionId": id,
        "QueueId": queue,
        "QueueName": format!("Queue {queue}"),
        "GuestName": format!("Guest {id}"),
        "AgentName": format!("Agent {}", id % 7 + 1),
        "StartedAt": at(started),
        "EndedAt": at(ended),
        "Messages": [
            { "From": "Guest", "At": at(started), "Text": "Hello, I need help with my order." },
            { "From": "Agent", "At": at(reply), "Text": "Happy to help. What is the order number?" },
        ],
    }))
}
