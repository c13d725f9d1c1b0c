//! Configuration: a TOML file read into `raw` structs, then validated once
//! into typed values. Every error names the file and the key.
//!
//! Environment overrides (read through [`Env`], so tests pass a map):
//! `CHIME_GATEWAY_LISTEN`, `CHIME_GATEWAY_ADMIN_LISTEN`,
//! `CHIME_GATEWAY_UPSTREAM_URL`, `CHIME_GATEWAY_KEYS_FILE`; the upstream
//! service key comes from a file or from the variable named by
//! `upstream.service_key_env`, never from the file itself.

mod raw;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::catalog::{self, ReportDef};
use raw::RawConfig;

/// A configuration problem, naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The file (or `<embedded>` / `<env>`).
    pub file: String,
    /// The offending key, dotted (`upstream.base_url`).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// Where environment variables come from.
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A secret value: masked in `Debug` and when the config is printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub(crate) fn ser_signed<S: serde::Serializer>(
    d: &jiff::SignedDuration,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(d.unsigned_abs()))
}

pub(crate) fn ser_signed_map<S: serde::Serializer>(
    m: &HashMap<String, jiff::SignedDuration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut sorted: Vec<_> = m.iter().collect();
    sorted.sort();
    let mut map = s.serialize_map(Some(sorted.len()))?;
    for (k, v) in sorted {
        map.serialize_entry(k, &humantime::format_duration(v.unsigned_abs()).to_string())?;
    }
    map.end()
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Public listener.
    pub listen: ListenConfig,
    /// Admin listener.
    pub admin: AdminConfig,
    /// Upstream Chime.
    pub upstream: UpstreamConfig,
    /// Key store.
    pub keys: KeysConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Request parsing and normalisation.
    pub request: crate::request::RequestOptions,
    /// Rate limits.
    pub ratelimit: crate::ratelimit::RateLimitConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// TLS on the public listener.
    pub tls: TlsConfig,
    /// Metrics options.
    pub metrics: MetricsConfig,
    /// Report catalog.
    pub catalog: CatalogConfig,
    /// Logging.
    pub log: LogConfig,
    /// Request coalescing and the response cache.
    pub cache: crate::cache::CacheConfig,
}

/// Public listener settings.
#[derive(Debug, Clone, Serialize)]
pub struct ListenConfig {
    /// Address to bind.
    pub address: SocketAddr,
    /// Time allowed for a request's headers to arrive, from their first byte.
    #[serde(serialize_with = "ser_duration")]
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes (HTTP/1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Longest query string, in bytes.
    pub max_query_bytes: usize,
    /// A connection with no request in flight and no traffic for this long is closed.
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// A connection with a response in flight but no byte moved for this
    /// long (a client that stopped reading) is dropped.
    #[serde(serialize_with = "ser_duration")]
    pub stall_timeout: Duration,
    /// Most open client connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// How long in-flight requests may run on after SIGTERM.
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_grace: Duration,
    /// Threads serving the public listener, each with its own runtime and
    /// upstream connection pool (`listen.workers`; 0 in the file means one
    /// per CPU core).
    pub workers: usize,
    /// An HTTP/1 connection with nothing in flight and no traffic for this
    /// long gives its buffers back until its next request (0: never).
    #[serde(serialize_with = "ser_duration")]
    pub park_after: Duration,
}

/// Admin listener settings.
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// Address to bind.
    pub address: SocketAddr,
    /// Serve the admin API (`/api/…`) and the key page (`/`).
    pub api: bool,
    /// The token the admin API requires; `None` only on a loopback address.
    pub token: Option<Secret>,
}

/// Which roots verify an https upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Roots {
    /// Mozilla's roots, compiled in.
    Webpki,
    /// The operating system's store.
    Native,
}

/// What `Authorization` the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "key")]
pub enum UpstreamAuth {
    /// The client's own (canonicalised) bearer key, so Chime re-checks it.
    Passthrough,
    /// One service key replaces the client's.
    Service(Secret),
}

/// The upstream Chime.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `https://chime.example.com/Chime`.
    #[serde(serialize_with = "ser_display")]
    pub base_url: http::Uri,
    /// TCP (and TLS) connect timeout.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers arrive.
    #[serde(serialize_with = "ser_duration")]
    pub response_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(serialize_with = "ser_duration")]
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections.
    pub pool_max_idle_per_host: usize,
    /// Trust roots for https.
    pub roots: Roots,
    /// Extra CA bundle (PEM) trusted for https.
    pub ca_file: Option<PathBuf>,
    /// Upstream authentication mode.
    pub auth: UpstreamAuth,
    /// Client certificate and key (PEM) for an upstream that requires mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any upstream certificate. Insecure: for lab setups only;
    /// logged as a warning at start-up.
    pub danger_accept_invalid_certs: bool,
    /// Consecutive connect failures or timeouts that open the circuit (0: never).
    pub breaker_failures: u32,
    /// How long an open circuit fails fast before a probe.
    #[serde(serialize_with = "ser_duration")]
    pub breaker_cool_down: Duration,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl UpstreamConfig {
    /// The base URL's path with no trailing slash (`/Chime`).
    pub fn path_prefix(&self) -> &str {
        self.base_url.path().trim_end_matches('/')
    }
}

/// Where keys come from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// A key file on disk.
    File(PathBuf),
    /// A key file compiled into the binary (demo mode).
    #[serde(serialize_with = "ser_embedded")]
    Embedded(&'static str),
    /// PostgreSQL, for several instances.
    Postgres(crate::keystore::postgres::PgSettings),
}

fn ser_embedded<S: serde::Serializer>(_: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<compiled in>")
}

/// The key store.
#[derive(Debug, Clone, Serialize)]
pub struct KeysConfig {
    /// Where keys come from.
    pub source: KeySource,
    /// How often the key file is checked for changes.
    #[serde(serialize_with = "ser_duration")]
    pub watch_interval: Duration,
    /// How long a remote store's positive verdict is cached.
    #[serde(serialize_with = "ser_duration")]
    pub cache_ttl: Duration,
    /// How long a remote store's "unknown key" verdict is cached.
    #[serde(serialize_with = "ser_duration")]
    pub negative_cache_ttl: Duration,
    /// Most cached verdicts.
    pub cache_capacity: u64,
    /// Start even when the key file is readable by every user.
    pub allow_world_readable: bool,
    /// How long past `cache_ttl` a known key keeps working while a remote store is down.
    #[serde(serialize_with = "ser_duration")]
    pub resurrect_ttl: Duration,
}

/// TLS on the public listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    /// Certificate chain and private key (PEM); `None`: plain HTTP.
    pub files: Option<(PathBuf, PathBuf)>,
    /// How often the files are checked for changes.
    #[serde(serialize_with = "ser_duration")]
    pub watch_interval: Duration,
    /// A plain-HTTP listener that only redirects to HTTPS.
    pub redirect_from: Option<SocketAddr>,
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditConfig {
    /// Where lines go.
    pub target: crate::audit::AuditTarget,
    /// Lines queued for the writer before new ones are dropped (and counted).
    pub queue_capacity: usize,
}

/// Metrics options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    /// Count requests per user (users are a bounded set; off by default).
    pub per_user: bool,
}

/// Authentication settings.
#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// Failed authentications one client address may make per minute
    /// before it is refused with 429 until its budget recovers.
    pub max_failures_per_minute: std::num::NonZeroU32,
    /// Most client addresses tracked by the failure throttle; past this the
    /// tracker drops addresses whose budget has recovered.
    pub throttle_max_tracked: usize,
}

/// The report catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogConfig {
    /// Known reports until the first refresh from the upstream.
    pub report: Vec<ReportDef>,
    /// How often the catalog is refreshed from Chime's discovery routes (0: never).
    #[serde(serialize_with = "ser_duration")]
    pub refresh_interval: Duration,
    /// The queue whose discovery routes list the per-queue reports.
    pub refresh_queue_id: u32,
    /// The key the refresh uses; without one, the configured list stays.
    pub refresh_key: Option<Secret>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// A `tracing` filter directive (`info`, `chime_gateway=debug`).
    pub level: String,
}

/// The configuration file's own defaults (`check-config` with an empty file prints them).
pub const DEFAULT_PATH: &str = "config/gateway.toml";

impl Config {
    /// Reads and validates the file at `path`, with overrides from `env`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, &file, base, env)
    }

    /// Validates TOML text; relative paths resolve against `base_dir`.
    pub fn from_toml(
        text: &str,
        file: &str,
        base_dir: &Path,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: e
                .span()
                .and_then(|span| key_at(text, span.start))
                .unwrap_or_else(|| "(syntax)".into()),
            message: e.message().trim().to_owned(),
        })?;
        Validator {
            file,
            base_dir,
            env,
        }
        .validate(raw)
    }

    /// The embedded defaults, as if from an empty file.
    pub fn defaults() -> Config {
        // An empty document is always valid: every section has defaults.
        match Self::from_toml("", "<defaults>", Path::new("."), &HashMap::new()) {
            Ok(c) => c,
            Err(e) => unreachable!("embedded defaults are invalid: {e}"),
        }
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The key name on the line where `offset` falls, for errors toml reports by span.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let key = line.split('=').next()?.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

struct Validator<'a> {
    file: &'a str,
    base_dir: &'a Path,
    env: &'a dyn Env,
}

impl Validator<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn override_str(&self, var: &str, value: String) -> String {
        self.env.var(var).unwrap_or(value)
    }

    fn duration(&self, key: &str, value: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value).map_err(|e| {
            self.err(
                key,
                format!("`{value}` is not a duration like \"30s\": {e}"),
            )
        })
    }

    fn addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            self.err(
                key,
                format!("`{value}` is not an address like 127.0.0.1:8080"),
            )
        })
    }

    fn positive(&self, key: &str, value: usize) -> Result<usize, ConfigError> {
        if value == 0 {
            return Err(self.err(key, "must be at least 1"));
        }
        Ok(value)
    }

    fn path(&self, value: &str) -> PathBuf {
        let p = PathBuf::from(value);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let l = raw.listen;
        let address = self.override_str("CHIME_GATEWAY_LISTEN", l.address);
        let listen = ListenConfig {
            address: self.addr("listen.address", &address)?,
            header_read_timeout: self
                .duration("listen.header_read_timeout", &l.header_read_timeout)?,
            max_header_bytes: {
                if l.max_header_bytes < 8192 {
                    return Err(self.err("listen.max_header_bytes", "must be at least 8192"));
                }
                l.max_header_bytes
            },
            max_headers: self.positive("listen.max_headers", l.max_headers)?,
            max_query_bytes: self.positive("listen.max_query_bytes", l.max_query_bytes)?,
            idle_timeout: self.duration("listen.idle_timeout", &l.idle_timeout)?,
            stall_timeout: self.duration("listen.stall_timeout", &l.stall_timeout)?,
            max_connections: self.positive("listen.max_connections", l.max_connections)?,
            shutdown_grace: self.duration("listen.shutdown_grace", &l.shutdown_grace)?,
            workers: crate::workers::resolve(l.workers),
            park_after: self.duration("listen.park_after", &l.park_after)?,
        };
        let admin = self.admin(raw.admin)?;
        let upstream = self.upstream(raw.upstream)?;
        let keys_file = self.override_str("CHIME_GATEWAY_KEYS_FILE", raw.keys.file.clone());
        let k = raw.keys;
        let source = match k.store.as_str() {
            "file" => KeySource::File(self.path(&keys_file)),
            "postgres" => {
                let url = self
                    .env
                    .var(&k.postgres_url_env)
                    .or_else(|| k.postgres_url.clone())
                    .ok_or_else(|| {
                        self.err(
                            "keys.postgres_url",
                            format!(
                                "\"postgres\" needs postgres_url or the variable {}",
                                k.postgres_url_env
                            ),
                        )
                    })?;
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(self.err(
                        "keys.postgres_url",
                        "must start with postgres:// or postgresql://",
                    ));
                }
                if !crate::keystore::postgres::schema::valid_schema(&k.postgres_schema) {
                    return Err(self.err(
                        "keys.postgres_schema",
                        "use lower-case letters, digits and _ (starting with a letter or _)",
                    ));
                }
                KeySource::Postgres(crate::keystore::postgres::PgSettings {
                    url: Secret::new(url),
                    schema: k.postgres_schema.clone(),
                    pool_size: self.positive("keys.postgres_pool_size", k.postgres_pool_size)?,
                    timeout: self.duration("keys.postgres_timeout", &k.postgres_timeout)?,
                    migrate_on_start: k.migrate_on_start,
                    last_used_flush: self.duration("keys.last_used_flush", &k.last_used_flush)?,
                })
            }
            other => {
                return Err(self.err(
                    "keys.store",
                    format!("`{other}` is not one of \"file\", \"postgres\""),
                ))
            }
        };
        let keys = KeysConfig {
            source,
            resurrect_ttl: self.duration("keys.resurrect_ttl", &k.resurrect_ttl)?,
            allow_world_readable: k.allow_world_readable,
            watch_interval: self.duration("keys.watch_interval", &k.watch_interval)?,
            cache_ttl: self.duration("keys.cache_ttl", &k.cache_ttl)?,
            negative_cache_ttl: self.duration("keys.negative_cache_ttl", &k.negative_cache_ttl)?,
            cache_capacity: k.cache_capacity,
        };
        if keys.watch_interval.is_zero() {
            return Err(self.err("keys.watch_interval", "must be more than 0"));
        }
        let auth = AuthConfig {
            max_failures_per_minute: std::num::NonZeroU32::new(raw.auth.max_failures_per_minute)
                .ok_or_else(|| self.err("auth.max_failures_per_minute", "must be at least 1"))?,
            throttle_max_tracked: self
                .positive("auth.throttle_max_tracked", raw.auth.throttle_max_tracked)?,
        };
        let upstream_key = match &upstream.auth {
            UpstreamAuth::Service(key) => Some(key.clone()),
            UpstreamAuth::Passthrough => None,
        };
        let catalog = self.catalog(raw.catalog, upstream_key)?;
        let request = self.request(raw.request)?;
        let ratelimit = self.ratelimit(raw.ratelimit)?;
        let t = raw.tls;
        let tls = TlsConfig {
            files: t
                .enabled
                .then(|| (self.path(&t.cert_file), self.path(&t.key_file))),
            watch_interval: self.duration("tls.watch_interval", &t.watch_interval)?,
            redirect_from: match &t.redirect_from {
                None => None,
                Some(a) if !t.enabled => {
                    return Err(self.err(
                        "tls.redirect_from",
                        format!("`{a}`: redirecting to HTTPS needs tls.enabled = true"),
                    ))
                }
                Some(a) => Some(self.addr("tls.redirect_from", a)?),
            },
        };
        if tls.watch_interval.is_zero() {
            return Err(self.err("tls.watch_interval", "must be more than 0"));
        }
        let audit = AuditConfig {
            target: match raw.audit.target.as_str() {
                "off" => crate::audit::AuditTarget::Off,
                "stdout" => crate::audit::AuditTarget::Stdout,
                "file" => crate::audit::AuditTarget::File(self.path(&raw.audit.file)),
                other => {
                    return Err(self.err(
                        "audit.target",
                        format!("`{other}` is not one of \"stdout\", \"file\", \"off\""),
                    ))
                }
            },
            queue_capacity: self.positive("audit.queue_capacity", raw.audit.queue_capacity)?,
        };
        let cache = self.cache(raw.cache)?;
        let log = LogConfig {
            format: match raw.log.format.as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => {
                    return Err(self.err(
                        "log.format",
                        format!("`{other}` is not one of \"json\", \"text\""),
                    ))
                }
            },
            level: raw.log.level,
        };
        Ok(Config {
            listen,
            admin,
            upstream,
            keys,
            auth,
            request,
            ratelimit,
            audit,
            tls,
            metrics: MetricsConfig {
                per_user: raw.metrics.per_user,
            },
            catalog,
            log,
            cache,
        })
    }

    fn admin(&self, a: raw::RawAdmin) -> Result<AdminConfig, ConfigError> {
        let admin_addr = self.override_str("CHIME_GATEWAY_ADMIN_LISTEN", a.address);
        let address = self.addr("admin.address", &admin_addr)?;
        let token = match &a.token_file {
            Some(path) => Some(self.secret_file("admin.token_file", path)?),
            None => match self.env.var(&a.token_env).filter(|v| !v.is_empty()) {
                Some(v) => Some(self.checked_secret(&format!("env {}", a.token_env), &v)?),
                None => None,
            },
        };
        if let Some(t) = &token {
            if t.expose().len() < 16 {
                return Err(self.err(
                    "admin.token_file",
                    "the admin token must be at least 16 characters",
                ));
            }
        }
        if a.api && token.is_none() && !address.ip().is_loopback() {
            return Err(self.err(
                "admin.api",
                format!(
                    "the admin API on {address} (not loopback) needs a token: set admin.token_file or {}, bind admin.address to 127.0.0.1, or set api = false",
                    a.token_env
                ),
            ));
        }
        Ok(AdminConfig {
            address,
            api: a.api,
            token,
        })
    }

    fn cache(&self, c: raw::RawCache) -> Result<crate::cache::CacheConfig, ConfigError> {
        let cache = crate::cache::CacheConfig {
            coalesce: c.coalesce,
            enabled: c.enabled,
            max_bytes: c.max_bytes,
            max_entry_bytes: self.positive("cache.max_entry_bytes", c.max_entry_bytes)?,
            discovery_ttl: self.duration("cache.discovery_ttl", &c.discovery_ttl)?,
            report_ttl: self.duration("cache.report_ttl", &c.report_ttl)?,
            settle: self.duration("cache.settle", &c.settle)?,
        };
        if cache.enabled && (cache.max_entry_bytes as u64) > cache.max_bytes {
            return Err(self.err("cache.max_entry_bytes", "must not exceed cache.max_bytes"));
        }
        Ok(cache)
    }

    fn catalog(
        &self,
        c: raw::RawCatalog,
        upstream_key: Option<Secret>,
    ) -> Result<CatalogConfig, ConfigError> {
        let report = c.report.unwrap_or_else(catalog::builtin);
        catalog::validate(&report).map_err(|message| self.err("catalog.report", message))?;
        if c.refresh_queue_id == 0 || c.refresh_queue_id > i32::MAX as u32 {
            return Err(self.err(
                "catalog.refresh_queue_id",
                "must be a positive 32-bit integer",
            ));
        }
        let refresh_key = match &c.refresh_key_file {
            Some(path) => Some(self.secret_file("catalog.refresh_key_file", path)?),
            None => match self.env.var(&c.refresh_key_env).filter(|v| !v.is_empty()) {
                Some(v) => Some(self.checked_secret(&format!("env {}", c.refresh_key_env), &v)?),
                None => upstream_key,
            },
        };
        Ok(CatalogConfig {
            report,
            refresh_interval: self.duration("catalog.refresh_interval", &c.refresh_interval)?,
            refresh_queue_id: c.refresh_queue_id,
            refresh_key,
        })
    }

    fn ratelimit(
        &self,
        r: raw::RawRateLimit,
    ) -> Result<crate::ratelimit::RateLimitConfig, ConfigError> {
        use crate::ratelimit::{RateLimitConfig, SharedConfig, Tier};
        let tiers: Vec<Tier> = match r.tier {
            None => vec![
                Tier::new("default", 60, 20, 4),
                Tier::new("internal", 600, 100, 16),
                Tier::new("partner", 120, 40, 8),
            ],
            Some(map) => {
                let mut tiers = Vec::new();
                for (name, t) in map {
                    let key = format!("ratelimit.tier.{name}");
                    if t.per_minute == 0 || t.burst == 0 || t.max_in_flight == 0 {
                        return Err(self.err(
                            &key,
                            "per_minute, burst and max_in_flight must be at least 1",
                        ));
                    }
                    tiers.push(Tier::new(&name, t.per_minute, t.burst, t.max_in_flight));
                }
                if !tiers.iter().any(|t| &*t.name == "default") {
                    return Err(self.err(
                        "ratelimit.tier",
                        "a tier named \"default\" is required (users without a known tier get it)",
                    ));
                }
                tiers
            }
        };
        let mut report_weight = HashMap::new();
        for (name, w) in r.report_weight {
            let key = format!("ratelimit.report_weight.{name}");
            if !catalog::is_report_name(&name) {
                return Err(self.err(&key, "is not a report name"));
            }
            let w =
                std::num::NonZeroU32::new(w).ok_or_else(|| self.err(&key, "must be at least 1"))?;
            report_weight.insert(name.to_ascii_lowercase(), w);
        }
        let shared = match r.backend.as_str() {
            "local" => None,
            "redis" => {
                let url = self
                    .env
                    .var(&r.redis_url_env)
                    .or(r.redis_url)
                    .ok_or_else(|| {
                        self.err(
                            "ratelimit.redis_url",
                            format!(
                                "\"redis\" needs redis_url or the variable {}",
                                r.redis_url_env
                            ),
                        )
                    })?;
                if !(url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("unix://"))
                {
                    return Err(self.err(
                        "ratelimit.redis_url",
                        "must start with redis://, rediss:// or unix://",
                    ));
                }
                Some(SharedConfig {
                    url: Secret::new(url),
                    timeout: self.duration("ratelimit.redis_timeout", &r.redis_timeout)?,
                    key_prefix: r.redis_key_prefix,
                })
            }
            other => {
                return Err(self.err(
                    "ratelimit.backend",
                    format!("`{other}` is not one of \"local\", \"redis\""),
                ))
            }
        };
        Ok(RateLimitConfig {
            tiers,
            upstream_max_in_flight: self
                .positive("ratelimit.upstream_max_in_flight", r.upstream_max_in_flight)?,
            report_weight,
            window_days_per_cost: r.window_days_per_cost,
            shared,
        })
    }

    fn request(&self, r: raw::RawRequest) -> Result<crate::request::RequestOptions, ConfigError> {
        let end_name = match r.end_parameter.as_str() {
            "stop" => "stop",
            "end" => "end",
            other => {
                return Err(self.err(
                    "request.end_parameter",
                    format!("`{other}` is not one of \"stop\", \"end\""),
                ))
            }
        };
        let window = |key: &str, v: &str| -> Result<jiff::SignedDuration, ConfigError> {
            let d = self.duration(key, v)?;
            if d.is_zero() {
                return Err(self.err(key, "must be more than 0"));
            }
            jiff::SignedDuration::try_from(d).map_err(|e| self.err(key, e.to_string()))
        };
        let max_window = window("request.max_window", &r.max_window)?;
        let mut per_report = HashMap::new();
        for (name, v) in &r.max_window_per_report {
            if !catalog::is_report_name(name) {
                return Err(self.err(
                    &format!("request.max_window_per_report.{name}"),
                    "is not a report name",
                ));
            }
            let d = window(&format!("request.max_window_per_report.{name}"), v)?;
            per_report.insert(name.to_ascii_lowercase(), d);
        }
        if let Some(expr) = &r.default_start {
            crate::request::time::evaluate(
                expr,
                crate::request::time::End::Start,
                jiff::Timestamp::now,
                &jiff::tz::TimeZone::UTC,
            )
            .map_err(|problem| self.err("request.default_start", format!("`{expr}` {problem}")))?;
        }
        Ok(crate::request::RequestOptions {
            end_name,
            max_window,
            max_window_per_report: per_report,
            default_start: r.default_start,
            csv_default: r.csv_default,
        })
    }

    fn secret_file(&self, key: &str, path: &str) -> Result<Secret, ConfigError> {
        let value = std::fs::read_to_string(self.path(path))
            .map_err(|e| self.err(key, format!("cannot read `{path}`: {e}")))?;
        self.checked_secret(key, &value)
    }

    /// A secret from a file or the environment: trimmed, non-empty, printable ASCII
    /// (it goes into an HTTP header or a URL).
    fn checked_secret(&self, key: &str, value: &str) -> Result<Secret, ConfigError> {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.err(key, "the key must be non-empty printable ASCII"));
        }
        Ok(Secret::new(value))
    }

    fn upstream(&self, u: raw::RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let base = self.override_str("CHIME_GATEWAY_UPSTREAM_URL", u.base_url.clone());
        let key = "upstream.base_url";
        let base_url: http::Uri = base
            .parse()
            .map_err(|e| self.err(key, format!("`{base}` is not a URL: {e}")))?;
        match base_url.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(self.err(key, format!("`{base}` must start with http:// or https://"))),
        }
        if base_url.authority().is_none() {
            return Err(self.err(key, format!("`{base}` has no host")));
        }
        if base_url.query().is_some() {
            return Err(self.err(key, "must not have a query string"));
        }
        // Every upstream request's target starts with this path.
        let path = format!("{}/", base_url.path().trim_end_matches('/'));
        if crate::proxy::UpstreamRequest::new(http::Method::GET, path, 0).is_err() {
            return Err(self.err(
                key,
                "its path may hold only letters, digits, `/`, percent-escapes \
                 and -._~!$&'()*+,;=:@",
            ));
        }
        // The URL is not echoed: it would carry the password into the log.
        if base_url
            .authority()
            .is_some_and(|a| a.as_str().contains('@'))
        {
            return Err(self.err(
                key,
                "must not carry a user name or password (user:password@host); \
                 the gateway authenticates to Chime as upstream.auth says",
            ));
        }
        let roots = match u.roots.as_str() {
            "webpki" => Roots::Webpki,
            "native" => Roots::Native,
            other => {
                return Err(self.err(
                    "upstream.roots",
                    format!("`{other}` is not one of \"webpki\", \"native\""),
                ))
            }
        };
        let auth = match u.auth.as_str() {
            "passthrough" => UpstreamAuth::Passthrough,
            "service" => UpstreamAuth::Service(self.service_key(&u)?),
            other => {
                return Err(self.err(
                    "upstream.auth",
                    format!("`{other}` is not one of \"passthrough\", \"service\""),
                ))
            }
        };
        Ok(UpstreamConfig {
            base_url,
            connect_timeout: self.duration("upstream.connect_timeout", &u.connect_timeout)?,
            response_timeout: self.duration("upstream.response_timeout", &u.response_timeout)?,
            pool_idle_timeout: self.duration("upstream.pool_idle_timeout", &u.pool_idle_timeout)?,
            pool_max_idle_per_host: u.pool_max_idle_per_host,
            roots,
            ca_file: u.ca_file.as_deref().map(|p| self.path(p)),
            auth,
            client_cert: match (&u.client_cert_file, &u.client_key_file) {
                (None, None) => None,
                (Some(c), Some(k)) => Some((self.path(c), self.path(k))),
                _ => {
                    return Err(self.err(
                        "upstream.client_cert_file",
                        "client_cert_file and client_key_file go together",
                    ))
                }
            },
            danger_accept_invalid_certs: u.danger_accept_invalid_certs,
            breaker_failures: u.breaker_failures,
            breaker_cool_down: self.duration("upstream.breaker_cool_down", &u.breaker_cool_down)?,
        })
    }

    fn service_key(&self, u: &raw::RawUpstream) -> Result<Secret, ConfigError> {
        if let Some(path) = &u.service_key_file {
            return self.secret_file("upstream.service_key_file", path);
        }
        let value = self.env.var(&u.service_key_env).ok_or_else(|| {
            self.err(
                "upstream.auth",
                format!(
                    "\"service\" needs upstream.service_key_file or the variable {}",
                    u.service_key_env
                ),
            )
        })?;
        self.checked_secret(&format!("env {}", u.service_key_env), &value)
    }
}

#[cfg(test)]
mod tests;
