//! The canonical instant text, `YYYY-MM-DDTHH:MM:SS.fffZ`, written and read
//! on the stack.
//!
//! A request writes up to five instants (the canonical query's `start` and
//! `stop`, the audit line's `time`, `start` and `stop`) and reads two, and
//! turning a day number into its calendar date or back was most of what
//! each cost. Those instants fall on a handful of days, so each thread
//! remembers the last eight days it converted ([`MEMO`]); the conversion
//! itself is still jiff's, and only the time of day is arithmetic.

use std::cell::Cell;

use jiff::civil::Date;
use jiff::tz::Offset;
use jiff::Timestamp;

const SECONDS_PER_DAY: i64 = 86_400;

/// `00` to `99`, two bytes each.
static DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// Writes `n` (below 100) as two digits at `text[at..at + 2]`.
fn pair(text: &mut [u8], at: usize, n: usize) {
    text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[2 * n..2 * n + 2]);
}

/// A day since 1970-01-01 (day 0) and its `YYYY-MM-DD`.
#[derive(Clone, Copy)]
struct Day {
    number: i64,
    text: [u8; 10],
}

impl Day {
    /// Matches no day: no day has this number, and a date's text has digits.
    const NONE: Day = Day {
        number: i64::MIN,
        text: [0; 10],
    };
}

thread_local! {
    /// Days this thread converted lately, day `n` in slot `n % 8`, so that
    /// consecutive days never evict each other.
    static MEMO: [Cell<Day>; 8] = const { [const { Cell::new(Day::NONE) }; 8] };
}

fn slot(number: i64) -> usize {
    (number & 7) as usize
}

/// The `YYYY-MM-DD` of day `number`, when its year has four digits.
fn date_text(number: i64) -> Option<[u8; 10]> {
    MEMO.with(|memo| {
        let cell = &memo[slot(number)];
        let known = cell.get();
        if known.number == number {
            return Some(known.text);
        }
        let text = convert_day(number)?;
        cell.set(Day { number, text });
        Some(text)
    })
}

fn convert_day(number: i64) -> Option<[u8; 10]> {
    let midnight = Timestamp::from_second(number.checked_mul(SECONDS_PER_DAY)?).ok()?;
    let date = Offset::UTC.to_datetime(midnight).date();
    let year = usize::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let small = |n: i8| usize::from(n.unsigned_abs());
    let mut text = *b"0000-00-00";
    pair(&mut text, 0, year / 100);
    pair(&mut text, 2, year % 100);
    pair(&mut text, 5, small(date.month()));
    pair(&mut text, 8, small(date.day()));
    Some(text)
}

/// The day number of `text` when it is a valid `YYYY-MM-DD` (four-digit
/// year, two-digit month and day, each a real date).
fn day_number(text: &[u8; 10]) -> Option<i64> {
    MEMO.with(|memo| {
        if let Some(known) = memo.iter().map(Cell::get).find(|d| d.text == *text) {
            return Some(known.number);
        }
        let number = read_day(text)?;
        memo[slot(number)].set(Day {
            number,
            text: *text,
        });
        Some(number)
    })
}

fn read_day(text: &[u8; 10]) -> Option<i64> {
    if text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let year = i16::try_from(digits(&text[0..4])?).ok()?;
    let month = i8::try_from(digits(&text[5..7])?).ok()?;
    let day = i8::try_from(digits(&text[8..10])?).ok()?;
    let date = Date::new(year, month, day).ok()?;
    let midnight = Offset::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight()));
    Some(midnight.ok()?.as_second().div_euclid(SECONDS_PER_DAY))
}

/// `bytes` as a decimal number when every byte is a digit.
fn digits(bytes: &[u8]) -> Option<i32> {
    bytes.iter().try_fold(0i32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + i32::from(d - b'0'))
    })
}

/// `ts` as `2020-11-01T04:00:00.000Z` (milliseconds truncated), as
/// [`format_instant`](super::format_instant) writes it, when it is not
/// before 1970; `None` leaves it to `strftime`.
pub fn write(ts: Timestamp) -> Option<[u8; 24]> {
    let (seconds, nanos) = (ts.as_second(), ts.subsec_nanosecond());
    if seconds < 0 || nanos < 0 {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00.000Z";
    text[..10].copy_from_slice(&date_text(seconds / SECONDS_PER_DAY)?);
    let of_day = (seconds % SECONDS_PER_DAY) as usize;
    pair(&mut text, 11, of_day / 3600);
    pair(&mut text, 14, of_day / 60 % 60);
    pair(&mut text, 17, of_day % 60);
    let millis = (nanos / 1_000_000) as usize;
    text[20] = b'0' + (millis / 100) as u8;
    pair(&mut text, 21, millis % 100);
    Some(text)
}

/// `raw` when it is `YYYY-MM-DDTHH:MM:SS.fffZ` or `YYYY-MM-DDTHH:MM:SSZ`
/// with a real date from 1970 on and a time of day without a leap second;
/// `None` for anything else.
pub(super) fn read(raw: &str) -> Option<Timestamp> {
    let b = raw.as_bytes();
    let millis = match b.len() {
        20 => false,
        24 => true,
        _ => return None,
    };
    let punctuated = b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[b.len() - 1] == b'Z'
        && (!millis || b[19] == b'.');
    if !punctuated {
        return None;
    }
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = if millis {
        digits(&b[20..23])? * 1_000_000
    } else {
        0
    };
    let day = day_number(b[..10].try_into().ok()?).filter(|d| *d >= 0)?;
    let of_day = i64::from(hour * 3600 + minute * 60 + second);
    Timestamp::new(day * SECONDS_PER_DAY + of_day, nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days `n`, `n + 8`, `n + 16`… share a slot: each evicts the last, and
    /// every answer, remembered or not, is jiff's.
    #[test]
    fn days_sharing_a_slot_are_each_converted_right() {
        let slow = |ts: Timestamp| ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let first: Timestamp = "2020-11-01T04:00:00.250Z".parse().unwrap();
        for round in 0..3 {
            for k in 0..12i64 {
                let ts = first + jiff::SignedDuration::from_hours(24 * 8 * k + k);
                let text = write(ts).unwrap();
                let text = std::str::from_utf8(&text).unwrap();
                assert_eq!(text, slow(ts), "round {round}, day {k}");
                assert_eq!(read(text), Some(ts), "round {round}, day {k}");
            }
        }
    }

    /// A remembered date does not vouch for the time of day after it.
    #[test]
    fn a_remembered_date_still_checks_the_time() {
        assert!(read("2020-11-01T04:00:00Z").is_some());
        for raw in [
            "2020-11-01T24:00:00Z",
            "2020-11-01T04:60:00Z",
            "2020-11-01T04:00:60Z",
            "2020-11-01T04:00:00.0x0Z",
            "2020-11-01 04:00:00Z",
        ] {
            assert_eq!(read(raw), None, "{raw}");
        }
        assert_eq!(
            read("2020-11-01T23:59:59.999Z"),
            Some("2020-11-01T23:59:59.999Z".parse().unwrap())
        );
    }

    /// An invalid date is never remembered, so it is refused every time.
    #[test]
    fn an_invalid_date_is_refused_every_time() {
        for _ in 0..3 {
            assert_eq!(read("2021-02-29T00:00:00Z"), None);
            assert_eq!(read("2020-13-01T00:00:00Z"), None);
            assert_eq!(read("1969-12-31T23:59:59Z"), None);
        }
        assert!(read("2020-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn instants_before_1970_are_left_to_strftime() {
        for raw in ["1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z"] {
            let ts: Timestamp = raw.parse().unwrap();
            let before = ts - jiff::SignedDuration::from_millis(500);
            assert_eq!(write(before), None, "{raw}");
        }
        let last = Timestamp::MAX;
        assert_eq!(
            write(last).map(|t| String::from_utf8(t.to_vec()).unwrap()),
            Some(last.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        );
        assert_eq!(
            write(Timestamp::UNIX_EPOCH).as_ref().map(|t| &t[..]),
            Some(&b"1970-01-01T00:00:00.000Z"[..])
        );
    }
}
