//! Strict percent-decoding, shared by the query tokenizer and the admin
//! API's path segments: `%` must be followed by two hex digits, the result
//! must be UTF-8 without control characters, and `+` stays `+` (callers
//! that give it a meaning do so themselves).

use std::borrow::Cow;

/// Why a text could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    /// A `%` without two hex digits after it.
    #[error("`%` must be followed by two hex digits")]
    BadEscape,
    /// The decoded bytes are not UTF-8.
    #[error("a percent-encoded sequence is not valid UTF-8")]
    NotUtf8,
    /// The decoded text holds control characters.
    #[error("the text contains control characters")]
    Control,
}

/// Decodes `s`; borrows it when there is nothing to decode.
pub fn decode(s: &str) -> Result<Cow<'_, str>, PercentError> {
    // The usual text, plain printable ASCII, is settled in one pass (no
    // early exit, so it vectorises).
    let unusual = s.bytes().fold(false, |seen, b| {
        seen | (b == b'%') | !(0x20..0x7f).contains(&b)
    });
    if !unusual {
        return Ok(Cow::Borrowed(s));
    }
    let text = if s.as_bytes().contains(&b'%') {
        Cow::Owned(unescape(s)?)
    } else {
        Cow::Borrowed(s)
    };
    if has_control(&text) {
        return Err(PercentError::Control);
    }
    Ok(text)
}

/// Whether `s` holds a control character (Unicode `Cc`: U+0000–U+001F and
/// U+007F–U+009F); byte by byte when it is ASCII, as query values are.
fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        s.chars().any(char::is_control)
    }
}

/// `s` with its `%XX` escapes decoded.
fn unescape(s: &str) -> Result<String, PercentError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PercentError::BadEscape)?;
            let digit = |h: u8| (h as char).to_digit(16).ok_or(PercentError::BadEscape);
            out.push((digit(hex[0])? * 16 + digit(hex[1])?) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PercentError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(
            decode("ops%40example.com").as_deref(),
            Ok("ops@example.com")
        );
        assert_eq!(decode("a+b").as_deref(), Ok("a+b"));
        assert_eq!(decode("%2").unwrap_err(), PercentError::BadEscape);
        assert_eq!(decode("%+f").unwrap_err(), PercentError::BadEscape);
        assert_eq!(decode("%zz").unwrap_err(), PercentError::BadEscape);
        assert_eq!(decode("%ff").unwrap_err(), PercentError::NotUtf8);
        assert_eq!(decode("a%0Ab").unwrap_err(), PercentError::Control);
        assert_eq!(decode("a\nb").unwrap_err(), PercentError::Control);
        assert!(matches!(decode("plain"), Ok(Cow::Borrowed("plain"))));
    }

    #[test]
    fn control_characters_are_refused_ascii_or_not() {
        for bad in ["%00", "%1F", "%7F", "a%C2%85b", "\u{9f}x", "é\u{1}"] {
            assert_eq!(decode(bad).unwrap_err(), PercentError::Control, "{bad}");
        }
        for good in ["%20", "~", "%C2%A0", "é", "America/New_York"] {
            assert!(decode(good).is_ok(), "{good}");
        }
    }
}
