//! Splitting request text at an ASCII separator by a plain byte scan:
//! paths and query segments are a few bytes long, and `str::split`'s
//! searcher costs more to set up than to run.

/// `s` before and after the first `sep` (ASCII).
pub(crate) fn once(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// The pieces of `s` between `sep`s (ASCII), as `s.split(sep)` gives them.
pub(crate) fn all(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match once(s, sep) {
            Some((piece, after)) => {
                rest = Some(after);
                Some(piece)
            }
            None => rest.take(),
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The same pieces as the standard library's split, for any text
        /// (multi-byte characters included) and any ASCII separator.
        #[test]
        fn splits_as_str_split_does(s in "[/&=a\u{e9}\u{1F600}]{0,12}", sep in prop::sample::select(vec![b'/', b'&', b'='])) {
            let ours: Vec<&str> = all(&s, sep).collect();
            let std: Vec<&str> = s.split(char::from(sep)).collect();
            prop_assert_eq!(ours, std);
            prop_assert_eq!(once(&s, sep), s.split_once(char::from(sep)));
        }
    }
}
