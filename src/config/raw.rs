//! The configuration file as written: serde structs with defaults and
//! `deny_unknown_fields`. Nothing here is validated; see [`super::Config`].

use serde::Deserialize;

use crate::catalog::ReportDef;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub(crate) listen: RawListen,
    pub(crate) admin: RawAdmin,
    pub(crate) upstream: RawUpstream,
    pub(crate) keys: RawKeys,
    pub(crate) auth: RawAuth,
    pub(crate) request: RawRequest,
    pub(crate) ratelimit: RawRateLimit,
    pub(crate) audit: RawAudit,
    pub(crate) tls: RawTls,
    pub(crate) metrics: RawMetrics,
    pub(crate) catalog: RawCatalog,
    pub(crate) log: RawLog,
    pub(crate) cache: RawCache,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawListen {
    pub(crate) address: String,
    pub(crate) header_read_timeout: String,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_query_bytes: usize,
    pub(crate) idle_timeout: String,
    pub(crate) stall_timeout: String,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_grace: String,
    pub(crate) workers: usize,
    pub(crate) park_after: String,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            address: "127.0.0.1:8080".into(),
            header_read_timeout: "10s".into(),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_query_bytes: 2048,
            idle_timeout: "60s".into(),
            stall_timeout: "5m".into(),
            max_connections: 10_000,
            shutdown_grace: "30s".into(),
            workers: 0,
            park_after: "1s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    pub(crate) address: String,
    pub(crate) api: bool,
    pub(crate) token_file: Option<String>,
    pub(crate) token_env: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            address: "127.0.0.1:9090".into(),
            api: true,
            token_file: None,
            token_env: "CHIME_GATEWAY_ADMIN_TOKEN".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawUpstream {
    pub(crate) base_url: String,
    pub(crate) connect_timeout: String,
    pub(crate) response_timeout: String,
    pub(crate) pool_idle_timeout: String,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) roots: String,
    pub(crate) ca_file: Option<String>,
    pub(crate) auth: String,
    pub(crate) service_key_file: Option<String>,
    pub(crate) service_key_env: String,
    pub(crate) client_cert_file: Option<String>,
    pub(crate) client_key_file: Option<String>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_cool_down: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            base_url: "http://127.0.0.1:5000/Chime".into(),
            connect_timeout: "5s".into(),
            response_timeout: "120s".into(),
            pool_idle_timeout: "90s".into(),
            pool_max_idle_per_host: 64,
            roots: "webpki".into(),
            ca_file: None,
            auth: "passthrough".into(),
            service_key_file: None,
            service_key_env: "CHIME_GATEWAY_UPSTREAM_SERVICE_KEY".into(),
            client_cert_file: None,
            client_key_file: None,
            danger_accept_invalid_certs: false,
            breaker_failures: 5,
            breaker_cool_down: "10s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawKeys {
    pub(crate) store: String,
    pub(crate) file: String,
    pub(crate) postgres_url: Option<String>,
    pub(crate) postgres_url_env: String,
    pub(crate) postgres_schema: String,
    pub(crate) postgres_pool_size: usize,
    pub(crate) postgres_timeout: String,
    pub(crate) migrate_on_start: bool,
    pub(crate) resurrect_ttl: String,
    pub(crate) last_used_flush: String,
    pub(crate) allow_world_readable: bool,
    pub(crate) watch_interval: String,
    pub(crate) cache_ttl: String,
    pub(crate) negative_cache_ttl: String,
    pub(crate) cache_capacity: u64,
}

impl Default for RawKeys {
    fn default() -> Self {
        RawKeys {
            store: "file".into(),
            file: "keys.toml".into(),
            postgres_url: None,
            postgres_url_env: "CHIME_GATEWAY_KEYS_POSTGRES_URL".into(),
            postgres_schema: "chime_gateway".into(),
            postgres_pool_size: 8,
            postgres_timeout: "2s".into(),
            migrate_on_start: false,
            resurrect_ttl: "5m".into(),
            last_used_flush: "10s".into(),
            allow_world_readable: false,
            watch_interval: "250ms".into(),
            cache_ttl: "30s".into(),
            negative_cache_ttl: "5s".into(),
            cache_capacity: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTls {
    pub(crate) enabled: bool,
    pub(crate) cert_file: String,
    pub(crate) key_file: String,
    pub(crate) watch_interval: String,
    pub(crate) redirect_from: Option<String>,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            enabled: false,
            cert_file: "tls/cert.pem".into(),
            key_file: "tls/key.pem".into(),
            watch_interval: "5s".into(),
            redirect_from: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAudit {
    pub(crate) target: String,
    pub(crate) file: String,
    pub(crate) queue_capacity: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            target: "stdout".into(),
            file: "audit.log".into(),
            queue_capacity: 10_000,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMetrics {
    pub(crate) per_user: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRateLimit {
    pub(crate) backend: String,
    pub(crate) redis_url: Option<String>,
    pub(crate) redis_url_env: String,
    pub(crate) redis_timeout: String,
    pub(crate) redis_key_prefix: String,
    pub(crate) upstream_max_in_flight: usize,
    pub(crate) window_days_per_cost: u32,
    pub(crate) report_weight: std::collections::BTreeMap<String, u32>,
    pub(crate) tier: Option<std::collections::BTreeMap<String, RawTier>>,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            backend: "local".into(),
            redis_url: None,
            redis_url_env: "CHIME_GATEWAY_REDIS_URL".into(),
            redis_timeout: "100ms".into(),
            redis_key_prefix: "chime-gateway:rl:".into(),
            upstream_max_in_flight: 256,
            window_days_per_cost: 0,
            report_weight: Default::default(),
            tier: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub(crate) per_minute: u32,
    pub(crate) burst: u32,
    #[serde(default = "default_tier_in_flight")]
    pub(crate) max_in_flight: usize,
}

fn default_tier_in_flight() -> usize {
    4
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRequest {
    pub(crate) end_parameter: String,
    pub(crate) max_window: String,
    pub(crate) max_window_per_report: std::collections::BTreeMap<String, String>,
    pub(crate) default_start: Option<String>,
    pub(crate) csv_default: bool,
}

impl Default for RawRequest {
    fn default() -> Self {
        RawRequest {
            end_parameter: "stop".into(),
            max_window: "366d".into(),
            max_window_per_report: Default::default(),
            default_start: None,
            csv_default: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAuth {
    pub(crate) max_failures_per_minute: u32,
    pub(crate) throttle_max_tracked: usize,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            max_failures_per_minute: 20,
            throttle_max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCatalog {
    pub(crate) report: Option<Vec<ReportDef>>,
    pub(crate) refresh_interval: String,
    pub(crate) refresh_queue_id: u32,
    pub(crate) refresh_key_file: Option<String>,
    pub(crate) refresh_key_env: String,
}

impl Default for RawCatalog {
    fn default() -> Self {
        RawCatalog {
            report: None,
            refresh_interval: "10m".into(),
            refresh_queue_id: 1,
            refresh_key_file: None,
            refresh_key_env: "CHIME_GATEWAY_CATALOG_KEY".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub(crate) format: String,
    pub(crate) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCache {
    pub(crate) coalesce: bool,
    pub(crate) enabled: bool,
    pub(crate) max_bytes: u64,
    pub(crate) max_entry_bytes: usize,
    pub(crate) discovery_ttl: String,
    pub(crate) report_ttl: String,
    pub(crate) settle: String,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            coalesce: true,
            enabled: true,
            max_bytes: 64 << 20,
            max_entry_bytes: 8 << 20,
            discovery_ttl: "1m".into(),
            report_ttl: "1h".into(),
            settle: "15m".into(),
        }
    }
}
