//! The shared state built once at start-up: config, key store, catalog,
//! metrics registry, readiness and the upstream proxy.

use std::sync::Arc;

use prometheus::Registry;

use crate::audit::AuditLog;
use crate::auth::AuthThrottle;
use crate::catalog::refresh::{self, RefreshError};
use crate::catalog::{Catalog, CatalogHandle, Category};
use crate::clock::Clock;
use crate::config::{Config, KeySource};
use crate::keystore::cached::CachedKeyStore;
use crate::keystore::file::{FileKeyStore, KeyFileError};
use crate::keystore::postgres::{self, PgKeyStore};
use crate::keystore::KeyStore;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyDeps, TlsSetupError};
use crate::ratelimit::local::LocalLimiter;
use crate::ratelimit::shared::SharedLimiter;
use crate::ratelimit::{Backend, RateLimiter};
use crate::readiness::Readiness;
use crate::tls::CertResolver;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key file is unusable.
    #[error("key store: {0}")]
    Keys(#[from] KeyFileError),
    /// Upstream TLS could not be set up.
    #[error(transparent)]
    UpstreamTls(#[from] TlsSetupError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The rate limiter could not be set up (a malformed Redis URL).
    #[error("rate limiter: {0}")]
    RateLimit(String),
    /// The TLS certificate cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::CertError),
    /// The key store cannot be set up.
    #[error("key store: {0}")]
    KeyStore(String),
    /// The audit log cannot be opened.
    #[error("{0}")]
    Audit(std::io::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything a running gateway shares.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// Metrics registry served on `/metrics`.
    pub registry: Registry,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness state.
    pub readiness: Arc<Readiness>,
    /// Key store.
    pub keys: Arc<dyn KeyStore>,
    /// The key file behind `keys`, when it is the file backend (watched and reloaded).
    pub key_file: Option<Arc<FileKeyStore>>,
    /// Failed-authentication throttle.
    pub auth_throttle: Arc<AuthThrottle>,
    /// Report catalog.
    pub catalog: Arc<CatalogHandle>,
    /// Upstream proxy.
    pub proxy: Proxy,
    /// The clock ("now" for relative times, key validity).
    pub clock: Arc<dyn Clock>,
    /// Request parsing options.
    pub request_options: Arc<crate::request::RequestOptions>,
    /// Rate limits.
    pub ratelimiter: Arc<RateLimiter>,
    /// The audit log.
    pub audit: AuditLog,
    /// Tasks that live as long as the state (key change listener, ...).
    pub background: BackgroundTasks,
    /// The public listener's certificate, when serving TLS.
    pub tls: Option<Arc<CertResolver>>,
    /// The bound HTTP-to-HTTPS redirect listener, taken by the server.
    pub redirect: std::sync::Mutex<Option<tokio::net::TcpListener>>,
}

/// A key file every local user can read lets any of them learn who holds
/// which queues and attack the hashes offline: refuse it unless overridden.
fn refuse_world_readable(path: &std::path::Path, allowed: bool) -> Result<(), StartError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o004 != 0 && !allowed {
                return Err(StartError::KeyStore(format!(
                    "{} is readable by every user; run `chmod o-r {}` (or set keys.allow_world_readable = true)",
                    path.display(),
                    path.display()
                )));
            }
        }
    }
    let _ = (path, allowed);
    Ok(())
}

/// Background tasks, stopped when dropped.
#[derive(Debug, Default)]
pub struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl AppState {
    /// Builds the state from `config`, loading keys and setting up the upstream client.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
        let registry = Registry::new();
        let metrics = Arc::new(Metrics::register_for_workers(
            &registry,
            config.listen.workers,
        )?);
        let readiness = Arc::new(Readiness::default());
        let tls = match &config.tls.files {
            None => None,
            Some((cert, key)) => Some(Arc::new(CertResolver::new(cert, key)?)),
        };
        let mut background = Vec::new();
        let (keys, key_file): (Arc<dyn KeyStore>, Option<Arc<FileKeyStore>>) = match &config
            .keys
            .source
        {
            KeySource::File(path) => {
                refuse_world_readable(path, config.keys.allow_world_readable)?;
                let file = Arc::new(FileKeyStore::open(path, Arc::clone(&clock))?);
                (file.clone(), Some(file))
            }
            KeySource::Embedded(text) => (
                Arc::new(FileKeyStore::embedded(text, Arc::clone(&clock))?),
                None,
            ),
            KeySource::Postgres(settings) => {
                if let Err(e) = postgres::migrate_if_configured(settings).await {
                    tracing::error!(error = %e, "database migration at start-up failed");
                }
                let pg = Arc::new(
                    PgKeyStore::new(
                        settings.clone(),
                        Arc::clone(&clock),
                        Arc::clone(&metrics),
                        Arc::clone(&readiness),
                    )
                    .map_err(|e| StartError::KeyStore(e.to_string()))?,
                );
                match pg.refresh_count().await {
                    Ok(n) => {
                        readiness.set_keys_loaded(true);
                        tracing::info!(keys = n, schema = %settings.schema, "PostgreSQL key store ready");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "PostgreSQL key store unreachable at start-up; refusing unknown keys with 503")
                    }
                }
                let k = &config.keys;
                let cached = Arc::new(CachedKeyStore::new(
                    pg.clone(),
                    k.cache_ttl,
                    k.negative_cache_ttl,
                    k.cache_capacity,
                    k.resurrect_ttl,
                    Arc::clone(&metrics),
                ));
                background.push(tokio::spawn(postgres::listen(
                    Arc::clone(&pg),
                    Arc::clone(&cached),
                )));
                background.push(tokio::spawn(postgres::flush_periodically(pg)));
                (cached, None)
            }
        };
        if key_file.is_some() || matches!(config.keys.source, KeySource::Embedded(_)) {
            metrics
                .keys_loaded
                .set(i64::try_from(keys.key_count()).unwrap_or(i64::MAX));
            readiness.set_keys_loaded(true);
        }
        metrics
            .key_last_reload
            .set(jiff::Timestamp::now().as_second());
        let auth_throttle = Arc::new(AuthThrottle::new(
            config.auth.max_failures_per_minute,
            config.auth.throttle_max_tracked,
        ));
        let catalog = Arc::new(CatalogHandle::new(Catalog::new(&config.catalog.report)));
        metrics
            .catalog_reports
            .set(i64::try_from(config.catalog.report.len()).unwrap_or(i64::MAX));
        let rl = &config.ratelimit;
        let backend = match &rl.shared {
            None => Backend::Local(LocalLimiter::new(&rl.tiers)),
            Some(shared) => Backend::Shared(
                SharedLimiter::new(
                    shared.url.expose(),
                    &shared.key_prefix,
                    shared.timeout,
                    &rl.tiers,
                    Arc::clone(&metrics),
                )
                .map_err(|e| StartError::RateLimit(e.to_string()))?,
            ),
        };
        let audit = AuditLog::start(
            &config.audit.target,
            config.audit.queue_capacity,
            config.listen.workers,
            Arc::clone(&metrics),
        )
        .map_err(StartError::Audit)?;
        let ratelimiter = Arc::new(RateLimiter::new(
            rl.clone(),
            backend,
            Arc::clone(&clock),
            Arc::clone(&metrics),
        ));
        let proxy = Proxy::new(
            &config.upstream,
            &config.cache,
            ProxyDeps {
                metrics: Arc::clone(&metrics),
                readiness: Arc::clone(&readiness),
                limiter: Arc::clone(&ratelimiter),
                clock: Arc::clone(&clock),
                workers: config.listen.workers,
            },
        )?;
        Ok(AppState {
            registry,
            metrics,
            readiness,
            keys,
            key_file,
            auth_throttle,
            catalog,
            proxy,
            clock,
            request_options: Arc::new(config.request.clone()),
            ratelimiter,
            audit,
            background: BackgroundTasks(background),
            tls,
            redirect: std::sync::Mutex::new(None),
            config,
        })
    }

    /// Refreshes the catalog from the upstream's discovery routes; on any
    /// failure the catalog in force stays. Returns the number of reports.
    pub async fn refresh_catalog(&self) -> Result<usize, RefreshError> {
        let cfg = &self.config.catalog;
        let Some(key) = &cfg.refresh_key else {
            return Ok(self.catalog.current().len());
        };
        let outcome = async {
            let mut answers = Vec::new();
            for category in Category::ALL {
                let route = category.discovery_route();
                let path = if category.is_per_queue() {
                    format!("/Report/{route}?queueId={}", cfg.refresh_queue_id)
                } else {
                    format!("/Report/{route}")
                };
                let answer = self
                    .proxy
                    .fetch_json(&path, key.expose())
                    .await
                    .map_err(|source| RefreshError::Fetch { route, source })?;
                answers.push((category, answer));
            }
            refresh::assemble(answers)
        }
        .await;
        match outcome {
            Ok(reports) => {
                let count = reports.len();
                self.catalog.replace(Catalog::new(&reports));
                self.metrics
                    .catalog_refreshes
                    .with_label_values(&["success"])
                    .inc();
                self.metrics
                    .catalog_reports
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                self.metrics
                    .catalog_last_refresh
                    .set(jiff::Timestamp::now().as_second());
                tracing::info!(
                    reports = count,
                    "report catalog refreshed from the upstream"
                );
                Ok(count)
            }
            Err(e) => {
                self.metrics
                    .catalog_refreshes
                    .with_label_values(&["failure"])
                    .inc();
                tracing::warn!(error = %e, "catalog refresh failed; keeping the catalog in force");
                Err(e)
            }
        }
    }

    /// Reloads the TLS certificate: only if its files changed, or
    /// unconditionally (`force`, on SIGHUP). A broken file keeps the
    /// certificate in force, is logged and counted.
    pub fn reload_tls(&self, force: bool) {
        let Some(resolver) = &self.tls else { return };
        let outcome = if force {
            resolver.reload().map(|()| true)
        } else {
            resolver.reload_if_changed()
        };
        match outcome {
            Ok(false) => {}
            Ok(true) => {
                self.metrics
                    .tls_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!("TLS certificate reloaded; new connections use it");
            }
            Err(e) => {
                self.metrics
                    .tls_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the certificate in force");
            }
        }
    }

    /// Reloads the key file: only if it changed, or unconditionally (`force`,
    /// on SIGHUP). A failed reload keeps the previous keys, is logged and
    /// counted; it never empties the store.
    pub fn reload_keys(&self, force: bool) {
        let Some(file) = &self.key_file else { return };
        let outcome = if force {
            file.reload().map(Some)
        } else {
            file.reload_if_changed()
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(count)) => {
                self.metrics
                    .key_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics
                    .keys_loaded
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                self.metrics
                    .key_last_reload
                    .set(jiff::Timestamp::now().as_second());
                tracing::info!(keys = count, "key file reloaded");
            }
            Err(e) => {
                self.metrics
                    .key_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(error = %e, "key file reload failed; keeping the previous keys");
            }
        }
    }
}
