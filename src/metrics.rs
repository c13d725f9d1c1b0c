//! Prometheus metrics, registered into a registry the caller owns (no
//! globals, so each test asserts exact counts on its own registry).
//!
//! Labels are bounded: route kind, status class, refusal code, report names
//! from the catalog (unknown names are labelled `unknown`). Never a key, a
//! user-supplied path or a query.

use std::collections::hash_map::{Entry, HashMap};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, Metric, MetricFamily, MetricType};
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
///
/// The series every request updates (`requests_total`,
/// `request_duration_seconds`, `response_bytes_total`,
/// `upstream_duration_seconds`, `in_flight_requests`) exist once per worker
/// thread: [`Metrics::for_worker`] gives a worker a handle whose copies
/// only that worker writes, and the registry holds one collector that adds
/// the copies up when scraped. A counter that both cores increment moves
/// its cache line between them on every request, and `requests_total`'s
/// label lookup takes its vector's lock; per-worker copies do neither.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// This handle's copy of the per-request series.
    series: RequestSeries,
    /// Every worker's copy, for [`Metrics::for_worker`].
    copies: Vec<RequestSeries>,
    /// `key_cache_lookups_total{result="hit"}`, counted on every request.
    pub key_cache_hits: IntCounter,
    /// `cache_lookups_total{result="hit"}` and `{result="miss"}`, one of
    /// which every cacheable request counts.
    pub cache_hits: IntCounter,
    /// See [`Metrics::cache_hits`].
    pub cache_misses: IntCounter,
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
    /// Copies of answers for the cache dropped before the body ended, by
    /// reason (`too_large`, `budget`).
    pub cache_copies_dropped: IntCounterVec,
    /// Bytes held by copies of answers still streaming.
    pub cache_copy_bytes: IntGauge,
    /// Bytes held by the response cache.
    pub cache_bytes: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them (and build info) into
    /// `registry`, with one copy of the per-request series.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        Metrics::register_for_workers(registry, 1)
    }

    /// As [`Metrics::register`], with a copy of the per-request series for
    /// each of `workers` worker threads.
    pub fn register_for_workers(
        registry: &Registry,
        workers: usize,
    ) -> prometheus::Result<Metrics> {
        let copies = (0..workers.max(1))
            .map(|_| RequestSeries::new())
            .collect::<prometheus::Result<Vec<_>>>()?;
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
        let cache_copies_dropped = IntCounterVec::new(
            Opts::new(
                "chime_gateway_cache_copies_dropped_total",
                "Answers the response cache stopped copying before they ended, by reason.",
            ),
            &["reason"],
        )?;
        let cache_copy_bytes = IntGauge::new(
            "chime_gateway_cache_copy_bytes",
            "Bytes held by the response cache's copies of answers still streaming.",
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
            (&cache_copies_dropped, &["too_large", "budget"][..]),
        ] {
            for v in values {
                vec.with_label_values(&[v]);
            }
        }
        registry.register(Box::new(Sum::new(copies.clone())))?;
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
        registry.register(Box::new(cache_copies_dropped.clone()))?;
        registry.register(Box::new(cache_copy_bytes.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "chime_gateway",
            ),
        ))?;
        Ok(Metrics {
            key_cache_hits: key_cache.with_label_values(&["hit"]),
            cache_hits: cache_lookups.with_label_values(&["hit"]),
            cache_misses: cache_lookups.with_label_values(&["miss"]),
            series: copies[0].clone(),
            copies,
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
            cache_copies_dropped,
            cache_copy_bytes,
            cache_bytes,
        })
    }
}

impl Metrics {
    /// The series of route kind `kind` (this handle's copy).
    pub fn route(&self, kind: RouteKind) -> &RouteMetrics {
        &self.series.routes[kind as usize]
    }

    /// Requests by route kind, status class and outcome (`ok` or the
    /// refusal code): this handle's copy.
    pub fn requests(&self) -> &IntCounterVec {
        &self.series.requests
    }

    /// Requests being handled: this handle's copy (the scrape shows the sum).
    pub fn in_flight(&self) -> &IntGauge {
        &self.series.in_flight
    }

    /// A handle for worker `worker` (of the count given at registration):
    /// the same metrics, with that worker's copy of the per-request series.
    pub fn for_worker(&self, worker: usize) -> Metrics {
        Metrics {
            series: self.copies[worker % self.copies.len()].clone(),
            ..self.clone()
        }
    }
}

/// One copy of the series every request updates (see [`Metrics`]).
#[derive(Debug, Clone)]
struct RequestSeries {
    /// Per route kind, in the order of [`RouteKind::ALL`].
    routes: [RouteMetrics; RouteKind::ALL.len()],
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    response_bytes: IntCounterVec,
    in_flight: IntGauge,
}

impl RequestSeries {
    fn new() -> prometheus::Result<RequestSeries> {
        let requests = IntCounterVec::new(
            Opts::new(
                "chime_gateway_requests_total",
                "Requests handled, by route kind, report, status class and outcome.",
            ),
            &["route", "report", "status_class", "outcome"],
        )?;
        let by_route = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
                &["route"],
            )
        };
        let request_duration = by_route(
            "chime_gateway_request_duration_seconds",
            "Time from request to the end of the response body.",
        )?;
        let upstream_duration = by_route(
            "chime_gateway_upstream_duration_seconds",
            "Time until the upstream's response headers arrived.",
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
        let routes = RouteKind::ALL.map(|kind| RouteMetrics {
            duration: request_duration.with_label_values(&[kind.as_str()]),
            bytes: response_bytes.with_label_values(&[kind.as_str()]),
            upstream: kind
                .reaches_upstream()
                .then(|| upstream_duration.with_label_values(&[kind.as_str()])),
        });
        Ok(RequestSeries {
            routes,
            requests,
            request_duration,
            upstream_duration,
            response_bytes,
            in_flight,
        })
    }

    /// The families, in the order [`Sum`] relies on.
    fn collectors(&self) -> [&dyn Collector; 5] {
        [
            &self.requests,
            &self.request_duration,
            &self.upstream_duration,
            &self.response_bytes,
            &self.in_flight,
        ]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}

/// The registry's view of the per-request series: every copy, added up
/// when scraped.
#[derive(Debug)]
struct Sum {
    descs: Vec<Desc>,
    copies: Vec<RequestSeries>,
}

impl Sum {
    fn new(copies: Vec<RequestSeries>) -> Sum {
        let descs = copies[0]
            .collectors()
            .iter()
            .flat_map(|c| c.desc())
            .cloned()
            .collect();
        Sum { descs, copies }
    }
}

impl Collector for Sum {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut copies = self.copies.iter().map(RequestSeries::collect);
        let mut total = copies.next().unwrap_or_default();
        for families in copies {
            for (into, from) in total.iter_mut().zip(families) {
                add_family(into, from);
            }
        }
        total
    }
}

/// Adds `from`'s series to `into`'s (the same family from another copy):
/// series with the same labels are summed, others appended.
fn add_family(into: &mut MetricFamily, mut from: MetricFamily) {
    let labels = |m: &Metric| -> Vec<String> {
        m.get_label().iter().map(|l| l.value().to_owned()).collect()
    };
    let mut index: HashMap<Vec<String>, usize> = into
        .get_metric()
        .iter()
        .enumerate()
        .map(|(i, m)| (labels(m), i))
        .collect();
    let kind = into.get_field_type();
    for m in from.take_metric() {
        match index.entry(labels(&m)) {
            Entry::Occupied(i) => add_metric(&mut into.mut_metric()[*i.get()], &m, kind),
            Entry::Vacant(slot) => {
                slot.insert(into.get_metric().len());
                into.mut_metric().push(m);
            }
        }
    }
}

/// Adds `from`'s value (a counter, gauge or histogram: `kind`) to `into`'s.
fn add_metric(into: &mut Metric, from: &Metric, kind: MetricType) {
    match kind {
        MetricType::COUNTER => {
            let mut c = proto::Counter::default();
            c.set_value(into.get_counter().get_value() + from.get_counter().get_value());
            into.set_counter(c);
        }
        MetricType::GAUGE => {
            let mut g = proto::Gauge::default();
            g.set_value(into.get_gauge().get_value() + from.get_gauge().get_value());
            into.set_gauge(g);
        }
        MetricType::HISTOGRAM => {
            let (a, b) = (into.get_histogram(), from.get_histogram());
            let mut h = proto::Histogram::default();
            h.set_sample_count(a.get_sample_count() + b.get_sample_count());
            h.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
            // Every copy has the same buckets, in the same order.
            h.set_bucket(
                a.get_bucket()
                    .iter()
                    .zip(b.get_bucket())
                    .map(|(x, y)| {
                        let mut sum = x.clone();
                        sum.set_cumulative_count(x.cumulative_count() + y.cumulative_count());
                        sum
                    })
                    .collect(),
            );
            into.set_histogram(h);
        }
        // The per-request series are counters, gauges and histograms only.
        MetricType::SUMMARY | MetricType::UNTYPED => {}
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
        m.requests()
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

    /// Lines of `text` (a scrape) that start with `prefix`.
    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn workers_copies_are_added_up_when_scraped() {
        let registry = Registry::new();
        let m = Metrics::register_for_workers(&registry, 2).unwrap();
        let (a, b) = (m.for_worker(0), m.for_worker(1));
        let ok = ["report", "InboundVsAnsweredChats", "2xx", "ok"];
        a.requests().with_label_values(&ok).inc();
        b.requests().with_label_values(&ok).inc_by(2);
        b.requests()
            .with_label_values(&["session", "-", "4xx", "session_forbidden"])
            .inc();
        a.route(RouteKind::Report).duration.observe(0.003);
        b.route(RouteKind::Report).duration.observe(0.2);
        b.route(RouteKind::Report).bytes.inc_by(10);
        a.route(RouteKind::Report).bytes.inc_by(5);
        // One copy of a gauge may go below zero; only the sum is shown.
        a.in_flight().inc();
        a.in_flight().inc();
        b.in_flight().dec();
        // The copies are separate: each worker writes only its own.
        assert_eq!(a.requests().with_label_values(&ok).get(), 1);
        assert_eq!(b.requests().with_label_values(&ok).get(), 2);

        let text = String::from_utf8(render(&registry)).unwrap();
        assert_eq!(
            lines(&text, "chime_gateway_requests_total{"),
            [
                r#"chime_gateway_requests_total{outcome="ok",report="InboundVsAnsweredChats",route="report",status_class="2xx"} 3"#,
                r#"chime_gateway_requests_total{outcome="session_forbidden",report="-",route="session",status_class="4xx"} 1"#,
            ],
            "{text}"
        );
        let report = |name: &str| format!("chime_gateway_request_duration_seconds_{name}");
        assert!(text.contains(&format!(
            r#"{}{{route="report",le="0.005"}} 1"#,
            report("bucket")
        )));
        assert!(text.contains(&format!(
            r#"{}{{route="report",le="0.25"}} 2"#,
            report("bucket")
        )));
        assert!(text.contains(&format!(
            r#"{}{{route="report",le="+Inf"}} 2"#,
            report("bucket")
        )));
        assert!(text.contains(&format!(r#"{}{{route="report"}} 2"#, report("count"))));
        assert!(text.contains(&format!(r#"{}{{route="report"}} 0.203"#, report("sum"))));
        assert!(text.contains(r#"chime_gateway_response_bytes_total{route="report"} 15"#));
        assert_eq!(
            lines(&text, "chime_gateway_in_flight_requests "),
            ["chime_gateway_in_flight_requests 1"]
        );
        // Each family appears once, whatever the number of copies.
        assert_eq!(
            lines(&text, "# TYPE chime_gateway_requests_total ").len(),
            1
        );
        // A worker beyond the count shares a copy rather than failing.
        m.for_worker(5).requests().with_label_values(&ok).inc();
        let text = String::from_utf8(render(&registry)).unwrap();
        assert!(text.contains(r#"status_class="2xx"} 4"#), "{text}");
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(http::StatusCode::OK), "2xx");
        assert_eq!(status_class(http::StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(http::StatusCode::GATEWAY_TIMEOUT), "5xx");
    }
}
