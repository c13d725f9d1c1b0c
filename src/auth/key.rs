//! API keys, their hashes and fingerprints.
//!
//! A key is a GUID. It is canonicalised to lower-case hyphenated form, and
//! only its SHA-256 hash is ever stored or compared; logs and listings show
//! the fingerprint (the first 8 hex characters of the hash), never the key.

use sha2::{Digest, Sha256};

/// A syntactically valid API key in canonical form. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Parses a GUID: 36-character hyphenated form, or the same in braces as
    /// .NET prints it; hex digits in any case.
    pub fn parse(raw: &str) -> Option<ApiKey> {
        let inner = match raw.strip_prefix('{') {
            Some(rest) => rest.strip_suffix('}')?,
            None => raw,
        };
        let b = inner.as_bytes();
        if b.len() != 36 {
            return None;
        }
        for (i, &c) in b.iter().enumerate() {
            let ok = match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_hexdigit(),
            };
            if !ok {
                return None;
            }
        }
        Some(ApiKey(inner.to_ascii_lowercase()))
    }

    /// A fresh random key.
    pub fn generate() -> ApiKey {
        ApiKey(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The canonical key; call only where it is shown once or sent upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key's hash.
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.hash().fingerprint())
    }
}

/// SHA-256 of a canonical key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

/// Hashes the digest's first eight bytes only: they are as evenly spread
/// as all 32 (it is SHA-256 output), and maps keyed by it (key stores,
/// caches) then hash a quarter as much per lookup. Equality still compares
/// all 32.
impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

impl KeyHash {
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<KeyHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(KeyHash(out))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes (as stored in a database).
    pub fn from_bytes(bytes: &[u8]) -> Option<KeyHash> {
        bytes.try_into().ok().map(KeyHash)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The short, public identifier of the key.
    pub fn fingerprint(&self) -> Fingerprint {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 8];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair.copy_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
        }
        Fingerprint(text)
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}…)", self.fingerprint())
    }
}

/// First 8 hex characters of a key's hash: safe to log and display. Held
/// inline, so the principal and the request's trace copy it without
/// allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    /// As text.
    pub fn as_str(&self) -> &str {
        // Only `KeyHash::fingerprint` makes one, of ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("????????")
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_KEY: &str = "b5c38d85-a042-4cef-8418-eb06752e346b";

    #[test]
    fn digests_sharing_their_hashed_prefix_stay_distinct_keys() {
        let a = KeyHash([7; 32]);
        let mut b = a;
        b.0[31] = 8;
        let map: std::collections::HashMap<KeyHash, u8> = [(a, 1), (b, 2)].into();
        assert_eq!((map.len(), map[&a], map[&b]), (2, 1, 2));
    }

    #[test]
    fn canonical_forms() {
        let k = ApiKey::parse(DOC_KEY).unwrap();
        assert_eq!(ApiKey::parse(&DOC_KEY.to_uppercase()).unwrap(), k);
        assert_eq!(ApiKey::parse(&format!("{{{DOC_KEY}}}")).unwrap(), k);
        assert_eq!(k.expose(), DOC_KEY);
    }

    #[test]
    fn malformed_keys() {
        for bad in [
            "",
            "b5c38d85a0424cef8418eb06752e346b",
            "b5c38d85-a042-4cef-8418-eb06752e346",
            "b5c38d85-a042-4cef-8418-eb06752e346bb",
            "g5c38d85-a042-4cef-8418-eb06752e346b",
            "{b5c38d85-a042-4cef-8418-eb06752e346b",
            "(b5c38d85-a042-4cef-8418-eb06752e346b)",
            "urn:uuid:b5c38d85-a042-4cef-8418-eb06752e346b",
            "b5c38d85-a042-4cef-8418-eb06752e346b ",
            "b5c38d85+a042-4cef-8418-eb06752e346b",
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = ApiKey::parse(DOC_KEY).unwrap();
        let shown = format!("{k:?} {:?}", k.hash());
        assert!(!shown.contains("b5c38d85"), "{shown}");
        assert!(shown.contains(k.hash().fingerprint().as_str()));
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = ApiKey::parse(DOC_KEY).unwrap().hash();
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(h.fingerprint().as_str(), &h.to_hex()[..8]);
        let all_digits = KeyHash(
            [0x01, 0x23, 0xab, 0xef, 0xff, 0, 0, 0]
                .repeat(4)
                .try_into()
                .unwrap(),
        );
        assert_eq!(all_digits.fingerprint().to_string(), "0123abef");
        assert!(KeyHash::from_hex("zz").is_none());
    }

    /// The accepted shape, written independently of `parse`: 8-4-4-4-12 hex
    /// digits, bare or in one pair of braces.
    fn guid(s: &str) -> bool {
        let inner = s
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .unwrap_or(s);
        let groups: Vec<&str> = inner.split('-').collect();
        groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    proptest::proptest! {
        /// A key with one stretch replaced (including by non-ASCII text),
        /// in braces or not: accepted exactly when it is still a GUID, and
        /// then canonical (lower case, no braces) whatever its spelling.
        #[test]
        fn accepts_exactly_guids_and_canonicalises_them(
            at in 0..DOC_KEY.len(),
            cut in 0usize..3,
            with in "[-0-9a-fA-F{}g é]{0,2}",
            braces: bool,
            upper: bool,
        ) {
            let mut raw = if upper { DOC_KEY.to_uppercase() } else { DOC_KEY.to_string() };
            raw.replace_range(at..(at + cut).min(raw.len()), &with);
            if braces {
                raw = format!("{{{raw}}}");
            }
            let parsed = ApiKey::parse(&raw);
            proptest::prop_assert_eq!(parsed.is_some(), guid(&raw), "{:?}", raw);
            if let Some(key) = parsed {
                let canonical = key.expose();
                proptest::prop_assert_eq!(canonical.len(), 36);
                proptest::prop_assert_eq!(canonical, canonical.to_ascii_lowercase());
                proptest::prop_assert_eq!(canonical, raw.trim_matches(['{', '}']).to_ascii_lowercase());
                proptest::prop_assert_eq!(ApiKey::parse(canonical), Some(key.clone()));
                let shown = format!("{key:?}");
                proptest::prop_assert!(!shown.contains(&canonical[..8]), "{}", shown);
            }
        }
    }
}
