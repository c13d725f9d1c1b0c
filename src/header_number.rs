//! Numbers as header values (`X-RateLimit-Remaining: 57`, `Age: 3`,
//! `Retry-After: 1`), without an allocation for the usual ones.
//!
//! `HeaderValue::from(n)` allocates twice (a buffer, then its shrink) on
//! every answer. Numbers below [`SMALL`] come from a table made once, of
//! static strings, so handing one out allocates nothing and touches no
//! reference count another worker touches; larger ones are formatted on
//! the stack and copied once.

use std::sync::OnceLock;

use http::HeaderValue;

/// Numbers below this come from the table (about 40 KiB, made on first use).
pub const SMALL: u64 = 1024;

/// `n` as a header value.
pub fn number(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Box<[HeaderValue]>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..SMALL)
            .map(|i| HeaderValue::from_static(Box::leak(i.to_string().into_boxed_str())))
            .collect()
    });
    match usize::try_from(n).ok().and_then(|i| table.get(i)) {
        Some(value) => value.clone(),
        None => {
            let mut digits = itoa::Buffer::new();
            // Digits are always a valid header value.
            HeaderValue::from_bytes(digits.format(n).as_bytes())
                .unwrap_or_else(|_| HeaderValue::from_static("0"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_reads_back() {
        for n in [
            0,
            1,
            9,
            10,
            57,
            SMALL - 1,
            SMALL,
            SMALL + 1,
            99_999_999,
            u64::MAX,
        ] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
    }
}
