//! Key stores: where a key hash is turned into a [`Principal`].
//!
//! Backends implement [`KeyStore`]; the file backend ([`file`]) is the
//! embedded default. Stores hold only SHA-256 hashes of keys.

pub mod file;

use crate::auth::{KeyHash, Principal};

/// A key store could not answer (as opposed to "no such key").
#[derive(Debug, thiserror::Error)]
#[error("key store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// A future borrowing the store.
pub type LookupFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Principal>, StoreUnavailable>> + Send + 'a>,
>;

/// Looks up keys by hash.
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The principal for a currently valid key, `None` for an unknown,
    /// expired, not-yet-valid or disabled one.
    fn lookup<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a>;

    /// How many keys are loaded (for readiness and metrics).
    fn key_count(&self) -> usize;
}
