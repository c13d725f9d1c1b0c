//! Report windows: the accepted spellings of `start` and `stop`, and the
//! rules that turn each into one UTC instant.
//!
//! Grammar (anchors case-insensitive; units case-sensitive so `m` minutes
//! and `M` months differ):
//!
//! ```text
//! time     = instant | date | datetime | relative
//! instant  = RFC 3339 / ISO 8601 with `Z` or an offset, fractional seconds optional
//! date     = YYYY-MM-DD                       a whole day in `zone` (else UTC)
//! datetime = YYYY-MM-DDTHH:MM[:SS[.fff]]      a wall-clock time in `zone` (else UTC)
//! relative = anchor *( ("+" / "-") 1*6DIGIT unit )     at most 4 offsets
//! anchor   = now | today | yesterday | tomorrow | startOfWeek | startOfMonth | startOfYear
//! unit     = s | m | h | d | w | M | y
//! ```
//!
//! What each means as `start` and as `stop`:
//!
//! - an instant (`now`, `now-2h`, a timestamp, `today+8h`) is itself;
//! - a day (`2020-11-01`, `today`, `yesterday`, `today-7d`) is its first
//!   instant as `start` and its last millisecond as `stop`, so `stop=today`
//!   covers today and `stop=2020-11-30` covers the 30th;
//! - a boundary (`startOfMonth`, `startOfMonth-1M`, `startOfWeek`,
//!   `startOfYear`) is itself as `start`, and one millisecond before it as
//!   `stop` ("up to the boundary", in Chime's inclusive `.999` style).
//!
//! Days, weeks, months and years are calendar arithmetic in the zone;
//! hours, minutes and seconds are elapsed time. Wall-clock times that fall
//! in a DST gap move forward by the gap's length; those that occur twice in
//! an overlap take the earlier occurrence (jiff's "compatible" rule, as RFC
//! 5545 and most calendars). A day that begins inside a gap begins at the
//! first instant that exists. Results outside 1970–9999 are refused.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, ToSpan, Unit, Zoned};

// `YYYY-MM-DDTHH:MM:SS.fffZ` or `YYYY-MM-DDTHH:MM:SSZ` from 1970 on: the
// form Chime's clients and the gateway itself write. It is an instant, in
// range and whole milliseconds, so it is its own value for either end, and
// reading it on the stack costs a fraction of jiff's general parser.
// Anything else (other spellings, invalid dates, `:60`) is `None` and goes
// through `evaluate_any`.
use super::instant::read as canonical_instant;

/// Which end of the window a value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `start`.
    Start,
    /// `stop` / `end`.
    Stop,
}

/// What an expression denotes before the start/stop rule is applied.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Instant(Timestamp),
    Day(Date),
    Boundary(Zoned),
}

const MAX_OFFSETS: usize = 4;
const MAX_AMOUNT: i64 = 999_999;

/// Evaluates `raw` for `end`, with `now` and `tz` for zone-relative forms;
/// `now` is called only for a form other than the canonical instant.
/// The error is the problem, for a 400 that names the parameter.
pub fn evaluate(
    raw: &str,
    end: End,
    now: impl FnOnce() -> Timestamp,
    tz: &TimeZone,
) -> Result<Timestamp, String> {
    match canonical_instant(raw) {
        Some(ts) => Ok(ts),
        None => evaluate_any(raw, end, now(), tz),
    }
}

/// [`evaluate`] for every spelling.
fn evaluate_any(raw: &str, end: End, now: Timestamp, tz: &TimeZone) -> Result<Timestamp, String> {
    let value = parse(raw, now, tz)?;
    let ts = match (value, end) {
        (Value::Instant(ts), _) => ts,
        (Value::Day(d), End::Start) => start_of_day(d, tz)?,
        (Value::Day(d), End::Stop) => {
            let next = d.tomorrow().map_err(|_| out_of_range())?;
            start_of_day(next, tz)? - SignedDuration::from_millis(1)
        }
        (Value::Boundary(z), End::Start) => z.timestamp(),
        (Value::Boundary(z), End::Stop) => z.timestamp() - SignedDuration::from_millis(1),
    };
    let year = ts.to_zoned(TimeZone::UTC).year();
    if ts < Timestamp::UNIX_EPOCH || year > 9999 {
        return Err(out_of_range());
    }
    // Chime's format has milliseconds; round down so a stop never grows.
    ts.round(
        jiff::TimestampRound::new()
            .smallest(Unit::Millisecond)
            .mode(jiff::RoundMode::Floor),
    )
    .map_err(|_| out_of_range())
}

fn out_of_range() -> String {
    "must be between the years 1970 and 9999".to_owned()
}

fn start_of_day(d: Date, tz: &TimeZone) -> Result<Timestamp, String> {
    d.to_zoned(tz.clone())
        .and_then(|z| z.start_of_day())
        .map(|z| z.timestamp())
        .map_err(|_| out_of_range())
}

fn parse(raw: &str, now: Timestamp, tz: &TimeZone) -> Result<Value, String> {
    if raw.len() > 64 {
        return Err("is too long".to_owned());
    }
    if let Ok(ts) = raw.parse::<Timestamp>() {
        return Ok(Value::Instant(ts));
    }
    let looks_absolute = raw.as_bytes().first().is_some_and(u8::is_ascii_digit);
    // Only the extended form (YYYY-MM-DD...) for dates and wall-clock times:
    // "20201101" or "1604203200" are too easily something else.
    if looks_absolute && raw.get(4..5) == Some("-") {
        if raw.len() == 10 {
            if let Ok(d) = raw.parse::<Date>() {
                return Ok(Value::Day(d));
            }
        }
        if let Ok(dt) = raw.parse::<DateTime>() {
            let z = dt.to_zoned(tz.clone()).map_err(|_| out_of_range())?;
            return Ok(Value::Instant(z.timestamp()));
        }
        return Err(
            "must be an ISO-8601 date-time (2020-11-01T04:00:00Z, with any offset), a date (2020-11-01) or a relative time (today-7d)"
                .to_owned(),
        );
    }
    relative(raw, now, tz)
}

fn relative(raw: &str, now: Timestamp, tz: &TimeZone) -> Result<Value, String> {
    let unknown = || {
        "is not a time: use an ISO-8601 date-time, a date, or now/today/yesterday/tomorrow/startOfWeek/startOfMonth/startOfYear with offsets like -7d".to_owned()
    };
    let split = raw.find(['+', '-']).unwrap_or(raw.len());
    let (anchor, mut rest) = raw.split_at(split);
    let here = now.to_zoned(tz.clone());
    let today = here.date();
    let mut value = match anchor.to_ascii_lowercase().as_str() {
        "now" => Value::Instant(now),
        "today" => Value::Day(today),
        "yesterday" => Value::Day(today.yesterday().map_err(|_| out_of_range())?),
        "tomorrow" => Value::Day(today.tomorrow().map_err(|_| out_of_range())?),
        "startofweek" => {
            let back = i64::from(today.weekday().to_monday_zero_offset());
            let monday = today.checked_sub(back.days()).map_err(|_| out_of_range())?;
            Value::Boundary(boundary(monday, tz)?)
        }
        "startofmonth" => Value::Boundary(boundary(today.first_of_month(), tz)?),
        "startofyear" => Value::Boundary(boundary(today.first_of_year(), tz)?),
        _ => return Err(unknown()),
    };
    let mut offsets = 0;
    while !rest.is_empty() {
        offsets += 1;
        if offsets > MAX_OFFSETS {
            return Err(format!("has more than {MAX_OFFSETS} offsets"));
        }
        // Each offset starts with its sign (the first one is where `rest`
        // was split off; the others follow a unit, which could be anything).
        let sign: i64 = match rest.as_bytes().first() {
            Some(b'-') => -1,
            Some(b'+') => 1,
            _ => return Err(unknown()),
        };
        let body = &rest[1..];
        let digits = body.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return Err("offsets are a sign, 1 to 6 digits and a unit, like -7d or +2h".to_owned());
        }
        let amount: i64 = body[..digits].parse().map_err(|_| unknown())?;
        if amount > MAX_AMOUNT {
            return Err(unknown());
        }
        let unit = body[digits..]
            .chars()
            .next()
            .ok_or_else(|| "an offset needs a unit: s, m, h, d, w, M or y".to_owned())?;
        rest = &body[digits + unit.len_utf8()..];
        value = apply(value, sign * amount, unit, tz)?;
    }
    Ok(value)
}

fn boundary(d: Date, tz: &TimeZone) -> Result<Zoned, String> {
    d.to_zoned(tz.clone())
        .and_then(|z| z.start_of_day())
        .map_err(|_| out_of_range())
}

fn apply(value: Value, n: i64, unit: char, tz: &TimeZone) -> Result<Value, String> {
    // Fallible constructors: an amount past jiff's range is a 400, not a panic.
    let calendar: Option<Span> = match unit {
        'd' => Some(Span::new().try_days(n).map_err(|_| out_of_range())?),
        'w' => Some(Span::new().try_weeks(n).map_err(|_| out_of_range())?),
        'M' => Some(Span::new().try_months(n).map_err(|_| out_of_range())?),
        'y' => Some(Span::new().try_years(n).map_err(|_| out_of_range())?),
        _ => None,
    };
    let exact = match unit {
        's' => Some(SignedDuration::from_secs(n)),
        'm' => Some(SignedDuration::from_mins(n)),
        'h' => Some(SignedDuration::from_hours(n)),
        _ => None,
    };
    match (value, calendar, exact) {
        (Value::Day(d), Some(span), _) => d
            .checked_add(span)
            .map(Value::Day)
            .map_err(|_| out_of_range()),
        (Value::Boundary(z), Some(span), _) => z
            .checked_add(span)
            .map(Value::Boundary)
            .map_err(|_| out_of_range()),
        (Value::Instant(ts), Some(span), _) => ts
            .to_zoned(tz.clone())
            .checked_add(span)
            .map(|z| Value::Instant(z.timestamp()))
            .map_err(|_| out_of_range()),
        (Value::Day(d), None, Some(dur)) => {
            let ts = start_of_day(d, tz)?;
            ts.checked_add(dur)
                .map(Value::Instant)
                .map_err(|_| out_of_range())
        }
        (Value::Boundary(z), None, Some(dur)) => z
            .timestamp()
            .checked_add(dur)
            .map(Value::Instant)
            .map_err(|_| out_of_range()),
        (Value::Instant(ts), None, Some(dur)) => ts
            .checked_add(dur)
            .map(Value::Instant)
            .map_err(|_| out_of_range()),
        _ => Err(format!("`{unit}` is not a unit: use s, m, h, d, w, M or y")),
    }
}

#[cfg(test)]
mod tests;
