//! A moka cache in front of a remote key store.
//!
//! Positive verdicts live for `cache_ttl`, "unknown key" verdicts for the
//! shorter `negative_cache_ttl` (so a key created elsewhere works soon, while
//! a burst of guesses does not reach the database). Concurrent lookups of
//! one key share a single backend call. Revocation and rotation call
//! [`CachedKeyStore::invalidate`] (or [`CachedKeyStore::invalidate_all`]
//! after a lost change feed), so a revoked key is not served from cache.
//! Freshness is judged on tokio's clock, so tests control it.
//!
//! When the backend cannot answer, a positive verdict up to
//! `cache_ttl + resurrect_ttl` old is served (and counted) rather than
//! failing a known key; unknown keys fail closed.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use moka::future::Cache;
use tokio::time::Instant;

use super::{KeyStore, LookupFuture, StoreUnavailable};
use crate::auth::{Fingerprint, KeyHash, Principal};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
struct Verdict {
    principal: Option<Principal>,
    at: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct CachedKeyStore {
    backend: Arc<dyn KeyStore>,
    metrics: Arc<Metrics>,
    cache: Cache<KeyHash, Verdict>,
    last_good: Cache<KeyHash, Verdict>,
    ttl: Duration,
    negative_ttl: Duration,
    resurrect_ttl: Duration,
}

impl CachedKeyStore {
    /// Caches `backend`'s verdicts.
    pub fn new(
        backend: Arc<dyn KeyStore>,
        ttl: Duration,
        negative_ttl: Duration,
        capacity: u64,
        resurrect_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        CachedKeyStore {
            backend,
            metrics,
            last_good: Cache::builder()
                .max_capacity(capacity)
                .time_to_live((ttl + resurrect_ttl).max(Duration::from_secs(1)))
                .build(),
            resurrect_ttl,
            // moka's own expiry is a backstop; freshness is checked on tokio's clock below.
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.max(negative_ttl).max(Duration::from_secs(1)))
                .build(),
            ttl,
            negative_ttl,
        }
    }

    /// Forgets one key's verdict (after revoke or rotate).
    pub async fn invalidate(&self, hash: &KeyHash) {
        self.cache.invalidate(hash).await;
        self.last_good.invalidate(hash).await;
    }

    /// Forgets every verdict (a change that may affect any key).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
        self.last_good.invalidate_all();
    }

    /// Forgets every current verdict after the change feed was lost, so
    /// each key is looked up again; the last known good verdicts stay as
    /// the outage fallback (each is replaced or dropped by its next answer).
    pub fn flush_after_gap(&self) {
        self.cache.invalidate_all();
    }

    fn fresh(&self, v: &Verdict) -> bool {
        let ttl = if v.principal.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        v.at.elapsed() < ttl
    }
}

impl CachedKeyStore {
    /// The answer from the cache, the backend, or (the backend failing)
    /// the last good answer within `resurrect_ttl`.
    async fn find(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreUnavailable> {
        if let Some(v) = self.cache.get(hash).await {
            if self.fresh(&v) {
                self.metrics.key_cache_hits.inc();
                return Ok(v.principal);
            }
            self.cache.invalidate(hash).await;
        }
        self.metrics.key_cache.with_label_values(&["miss"]).inc();
        let backend = Arc::clone(&self.backend);
        let key = *hash;
        let fetched = self
            .cache
            .try_get_with(key, async move {
                let principal = backend.lookup(&key).await?;
                Ok::<_, StoreUnavailable>(Verdict {
                    principal,
                    at: Instant::now(),
                })
            })
            .await;
        match fetched {
            Ok(verdict) => {
                if verdict.principal.is_some() {
                    self.last_good.insert(key, verdict.clone()).await;
                } else {
                    self.last_good.invalidate(&key).await;
                }
                Ok(verdict.principal)
            }
            Err(e) => match self.last_good.get(&key).await {
                Some(v) if v.at.elapsed() < self.ttl + self.resurrect_ttl => {
                    self.metrics.key_store_stale_served.inc();
                    Ok(v.principal)
                }
                _ => Err((*e).clone()),
            },
        }
    }
}

impl KeyStore for CachedKeyStore {
    /// Records each key found with the backend, whichever answered.
    fn lookup<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a> {
        Box::pin(async move {
            let answer = self.find(hash).await;
            if let Ok(Some(_)) = answer {
                self.backend.touch(hash);
            }
            answer
        })
    }

    fn key_count(&self) -> usize {
        self.backend.key_count()
    }

    fn touch(&self, hash: &KeyHash) {
        self.backend.touch(hash);
    }

    fn last_used(&self) -> Vec<(Fingerprint, Timestamp)> {
        self.backend.last_used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKey, Role};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A remote store that counts calls and answers after a pause.
    #[derive(Debug, Default)]
    struct Remote {
        calls: AtomicUsize,
        touched: AtomicUsize,
        known: std::sync::Mutex<Option<KeyHash>>,
        down: std::sync::atomic::AtomicBool,
    }

    impl KeyStore for Remote {
        fn lookup<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.down.load(Ordering::SeqCst) {
                    return Err(StoreUnavailable("connection refused".into()));
                }
                let known = *self.known.lock().unwrap();
                Ok((known == Some(*hash)).then(|| Principal {
                    user: "u".into(),
                    role: Role::Admin,
                    queues: Arc::default(),
                    tier: "default".into(),
                    fingerprint: hash.fingerprint(),
                }))
            })
        }
        fn key_count(&self) -> usize {
            1
        }
        fn touch(&self, _: &KeyHash) {
            self.touched.fetch_add(1, Ordering::SeqCst);
        }
        fn last_used(&self) -> Vec<(Fingerprint, Timestamp)> {
            Vec::new()
        }
    }

    fn setup() -> (Arc<Remote>, Arc<CachedKeyStore>, KeyHash) {
        let hash = ApiKey::generate().hash();
        let remote = Arc::new(Remote::default());
        *remote.known.lock().unwrap() = Some(hash);
        let cached = Arc::new(CachedKeyStore::new(
            remote.clone(),
            Duration::from_secs(30),
            Duration::from_secs(5),
            1000,
            Duration::from_secs(60),
            Arc::new(Metrics::register(&prometheus::Registry::new()).unwrap()),
        ));
        (remote, cached, hash)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_of_one_key_hit_the_backend_once() {
        let (remote, cached, hash) = setup();
        let lookups: Vec<_> = (0..16)
            .map(|_| {
                let cached = Arc::clone(&cached);
                tokio::spawn(async move { cached.lookup(&hash).await.unwrap() })
            })
            .collect();
        for l in lookups {
            assert!(l.await.unwrap().is_some());
        }
        assert_eq!(remote.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn every_key_found_is_recorded_with_the_backend_hit_or_miss() {
        let (remote, cached, hash) = setup();
        assert!(cached.lookup(&hash).await.unwrap().is_some());
        assert!(cached.lookup(&hash).await.unwrap().is_some());
        assert_eq!(
            remote.calls.load(Ordering::SeqCst),
            1,
            "the second was a hit"
        );
        assert_eq!(remote.touched.load(Ordering::SeqCst), 2);
        let unknown = ApiKey::generate().hash();
        assert!(cached.lookup(&unknown).await.unwrap().is_none());
        assert_eq!(
            remote.touched.load(Ordering::SeqCst),
            2,
            "not for an unknown key"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn positive_and_negative_ttls() {
        let (remote, cached, hash) = setup();
        let unknown = ApiKey::generate().hash();
        assert!(cached.lookup(&hash).await.unwrap().is_some());
        assert!(cached.lookup(&unknown).await.unwrap().is_none());
        assert_eq!(remote.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(6)).await;
        cached.lookup(&hash).await.unwrap();
        cached.lookup(&unknown).await.unwrap();
        assert_eq!(
            remote.calls.load(Ordering::SeqCst),
            3,
            "only the negative verdict expired"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        cached.lookup(&hash).await.unwrap();
        assert_eq!(
            remote.calls.load(Ordering::SeqCst),
            4,
            "positive verdict expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_forgets_a_revoked_key() {
        let (remote, cached, hash) = setup();
        assert!(cached.lookup(&hash).await.unwrap().is_some());
        *remote.known.lock().unwrap() = None;
        assert!(
            cached.lookup(&hash).await.unwrap().is_some(),
            "still cached"
        );
        cached.invalidate(&hash).await;
        assert!(cached.lookup(&hash).await.unwrap().is_none());
        *remote.known.lock().unwrap() = Some(hash);
        cached.invalidate_all();
        assert!(cached.lookup(&hash).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn known_keys_survive_an_outage_for_the_resurrect_ttl() {
        let (remote, cached, hash) = setup();
        assert!(cached.lookup(&hash).await.unwrap().is_some());
        remote.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(
            cached.lookup(&hash).await.unwrap().is_some(),
            "stale but within 30 s + 60 s"
        );
        assert!(
            cached.lookup(&ApiKey::generate().hash()).await.is_err(),
            "unknown keys fail closed"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            cached.lookup(&hash).await.is_err(),
            "past the resurrect window"
        );
        remote.down.store(false, Ordering::SeqCst);
        assert!(
            cached.lookup(&hash).await.unwrap().is_some(),
            "recovers without restart"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn outages_are_not_cached() {
        let (remote, cached, hash) = setup();
        remote.down.store(true, Ordering::SeqCst);
        assert!(cached.lookup(&hash).await.is_err());
        remote.down.store(false, Ordering::SeqCst);
        assert!(cached.lookup(&hash).await.unwrap().is_some());
    }
}
