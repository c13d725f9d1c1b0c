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

impl Value for f64 {
    fn write(&self, out: &mut Vec<u8>) {
        if self.is_finite() {
            // Shortest round-trip form, as serde_json writes it.
            out.extend_from_slice(ryu::Buffer::new().format_finite(*self).as_bytes());
        } else {
            out.extend_from_slice(b"null");
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

/// One object being written; keys are the record's own field names.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Object<'_> {
    fn field(&mut self, key: &'static str, value: &impl Value) -> &mut Self {
        self.out.push(if self.first { b'{' } else { b',' });
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        value.write(self.out);
        self
    }
}

impl AuditRecord<'_> {
    /// Appends this record to `out` as one JSON object (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Object { out, first: true };
        o.field("time", &self.time)
            .field("request_id", &self.request_id)
            .field("trace_id", &self.trace_id)
            .field("client", &self.client)
            .field("user", &self.user)
            .field("key", &self.key)
            .field("role", &self.role)
            .field("method", &self.method)
            .field("route", &self.route)
            .field("report", &self.report)
            .field("queue", &self.queue)
            .field("start", &self.start)
            .field("stop", &self.stop)
            .field("zone", &self.zone)
            .field("csv", &self.csv)
            .field("decision", &self.decision)
            .field("reason", &self.reason)
            .field("status", &self.status)
            .field("bytes", &self.bytes)
            .field("upstream_status", &self.upstream_status)
            .field("upstream_seconds", &self.upstream_seconds)
            .field("served", &self.served)
            .field("seconds", &self.seconds);
        o.out.push(b'}');
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
            time: "2026-11-22T04:00:00.000Z".into(),
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
        assert_eq!(o.len(), 23, "{v}");
        assert_eq!(v["time"], "2026-11-22T04:00:00.000Z");
        assert_eq!(v["user"], "ops");
        assert_eq!(v["queue"], 7);
        assert_eq!(v["csv"], true);
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 649);
        assert_eq!(v["upstream_seconds"], 0.0125);
        assert_eq!(v["seconds"], 0.5);
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
        AuditRecord {
            user: Some("x\ny"),
            ..Default::default()
        }
        .write_json(&mut out);
        assert!(!out.contains(&b'\n'), "one line per record");
    }
}
