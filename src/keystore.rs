//! Key stores: where a key hash is turned into a [`Principal`].
//!
//! Backends implement [`KeyStore`]. The file backend ([`mod@file`]) is the
//! embedded default; remote backends sit behind [`cached::CachedKeyStore`],
//! a moka cache with negative caching, explicit invalidation and
//! single-flight lookups. Stores hold only SHA-256 hashes of keys.

pub mod cached;
pub mod editor;
pub mod file;
pub mod postgres;

use jiff::Timestamp;

use crate::auth::{Fingerprint, KeyHash, Principal};
use crate::clock::Clock;

/// Whether a key may be used now: not disabled, and now within
/// `[not_before, expires_at)`. `clock` is read, precisely, only for a key
/// with a bound: most keys have none, and a reading is the dearest part of
/// a lookup in the key file.
pub(crate) fn usable(
    disabled: bool,
    not_before: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    clock: &dyn Clock,
) -> bool {
    if disabled {
        return false;
    }
    if not_before.is_none() && expires_at.is_none() {
        return true;
    }
    let now = clock.now();
    not_before.is_none_or(|t| now >= t) && expires_at.is_none_or(|t| now < t)
}

/// A key store could not answer (as opposed to "no such key").
#[derive(Debug, Clone, thiserror::Error)]
#[error("key store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// A future borrowing the store.
pub type LookupFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Principal>, StoreUnavailable>> + Send + 'a>,
>;

/// Looks up keys by hash.
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The principal for a currently valid key, `None` for an unknown,
    /// expired, not-yet-valid or disabled one. A lookup is an
    /// authentication: a key found valid is recorded as used
    /// ([`last_used`](Self::last_used)).
    fn lookup<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a>;

    /// [`lookup`](Self::lookup)'s answer when the store has it without
    /// waiting (the key file is in memory), so the request path neither
    /// allocates nor suspends for it; `None` when only `lookup` can tell.
    fn lookup_now(&self, _hash: &KeyHash) -> Option<Result<Option<Principal>, StoreUnavailable>> {
        None
    }

    /// How many keys are loaded (for readiness and metrics).
    fn key_count(&self) -> usize;

    /// Records that a key was just used (cheap). Lookups record their own
    /// uses; this is for a cache in front of the store, whose hits the
    /// store does not see.
    fn touch(&self, hash: &KeyHash);

    /// When each key was last used by this instance, by fingerprint.
    fn last_used(&self) -> Vec<(Fingerprint, Timestamp)>;
}
