//! Prometheus metrics, registered into a registry the caller owns (no
//! globals, so each test asserts exact counts on its own registry).
//!
//! Labels are bounded: route kind, status class, refusal code, report names
//! from the catalog (unknown names are labelled `unknown`). Never a key, a
//! user-supplied path or a query.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::route::RouteKind;

/// One route kind's series on the request path, resolved once: recording
/// then neither hashes label values nor takes the vector's lock.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// `request_duration_seconds{route}`.
    pub duration: Histogram,
    /// `response_bytes_total{route}`.
    pub bytes: IntCounter,
    /// `upstream_duration_seconds{route}`, for kinds that reach Chime.
    pub upstream: Option<Histogram>,
}

/// Buckets from 5 ms to 5 minutes: report queries range from cache hits to long CSV exports.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The gateway's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Per route kind, in the order of [`RouteKind::ALL`].
    routes: [RouteMetrics; RouteKind::ALL.len()],
    /// `key_cache_lookups_total{result="hit"}`, counted on every request.
    pub key_cache_hits: IntCounter,
    /// Requests by route kind, status class and outcome (`ok` or the refusal code).
    pub requests: IntCounterVec,
    /// Time to the end of the response body, by route kind.
    pub request_duration: HistogramVec,
    /// Time until the upstream's response headers, by route kind.
    pub upstream_duration: HistogramVec,
    /// Response body bytes sent, by route kind.
    pub response_bytes: IntCounterVec,
    /// Requests being handled.
    pub in_flight: IntGauge,
    /// Upstream failures by kind (`connect`, `timeout`, `protocol`, `bad_answer`).
    pub upstream_errors: IntCounterVec,
    /// Open client connections.
    pub connections: IntGauge,
    /// Client connections holding no HTTP state while they wait for a request.
    pub parked_connections: IntGauge,
    /// Open client connections per worker thread (`listen.workers`).
    pub worker_connections: IntGaugeVec,
    /// Authentication failures by reason (`missing`, `malformed`, `unknown`, `throttled`).
    pub auth_failures: IntCounterVec,
    /// Keys currently loaded by the key store.
    pub keys_loaded: IntGauge,
    /// Key store reloads by result (`success`, `failure`).
    pub key_reloads: IntCounterVec,
    /// Unix time of the last successful key store (re)load.
    pub key_last_reload: IntGauge,
    /// Reports in the catalog.
    pub catalog_reports: IntGauge,
    /// Catalog refreshes by result (`success`, `failure`).
    pub catalog_refreshes: IntCounterVec,
    /// Unix time of the last successful catalog refresh.
    pub catalog_last_refresh: IntGauge,
    /// Requests refused by a limit (`rate`, `concurrency`, `upstream`).
    pub ratelimit_rejections: IntCounterVec,
    /// 1 while the shared (Redis) limiter answers, 0 while on the local fallback.
    pub ratelimit_shared_up: IntGauge,
    /// Switches from the shared limiter to the local fallback.
    pub ratelimit_fallbacks: prometheus::IntCounter,
    /// ACL refusals by reason (`queue_forbidden`, `admin_only`, `session_forbidden`).
    pub acl_denials: IntCounterVec,
    /// Key cache lookups (remote key stores) by result (`hit`, `miss`).
    pub key_cache: IntCounterVec,
    /// Open connections to the upstream (pooled or in use).
    pub upstream_connections: IntGauge,
    /// Audit lines dropped because the writer fell behind.
    pub audit_dropped: prometheus::IntCounter,
    /// Audit write failures.
    pub audit_write_errors: prometheus::IntCounter,
    /// Requests per user and outcome (only when `metrics.per_user` is on).
    pub user_requests: IntCounterVec,
    /// 1 while a remote key store answers, 0 while it does not.
    pub key_store_up: IntGauge,
    /// 1 while the key change listener is connected (PostgreSQL).
    pub key_store_listener_up: IntGauge,
    /// Requests served from a cached verdict while the key store was down.
    pub key_store_stale_served: prometheus::IntCounter,
    /// TLS certificate reloads by result.
    pub tls_reloads: IntCounterVec,
    /// Response bodies cut short, by side (`upstream` failed, `client` left).
    pub stream_aborts: IntCounterVec,
    /// Requests that shared another identical request's upstream call.
    pub coalesced: prometheus::IntCounter,
    /// Response cache lookups by result (`hit`, `miss`), for cacheable requests.
    pub cache_lookups: IntCounterVec,
    /// Response cache removals by cause (`expired`, `size`, `replaced`, `explicit`).
    pub cache_evictions: IntCounterVec,
    /// Bytes held by the response cache.
    pub cache_bytes: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them (and build info) into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let requests = IntCounterVec::new(
            Opts::new(
                "chime_gateway_requests_total",
                "Requests handled, by route kind, report, status class and outcome.",
            ),
            &["route", "report", "status_class", "outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "chime_gateway_request_duration_seconds",
                "Time from request to the end of the response body.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "chime_gateway_upstream_duration_seconds",
                "Time until the upstream's response headers arrived.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "chime_gateway_response_bytes_total",
                "Response body bytes sent to clients.",
            ),
            &["route"],
        )?;
        let in_flight = IntGauge::new(
            "chime_gateway_in_flight_requests",
            "Requests being handled.",
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "chime_gateway_upstream_errors_total",
                "Upstream failures, by kind.",
            ),
            &["kind"],
        )?;
        let connections =
            IntGauge::new("chime_gateway_open_connections", "Open client connections.")?;
        let parked_connections = IntGauge::new(
            "chime_gateway_parked_connections",
            "Open client connections waiting for a request with no HTTP state or buffers held.",
        )?;
        let worker_connections = IntGaugeVec::new(
            Opts::new(
                "chime_gateway_worker_connections",
                "Open client connections per worker thread.",
            ),
            &["worker"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "chime_gateway_auth_failures_total",
                "Failed authentications, by reason.",
            ),
            &["reason"],
        )?;
        let keys_loaded =
            IntGauge::new("chime_gateway_keys_loaded", "Keys loaded by the key store.")?;
        let key_reloads = IntCounterVec::new(
            Opts::new(
                "chime_gateway_key_store_reloads_total",
                "Key store reloads, by result.",
            ),
            &["result"],
        )?;
        let key_last_reload = IntGauge::new(
            "chime_gateway_key_store_last_reload_timestamp_seconds",
            "Unix time of the last successful key store load.",
        )?;
        let catalog_reports =
            IntGauge::new("chime_gateway_catalog_reports", "Reports in the catalog.")?;
        let catalog_refreshes = IntCounterVec::new(
            Opts::new(
                "chime_gateway_catalog_refreshes_total",
                "Catalog refreshes from the upstream, by result.",
            ),
            &["result"],
        )?;
        let catalog_last_refresh = IntGauge::new(
            "chime_gateway_catalog_last_refresh_timestamp_seconds",
            "Unix time of the last successful catalog refresh.",
        )?;
        let ratelimit_rejections = IntCounterVec::new(
            Opts::new(
                "chime_gateway_ratelimit_rejections_total",
                "Requests refused by a limit, by limit.",
            ),
            &["limit"],
        )?;
        let ratelimit_shared_up = IntGauge::new(
            "chime_gateway_ratelimit_shared_up",
            "1 while the shared (Redis) rate limiter answers, 0 on the local fallback.",
        )?;
        let ratelimit_fallbacks = prometheus::IntCounter::new(
            "chime_gateway_ratelimit_fallbacks_total",
            "Switches from the shared rate limiter to the local fallback.",
        )?;
        let acl_denials = IntCounterVec::new(
            Opts::new(
                "chime_gateway_acl_denials_total",
                "Requests refused by the queue ACL, by reason.",
            ),
            &["reason"],
        )?;
        let key_cache = IntCounterVec::new(
            Opts::new(
                "chime_gateway_key_cache_lookups_total",
                "Key cache lookups in front of a remote key store, by result.",
            ),
            &["result"],
        )?;
        let upstream_connections = IntGauge::new(
            "chime_gateway_upstream_connections",
            "Open connections to the upstream, pooled or in use.",
        )?;
        let audit_dropped = prometheus::IntCounter::new(
            "chime_gateway_audit_dropped_total",
            "Audit lines dropped because the writer fell behind.",
        )?;
        let audit_write_errors = prometheus::IntCounter::new(
            "chime_gateway_audit_write_errors_total",
            "Audit log write failures.",
        )?;
        let user_requests = IntCounterVec::new(
            Opts::new(
                "chime_gateway_user_requests_total",
                "Requests per user and outcome (when enabled).",
            ),
            &["user", "outcome"],
        )?;
        let key_store_up = IntGauge::new(
            "chime_gateway_key_store_up",
            "1 while the key store answers, 0 while it does not.",
        )?;
        key_store_up.set(1);
        let key_store_listener_up = IntGauge::new(
            "chime_gateway_key_store_listener_up",
            "1 while the PostgreSQL key change listener is connected.",
        )?;
        let key_store_stale_served = prometheus::IntCounter::new(
            "chime_gateway_key_store_stale_served_total",
            "Requests authenticated from a cached verdict while the key store was down.",
        )?;
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "chime_gateway_tls_reloads_total",
                "TLS certificate reloads, by result.",
            ),
            &["result"],
        )?;
        let stream_aborts = IntCounterVec::new(
            Opts::new(
                "chime_gateway_stream_aborts_total",
                "Response bodies cut short, by the side that broke off.",
            ),
            &["side"],
        )?;
        let coalesced = prometheus::IntCounter::new(
            "chime_gateway_coalesced_requests_total",
            "Requests answered by sharing an identical request's upstream call.",
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "chime_gateway_cache_lookups_total",
                "Response cache lookups for cacheable requests, by result.",
            ),
            &["result"],
        )?;
        let cache_evictions = IntCounterVec::new(
            Opts::new(
                "chime_gateway_cache_evictions_total",
                "Entries removed from the response cache, by cause.",
            ),
            &["cause"],
        )?;
        let cache_bytes = IntGauge::new(
            "chime_gateway_cache_bytes",
            "Bytes held by the response cache.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "chime_gateway_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Known label values start at zero, so rate() and increase() work
        // from the first scrape and dashboards show every series.
        for (vec, values) in [
            (
                &auth_failures,
                &[
                    "missing",
                    "malformed",
                    "unknown",
                    "multiple",
                    "store_unavailable",
                    "throttled",
                ][..],
            ),
            (
                &upstream_errors,
                &[
                    "connect",
                    "connect_retried",
                    "timeout",
                    "protocol",
                    "bad_answer",
                    "circuit_open",
                ][..],
            ),
            (&key_reloads, &["success", "failure"][..]),
            (&catalog_refreshes, &["success", "failure"][..]),
            (
                &ratelimit_rejections,
                &["rate", "concurrency", "upstream"][..],
            ),
            (
                &acl_denials,
                &["queue_forbidden", "admin_only", "session_forbidden"][..],
            ),
            (&key_cache, &["hit", "miss"][..]),
            (&tls_reloads, &["success", "failure"][..]),
            (&stream_aborts, &["upstream", "client"][..]),
            (&cache_lookups, &["hit", "miss"][..]),
            (
                &cache_evictions,
                &["expired", "size", "replaced", "explicit"][..],
            ),
        ] {
            for v in values {
                vec.with_label_values(&[v]);
            }
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(response_bytes.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(parked_connections.clone()))?;
        registry.register(Box::new(worker_connections.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(keys_loaded.clone()))?;
        registry.register(Box::new(key_reloads.clone()))?;
        registry.register(Box::new(key_last_reload.clone()))?;
        registry.register(Box::new(catalog_reports.clone()))?;
        registry.register(Box::new(catalog_refreshes.clone()))?;
        registry.register(Box::new(catalog_last_refresh.clone()))?;
        registry.register(Box::new(ratelimit_rejections.clone()))?;
        registry.register(Box::new(ratelimit_shared_up.clone()))?;
        registry.register(Box::new(ratelimit_fallbacks.clone()))?;
        registry.register(Box::new(acl_denials.clone()))?;
        registry.register(Box::new(key_cache.clone()))?;
        registry.register(Box::new(upstream_connections.clone()))?;
        registry.register(Box::new(audit_dropped.clone()))?;
        registry.register(Box::new(audit_write_errors.clone()))?;
        registry.register(Box::new(user_requests.clone()))?;
        registry.register(Box::new(key_store_up.clone()))?;
        registry.register(Box::new(key_store_listener_up.clone()))?;
        registry.register(Box::new(key_store_stale_served.clone()))?;
        registry.register(Box::new(tls_reloads.clone()))?;
        registry.register(Box::new(stream_aborts.clone()))?;
        registry.register(Box::new(coalesced.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(cache_evictions.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "chime_gateway",
            ),
        ))?;
        let routes = RouteKind::ALL.map(|kind| RouteMetrics {
            duration: request_duration.with_label_values(&[kind.as_str()]),
            bytes: response_bytes.with_label_values(&[kind.as_str()]),
            upstream: kind
                .reaches_upstream()
                .then(|| upstream_duration.with_label_values(&[kind.as_str()])),
        });
        Ok(Metrics {
            routes,
            key_cache_hits: key_cache.with_label_values(&["hit"]),
            requests,
            request_duration,
            upstream_duration,
            response_bytes,
            in_flight,
            upstream_errors,
            connections,
            parked_connections,
            worker_connections,
            auth_failures,
            keys_loaded,
            key_reloads,
            key_last_reload,
            catalog_reports,
            catalog_refreshes,
            catalog_last_refresh,
            ratelimit_rejections,
            ratelimit_shared_up,
            ratelimit_fallbacks,
            acl_denials,
            key_cache,
            upstream_connections,
            audit_dropped,
            audit_write_errors,
            user_requests,
            key_store_up,
            key_store_listener_up,
            key_store_stale_served,
            tls_reloads,
            stream_aborts,
            coalesced,
            cache_lookups,
            cache_evictions,
            cache_bytes,
        })
    }
}

impl Metrics {
    /// The series of route kind `kind`.
    pub fn route(&self, kind: RouteKind) -> &RouteMetrics {
        &self.routes[kind as usize]
    }
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 * 1024);
    // Encoding into a Vec fails only on invalid metric families, which registration rejects.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}

/// `2xx`, `4xx`, ...
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.requests
            .with_label_values(&["report", "InboundVsAnsweredChats", "2xx", "ok"])
            .inc();
        let text = String::from_utf8(render(&registry)).unwrap();
        assert!(
            text.contains(r#"chime_gateway_requests_total{outcome="ok",report="InboundVsAnsweredChats",route="report",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(text.contains("chime_gateway_process_resident_memory_bytes"));
        assert!(text.contains("chime_gateway_build_info{version="));
        // A second registration into the same registry is refused, not silently shared.
        assert!(Metrics::register(&registry).is_err());
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(http::StatusCode::OK), "2xx");
        assert_eq!(status_class(http::StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(http::StatusCode::GATEWAY_TIMEOUT), "5xx");
    }
}
