//! The audit line's JSON, written field by field into the worker's buffer.
//!
//! serde_json's string serializer inspects every byte through its escape
//! table, which made it the largest single cost of a request; audit strings
//! (ids, names, timestamps) almost never need escaping, so they are copied
//! as they are and only the rare string that needs it goes through
//! serde_json. The output is the same JSON either way.

use super::AuditRecord;

/// A JSON value as it appears in an audit line.
trait Value {
    fn write(&self, out: &mut Vec<u8>);
}

impl Value for str {
    fn write(&self, out: &mut Vec<u8>) {
        // No early exit, so the check vectorises.
        let plain = !self.bytes().fold(false, |bad, b| {
            bad | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if plain {
            out.push(b'"');
            out.extend_from_slice(self.as_bytes());
            out.push(b'"');
        } else {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, self);
        }
    }
}

impl Value for &str {
    fn write(&self, out: &mut Vec<u8>) {
        (**self).write(out);
    }
}

impl Value for String {
    fn write(&self, out: &mut Vec<u8>) {
        self.as_str().write(out);
    }
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
integer_value!(u16, u32, u64);

impl Value for bool {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

/// Seconds, to the microsecond, in plain decimal (`0.0125`, `3.0`):
/// integer formatting instead of the shortest round-trip float, which cost
/// more than the rest of the line's numbers together.
impl Value for f64 {
    fn write(&self, out: &mut Vec<u8>) {
        if !self.is_finite() {
            out.extend_from_slice(b"null");
            return;
        }
        // Saturates for absurd values; durations are far from it.
        let micros = (self.abs() * 1e6).round() as u64;
        if self.is_sign_negative() && micros > 0 {
            out.push(b'-');
        }
        out.extend_from_slice(itoa::Buffer::new().format(micros / 1_000_000).as_bytes());
        out.push(b'.');
        let mut frac = *b"000000";
        let mut n = micros % 1_000_000;
        for d in frac.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let keep = frac.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1);
        out.extend_from_slice(&frac[..keep]);
    }
}

impl Value for jiff::Timestamp {
    fn write(&self, out: &mut Vec<u8>) {
        match crate::request::instant_text(*self) {
            Some(text) => {
                out.push(b'"');
                out.extend_from_slice(&text);
                out.push(b'"');
            }
            None => crate::request::format_instant(*self).write(out),
        }
    }
}

impl<T: Value> Value for Option<T> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => v.write(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

/// Writes `{"first":…,"second":…}` from the record's fields, named as
/// they are in the struct; each key with its punctuation is one constant.
macro_rules! object {
    ($out:ident, $record:ident, $first:ident $(, $rest:ident)* $(,)?) => {
        $out.extend_from_slice(concat!("{\"", stringify!($first), "\":").as_bytes());
        $record.$first.write($out);
        $(
            $out.extend_from_slice(concat!(",\"", stringify!($rest), "\":").as_bytes());
            $record.$rest.write($out);
        )*
        $out.push(b'}');
    };
}

impl AuditRecord<'_> {
    /// Appends this record to `out` as one JSON object (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(512);
        let record = self;
        object!(
            out,
            record,
            time,
            request_id,
            trace_id,
            client,
            user,
            key,
            role,
            method,
            route,
            report,
            queue,
            start,
            stop,
            zone,
            csv,
            decision,
            reason,
            status,
            bytes,
            upstream_status,
            upstream_seconds,
            served,
            upstream_request_id,
            seconds,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &AuditRecord<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        r.write_json(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn every_field_is_written_and_parses_back() {
        let v = line(&AuditRecord {
            time: "2026-11-22T04:00:00Z".parse().unwrap(),
            start: Some("2020-11-01T04:00:00.5Z".parse().unwrap()),
            request_id: "r1",
            user: Some("ops"),
            queue: Some(7),
            csv: Some(true),
            status: Some(200),
            bytes: 649,
            upstream_seconds: Some(0.0125),
            seconds: 0.5,
            ..Default::default()
        });
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 24, "{v}");
        assert_eq!(v["time"], "2026-11-22T04:00:00.000Z");
        assert_eq!(v["user"], "ops");
        assert_eq!(v["queue"], 7);
        assert_eq!(v["csv"], true);
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 649);
        assert_eq!(v["upstream_seconds"], 0.0125);
        assert_eq!(v["seconds"], 0.5);
        assert_eq!(v["start"], "2020-11-01T04:00:00.500Z");
        assert!(v["stop"].is_null());
        assert!(v["key"].is_null() && v["zone"].is_null() && v["upstream_status"].is_null());
    }

    #[test]
    fn strings_that_need_it_are_escaped() {
        let nasty = "a\"b\\c\nd\u{1}é";
        let v = line(&AuditRecord {
            user: Some(nasty),
            reason: "ok",
            seconds: f64::NAN,
            ..Default::default()
        });
        assert_eq!(v["user"], nasty);
        assert!(v["seconds"].is_null(), "non-finite numbers are null");
        let mut out = Vec::new();
        for (secs, text) in [
            (0.0, "0.0"),
            (3.0, "3.0"),
            (0.0125, "0.0125"),
            (1.23456789, "1.234568"),
            (0.0000004, "0.0"),
            (-0.25, "-0.25"),
            (86_400.000_001, "86400.000001"),
        ] {
            out.clear();
            secs.write(&mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), text, "{secs}");
            let back: f64 = serde_json::from_slice(&out).unwrap();
            assert!((back - secs).abs() < 1e-6, "{secs}");
        }
        out.clear();
        AuditRecord {
            user: Some("x\ny"),
            ..Default::default()
        }
        .write_json(&mut out);
        assert!(!out.contains(&b'\n'), "one line per record");
    }
}
