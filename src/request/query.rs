//! Strict query-string tokenising.
//!
//! Splits on `&` only (`;` is an ordinary byte, and so is refused by every
//! value parser); percent-decoding accepts exactly `%` + two hex digits,
//! the result must be UTF-8 without control characters; `+` is a literal
//! plus, never a space. Names are folded to their canonical spelling, and a
//! name seen twice after decoding and folding is refused, so no reading of
//! "first wins" or "last wins" can differ from ours.

use std::borrow::Cow;

use super::QueryError;
use crate::split;

/// The parameters the gateway understands, in their canonical spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    QueueId,
    Start,
    Stop,
    End,
    Csv,
    Zone,
}

impl Name {
    /// Every name.
    const ALL: [Name; 6] = [
        Name::QueueId,
        Name::Start,
        Name::Stop,
        Name::End,
        Name::Csv,
        Name::Zone,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Name::QueueId => "queueId",
            Name::Start => "start",
            Name::Stop => "stop",
            Name::End => "end",
            Name::Csv => "csv",
            Name::Zone => "zone",
        }
    }

    fn from_folded(s: &str) -> Option<Name> {
        Name::ALL
            .into_iter()
            .find(|n| n.as_str().eq_ignore_ascii_case(s))
    }
}

/// Decoded values by canonical name, each name at most once: a slot per
/// [`Name`], so a query costs no allocation and no search.
#[derive(Debug, Default)]
pub(crate) struct Pairs<'a>([Option<Cow<'a, str>>; Name::ALL.len()]);

impl<'a> Pairs<'a> {
    pub(crate) fn take(&mut self, name: Name) -> Option<Cow<'a, str>> {
        self.0[name as usize].take()
    }
}

/// Tokenises a raw query string (without the `?`).
pub(crate) fn parse(raw: &str) -> Result<Pairs<'_>, QueryError> {
    let mut pairs = Pairs::default();
    let mut rest = raw;
    while !rest.is_empty() {
        let segment;
        (segment, rest) = split::once(rest, b'&').unwrap_or((rest, ""));
        if segment.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = split::once(segment, b'=').unwrap_or((segment, ""));
        let name = decode(raw_name)?;
        let canonical = Name::from_folded(&name).ok_or_else(|| QueryError::UnknownParameter {
            name: printable(&name),
        })?;
        let value = decode(raw_value)?;
        if value.is_empty() {
            return Err(QueryError::BadValue {
                name: canonical.as_str(),
                problem: "the value is empty".into(),
                example: example(canonical),
            });
        }
        let slot = &mut pairs.0[canonical as usize];
        if slot.is_some() {
            return Err(QueryError::DuplicateParameter {
                name: canonical.as_str(),
            });
        }
        *slot = Some(value);
    }
    Ok(pairs)
}

/// An example of a valid value, for error messages.
pub(crate) fn example(name: Name) -> &'static str {
    match name {
        Name::QueueId => "queueId=1",
        Name::Start => "start=2020-11-01T04:00:00.000Z",
        Name::Stop => "stop=2020-12-01T04:59:59.999Z",
        Name::End => "end=2020-12-01T04:59:59.999Z",
        Name::Csv => "csv=true",
        Name::Zone => "zone=America/New_York",
    }
}

fn decode(s: &str) -> Result<Cow<'_, str>, QueryError> {
    use crate::percent::PercentError;
    crate::percent::decode(s).map_err(|e| match e {
        PercentError::BadEscape | PercentError::NotUtf8 => QueryError::Malformed {
            reason: e.to_string(),
        },
        PercentError::Control => QueryError::Malformed {
            reason: "the query contains control characters".into(),
        },
    })
}

/// A parameter name made safe to quote back: printable ASCII, at most 40 chars.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed pairs, in `Name` order.
    fn names(raw: &str) -> Vec<(&'static str, String)> {
        let mut pairs = parse(raw).unwrap();
        Name::ALL
            .into_iter()
            .filter_map(|n| Some((n.as_str(), pairs.take(n)?.into_owned())))
            .collect()
    }

    #[test]
    fn folds_names_and_decodes_values() {
        assert_eq!(
            names("QUEUEID=1&Start=a%3Ab&csv=true&&"),
            vec![
                ("queueId", "1".into()),
                ("start", "a:b".into()),
                ("csv", "true".into())
            ]
        );
        assert_eq!(names("%71ueueId=7"), vec![("queueId", "7".into())]);
        // Empty segments are skipped; a value keeps any further `=`.
        assert_eq!(
            names("&&zone=a=b&&queueId=2&"),
            vec![("queueId", "2".into()), ("zone", "a=b".into())]
        );
        assert_eq!(names(""), vec![]);
        assert_eq!(names("&"), vec![]);
        assert_eq!(
            names("zone=Etc%2FGMT+5"),
            vec![("zone", "Etc/GMT+5".into())]
        );
    }

    #[test]
    fn refuses_ambiguity() {
        let refused = [
            "queueId=1&queueId=2",
            "queueId=1&QueueID=2",
            "queueId=1&%71ueueId=2",
            "queueId=",
            "queueId",
            "queue_id=1",
            "queueId[]=1",
            "apikey=x",
            "queueId=%",
            "queueId=%4",
            "queueId=%zz",
            "queueId=%u0031",
            "queueId=%00",
            "queueId=1%0d%0aX:1",
            "queueId=%ff",
            "queueId=%c0%b1",
        ];
        for raw in refused {
            assert!(parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn unknown_names_are_quoted_safely() {
        let Err(QueryError::UnknownParameter { name }) = parse(&format!("{}=1", "x".repeat(100)))
        else {
            panic!("expected unknown parameter");
        };
        assert_eq!(name.len(), 40 + '…'.len_utf8());
        let Err(QueryError::UnknownParameter { name }) = parse("a%20b=1") else {
            panic!("expected unknown parameter");
        };
        assert_eq!(name, "a?b");
    }
}
