//! The PostgreSQL key store, for several gateway instances.
//!
//! Keys (hashes only), users and queue grants live in tables of one schema
//! ([`schema`]). Each instance looks keys up through a pool, behind the moka
//! cache ([`super::cached`]); a trigger announces every change with
//! `pg_notify`, and each instance's listener ([`listen`]) drops the affected
//! cached verdicts at once — a revocation made anywhere, even by plain SQL,
//! is refused everywhere within moments. After a lost listener connection
//! the cache is flushed on reconnect. Last-used times are written in
//! batches. Key lifecycle commands edit the tables through [`admin`].

pub mod admin;
pub mod schema;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::cached::CachedKeyStore;
use super::{KeyStore, LookupFuture, StoreUnavailable};
use crate::auth::{Fingerprint, KeyHash, Principal, Role};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// How the gateway reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PgSettings {
    /// Connection URL (`postgres://user@host/db?sslmode=require`); masked when printed.
    pub url: crate::config::Secret,
    /// The schema holding the tables.
    pub schema: String,
    /// Pooled connections per instance.
    pub pool_size: usize,
    /// Longest wait for one lookup before answering 503.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub timeout: Duration,
    /// Apply migrations at start-up.
    pub migrate_on_start: bool,
    /// How often last-used times are written.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub last_used_flush: Duration,
}

/// TLS for database connections: rustls with Mozilla's roots. Whether it is
/// used follows `sslmode` in the URL.
pub fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map(|b| {
                b.with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
            .unwrap_or_else(|_| unreachable!("TLS 1.3 with ring is always supported"))
        });
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Parses a connection URL. Without an explicit `sslmode` the connection is
/// plain (as for a database on the same host or private network); with
/// `sslmode=prefer` or `require` the server's certificate is verified
/// against Mozilla's roots — never accepted unverified.
pub fn pg_config(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if !url.contains("sslmode=") {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    Ok(config)
}

/// Opens one connection (driven by a spawned task).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = pg_config(url)?.connect(tls()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// The store.
pub struct PgKeyStore {
    pool: Pool,
    settings: PgSettings,
    clock: Arc<dyn Clock>,
    count: AtomicUsize,
    pending_use: Mutex<HashMap<KeyHash, i64>>,
    seen_use: Mutex<HashMap<KeyHash, i64>>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl std::fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKeyStore")
            .field("schema", &self.settings.schema)
            .field("keys", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreUnavailable {
    StoreUnavailable(e.to_string())
}

impl PgKeyStore {
    /// A store over a new pool (connections are made on demand).
    pub fn new(
        settings: PgSettings,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Self, StoreUnavailable> {
        let config = pg_config(settings.url.expose()).map_err(unavailable)?;
        let manager = Manager::from_config(
            config,
            tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(unavailable)?;
        Ok(PgKeyStore {
            pool,
            settings,
            clock,
            count: AtomicUsize::new(0),
            pending_use: Mutex::new(HashMap::new()),
            seen_use: Mutex::new(HashMap::new()),
            metrics,
            readiness,
        })
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.settings.schema)
    }

    fn health(&self, up: bool) {
        self.metrics.key_store_up.set(i64::from(up));
        self.readiness.set_key_store_degraded(!up);
        if up {
            self.readiness.set_keys_loaded(true);
        }
    }

    async fn query(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreUnavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT u.name, u.role, u.tier, k.not_before, k.expires_at, k.disabled,
                    COALESCE((SELECT array_agg(q.queue_id) FROM {q} q WHERE q.user_name = u.name), '{{}}')
             FROM {k} k JOIN {u} u ON u.name = k.user_name
             WHERE k.sha256 = $1",
            q = self.table("user_queues"),
            k = self.table("keys"),
            u = self.table("users"),
        );
        let row = client
            .query_opt(&sql, &[&hash.as_bytes().as_slice()])
            .await
            .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let not_before: Option<Timestamp> = row.get(3);
        let expires_at: Option<Timestamp> = row.get(4);
        let disabled: bool = row.get(5);
        if !super::usable(disabled, not_before, expires_at, &*self.clock) {
            return Ok(None);
        }
        let role = match row.get::<_, &str>(1) {
            "admin" => Role::Admin,
            _ => Role::Manager,
        };
        let queues: Vec<i32> = row.get(6);
        Ok(Some(Principal {
            user: row.get::<_, &str>(0).into(),
            role,
            queues: Arc::new(
                queues
                    .into_iter()
                    .filter_map(|q| u32::try_from(q).ok())
                    .collect::<BTreeSet<_>>(),
            ),
            tier: row.get::<_, &str>(2).into(),
            fingerprint: hash.fingerprint(),
        }))
    }

    /// Re-counts the keys (readiness, metrics).
    pub async fn refresh_count(&self) -> Result<usize, StoreUnavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", self.table("keys")), &[])
            .await
            .map_err(unavailable)?
            .get(0);
        let n = usize::try_from(n).unwrap_or(0);
        self.count.store(n, Ordering::Relaxed);
        self.metrics
            .keys_loaded
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        Ok(n)
    }

    /// Writes the last-used times gathered since the previous flush, in one statement.
    pub async fn flush_last_used(&self) -> Result<usize, StoreUnavailable> {
        let batch: Vec<(KeyHash, i64)> = {
            let mut pending = self.pending_use.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let hashes: Vec<&[u8]> = batch.iter().map(|(h, _)| h.as_bytes().as_slice()).collect();
        let times: Vec<Timestamp> = batch
            .iter()
            .filter_map(|(_, s)| Timestamp::from_second(*s).ok())
            .collect();
        let result = async {
            let client = self.pool.get().await.map_err(unavailable)?;
            client
                .execute(
                    &format!(
                        "UPDATE {k} SET last_used = v.t
                         FROM unnest($1::bytea[], $2::timestamptz[]) AS v(h, t)
                         WHERE {k}.sha256 = v.h AND ({k}.last_used IS NULL OR {k}.last_used < v.t)",
                        k = self.table("keys")
                    ),
                    &[&hashes, &times],
                )
                .await
                .map_err(unavailable)
        }
        .await;
        match result {
            Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
            Err(e) => {
                // Keep the batch for the next attempt (newer times win).
                let mut pending = self.pending_use.lock().unwrap_or_else(|p| p.into_inner());
                for (h, t) in batch {
                    let slot = pending.entry(h).or_insert(t);
                    *slot = (*slot).max(t);
                }
                Err(e)
            }
        }
    }
}

impl KeyStore for PgKeyStore {
    fn lookup<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a> {
        Box::pin(async move {
            let outcome = tokio::time::timeout(self.settings.timeout, self.query(hash))
                .await
                .unwrap_or_else(|_| Err(unavailable("timed out")));
            self.health(outcome.is_ok());
            outcome
        })
    }

    fn key_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn touch(&self, hash: &KeyHash) {
        // Kept in whole seconds: the coarse clock is enough.
        let now = self.clock.now_coarse().as_second();
        self.pending_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash, now);
        self.seen_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash, now);
    }

    fn last_used(&self) -> Vec<(Fingerprint, Timestamp)> {
        self.seen_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(h, s)| Some((h.fingerprint(), Timestamp::from_second(*s).ok()?)))
            .collect()
    }
}

/// Listens for change announcements and invalidates `cache` accordingly;
/// reconnects with backoff, flushing the cache after every (re)connect.
pub async fn listen(store: Arc<PgKeyStore>, cache: Arc<CachedKeyStore>) {
    let channel = schema::channel(&store.settings.schema);
    let mut backoff = Duration::from_millis(100);
    let mut was_up = true;
    loop {
        let connecting = async { pg_config(store.settings.url.expose())?.connect(tls()).await };
        match connecting.await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message {
                            if tx.send(n.payload().to_owned()).is_err() {
                                break;
                            }
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN \"{channel}\""))
                    .await
                    .is_ok()
                {
                    // Anything may have changed while no one was listening.
                    cache.flush_after_gap();
                    let _ = store.refresh_count().await;
                    store.health(true);
                    store.metrics.key_store_listener_up.set(1);
                    if !was_up {
                        tracing::info!("key change listener reconnected; key cache flushed");
                    }
                    was_up = true;
                    backoff = Duration::from_millis(100);
                    while let Some(payload) = rx.recv().await {
                        match payload.strip_prefix("key:").and_then(KeyHash::from_hex) {
                            Some(hash) => cache.invalidate(&hash).await,
                            None => cache.invalidate_all(),
                        }
                        if payload == "all" || payload.starts_with("key:") {
                            let _ = store.refresh_count().await;
                        }
                    }
                }
                driver.abort();
                drop(client);
            }
            Err(e) => tracing::debug!(error = %e, "key change listener cannot connect"),
        }
        store.metrics.key_store_listener_up.set(0);
        if was_up {
            tracing::warn!("key change listener lost its database connection; retrying");
            was_up = false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Writes last-used times every `settings.last_used_flush`.
pub async fn flush_periodically(store: Arc<PgKeyStore>) {
    let mut tick = tokio::time::interval(store.settings.last_used_flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = store.flush_last_used().await {
            tracing::debug!(error = %e, "last-used flush failed; will retry");
        }
    }
}

/// Applies the schema when configured to, at start-up.
pub async fn migrate_if_configured(settings: &PgSettings) -> Result<(), StoreUnavailable> {
    if !settings.migrate_on_start {
        return Ok(());
    }
    let mut client = connect(settings.url.expose()).await.map_err(unavailable)?;
    let applied = schema::migrate(&mut client, &settings.schema)
        .await
        .map_err(unavailable)?;
    if !applied.is_empty() {
        tracing::info!(?applied, schema = %settings.schema, "database migrations applied");
    }
    Ok(())
}
