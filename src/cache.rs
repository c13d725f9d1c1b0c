//! The response cache: answers that cannot change, kept in memory.
//!
//! Only two kinds of answer are kept ([`CacheConfig::ttl_for`]): discovery
//! lists for `discovery_ttl`, and reports whose window ended before "now
//! minus `settle`" (finished history) for `report_ttl`. Never an error,
//! never SessionDetails, never an answer marked `Cache-Control: no-store`
//! or `private`, never one larger than `max_entry_bytes`. While an answer
//! streams, its copy ([`BodyCopy`]) draws on a budget the size of the
//! cache that all copies in progress share. Entries are keyed
//! by [`UpstreamKey`]: a digest of the canonical upstream request including
//! the upstream credential, so an entry is only ever served for the exact
//! request (and, with passthrough auth, the exact key) it was fetched for,
//! and only after the ACL allowed the asking client that request.
//!
//! A hit carries an `ETag` (the upstream's, or a digest of the body) and
//! `Age`; a matching `If-None-Match` gets 304.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use moka::notification::RemovalCause;
use sha2::{Digest, Sha256};

use crate::body::{self, Response};
use crate::header_number;
use crate::metrics::Metrics;
use crate::proxy::UpstreamRequest;
use crate::request::{GatewayRequest, Target};
use crate::request_id::RequestId;

/// Says how a response was produced (`hit`, `miss`, `coalesced`).
pub static X_CACHE: http::HeaderName = http::HeaderName::from_static("x-chime-gateway-cache");

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// This request's own upstream call.
    Upstream,
    /// An identical request's upstream call.
    Coalesced,
    /// The response cache.
    Cache,
}

impl Served {
    /// The audit-log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Upstream => "upstream",
            Served::Coalesced => "coalesced",
            Served::Cache => "cache",
        }
    }

    /// The [`X_CACHE`] value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Served::Upstream => "miss",
            Served::Coalesced => "coalesced",
            Served::Cache => "hit",
        })
    }
}

/// `[cache]`: request coalescing and the response cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheConfig {
    /// Identical concurrent upstream requests share one upstream call.
    pub coalesce: bool,
    /// Keep answers that cannot change.
    pub enabled: bool,
    /// Bytes held across all entries.
    pub max_bytes: u64,
    /// Largest single answer kept.
    pub max_entry_bytes: usize,
    /// Lifetime of discovery lists.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub discovery_ttl: Duration,
    /// Lifetime of finished-history reports.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub report_ttl: Duration,
    /// A window is history once it ended this long ago.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub settle: Duration,
}

impl CacheConfig {
    /// How long the answer to `request` may be kept, asked at `now`; `None`:
    /// never (the answer may still change, or caching is off).
    pub fn ttl_for(&self, request: &GatewayRequest, now: jiff::Timestamp) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let ttl = match &request.target {
            Target::Discovery(_) => self.discovery_ttl,
            Target::SessionDetails(_) => return None,
            Target::Report(def) => {
                // A StartOnly report covers the day from `start`; others
                // the window up to `stop`, or up to now without one.
                let end = if def.start_only {
                    request
                        .params
                        .start?
                        .checked_add(jiff::SignedDuration::from_hours(24))
                        .ok()?
                } else {
                    request.params.stop?
                };
                let settle = jiff::SignedDuration::try_from(self.settle).ok()?;
                if end.checked_add(settle).ok()? > now {
                    return None;
                }
                self.report_ttl
            }
        };
        (!ttl.is_zero()).then_some(ttl)
    }
}

/// Identifies an upstream request: SHA-256 over its method, path and query,
/// the request headers that can change the answer, and the credential it
/// carries (so no credential is held in memory by the cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamKey([u8; 32]);

/// Request headers that select between representations; the rest (request
/// ids, trace context, user agent) do not change Chime's answer.
static VARY: [header::HeaderName; 3] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
];

impl UpstreamKey {
    /// The key of `req`, as it will be sent upstream.
    pub fn of(req: &UpstreamRequest) -> UpstreamKey {
        Self::of_as(req, req.method())
    }

    /// The key `req` would have with `method` instead of its own.
    pub fn of_as(req: &UpstreamRequest, method: &http::Method) -> UpstreamKey {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(method.as_str().as_bytes());
        field(req.target().as_bytes());
        for name in VARY.iter().chain([&header::AUTHORIZATION]) {
            for value in req.get_all(name) {
                field(name.as_str().as_bytes());
                field(value.as_bytes());
            }
        }
        UpstreamKey(h.finalize().into())
    }

    /// The first byte (shard selection).
    pub fn first_byte(&self) -> u8 {
        self.0[0]
    }
}

/// Status and headers of an answer, shared by every client it goes to.
#[derive(Debug, Clone)]
pub struct Head {
    /// Status.
    pub status: StatusCode,
    /// Headers, already cleaned of hop-by-hop and banner headers.
    pub headers: HeaderMap,
    /// The id of the request whose upstream exchange this answer is (the
    /// `X-Request-Id` Chime saw), when it is shared: every client of a
    /// flight or of a cache entry is answered by that one exchange.
    pub request_id: Option<RequestId>,
}

impl Head {
    /// A response with this status and these headers, and `body`; nothing
    /// else of the upstream's response (its extensions) comes along.
    pub fn into_response(self, body: crate::body::Body) -> Response {
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }

    /// Whether the upstream allows a shared cache to keep this answer.
    pub fn storable(&self) -> bool {
        self.status == StatusCode::OK
            && !self
                .headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|d| d.trim().split('=').next().unwrap_or("").trim())
                .any(|d| d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private"))
            && self
                .headers
                .get(header::VARY)
                .is_none_or(|v| v.as_bytes() != b"*")
    }
}

/// One kept answer.
#[derive(Debug)]
pub struct Entry {
    head: Arc<Head>,
    body: Bytes,
    etag: HeaderValue,
    stored: Instant,
    ttl: Duration,
}

impl Entry {
    /// The id of the request whose exchange filled this entry.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.head.request_id.as_ref()
    }

    fn weight(&self) -> u32 {
        let headers: usize = self
            .head
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        u32::try_from(self.body.len() + headers + 256).unwrap_or(u32::MAX)
    }

    /// The response for a client that sent `if_none_match`.
    pub fn respond(&self, if_none_match: Option<&HeaderValue>) -> Response {
        let mut resp = if if_none_match.is_some_and(|v| etag_matches(v, &self.etag)) {
            not_modified(&self.head.headers, &self.etag, Served::Cache)
        } else {
            let mut resp = Head::clone(&self.head).into_response(body::full(self.body.clone()));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_LENGTH,
                header_number::number(self.body.len() as u64),
            );
            h.insert(header::ETAG, self.etag.clone());
            h.insert(&X_CACHE, Served::Cache.header_value());
            resp
        };
        resp.headers_mut().insert(
            header::AGE,
            header_number::number(self.stored.elapsed().as_secs()),
        );
        resp
    }
}

/// A 304 for an answer with `headers` and `etag`; `served` as in [`X_CACHE`].
pub fn not_modified(headers: &HeaderMap, etag: &HeaderValue, served: Served) -> Response {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::VARY,
    ] {
        if let Some(v) = headers.get(&name) {
            h.insert(name, v.clone());
        }
    }
    h.insert(header::ETAG, etag.clone());
    h.insert(&X_CACHE, served.header_value());
    resp
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC 9110 §13.1.2).
pub fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let Ok(ours) = etag.to_str() else {
        return false;
    };
    let ours = opaque(ours);
    list.split(',')
        .any(|t| t.trim() == "*" || opaque(t) == ours)
}

/// The memory that copies of answers still streaming may hold together:
/// as much as the cache itself (`max_bytes`). A copy holds what it has
/// kept until its body ends, at the pace of the slowest client reading
/// it, so without this many large answers streaming at once (exports of
/// finished days to slow clients) would each hold up to `max_entry_bytes`.
#[derive(Debug)]
struct CopyBudget {
    held: AtomicU64,
    max: u64,
    metrics: Arc<Metrics>,
}

impl CopyBudget {
    /// Takes `bytes` from the budget; `false`, taking nothing, when they
    /// do not fit.
    fn take(&self, bytes: usize) -> bool {
        let taken = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes as u64)
                    .filter(|&total| total <= self.max)
            })
            .is_ok();
        if taken {
            self.metrics.cache_copy_bytes.add(bytes as i64);
        }
        taken
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes as u64, Ordering::Relaxed);
        self.metrics.cache_copy_bytes.sub(bytes as i64);
    }
}

/// Why a copy stopped keeping its body ([`BodyCopy::push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The body is larger than `max_entry_bytes`.
    TooLarge,
    /// The copies streaming at once hold all the memory they may.
    Budget,
}

impl GaveUp {
    /// The `reason` label of `cache_copies_dropped_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            GaveUp::TooLarge => "too_large",
            GaveUp::Budget => "budget",
        }
    }
}

/// What the cache keeps of a body while it streams past, up to
/// `max_entry_bytes` and within the copies' shared budget: the chunks as
/// they came (no copying, and no buffer that doubles as it grows), joined
/// into one exact allocation once the body has ended and fits. Dropping
/// the copy, finished or not, gives its bytes back to the budget.
#[derive(Debug)]
pub struct BodyCopy {
    chunks: Vec<Bytes>,
    /// Bytes kept, all taken from `budget`.
    len: usize,
    limit: usize,
    budget: Arc<CopyBudget>,
}

impl BodyCopy {
    /// Keeps `chunk`; `Err` (counted in `cache_copies_dropped_total`) once
    /// the body is larger than the limit or the budget has no room for it,
    /// when the copy should be dropped.
    pub fn push(&mut self, chunk: &Bytes) -> Result<(), GaveUp> {
        let refused = if chunk.len() > self.limit - self.len {
            Some(GaveUp::TooLarge)
        } else if !self.budget.take(chunk.len()) {
            Some(GaveUp::Budget)
        } else {
            None
        };
        if let Some(why) = refused {
            self.budget
                .metrics
                .cache_copies_dropped
                .with_label_values(&[why.as_str()])
                .inc();
            return Err(why);
        }
        self.len += chunk.len();
        if !chunk.is_empty() {
            self.chunks.push(chunk.clone());
        }
        Ok(())
    }

    /// The whole body, in an allocation of its own: the chunks may share
    /// much larger read buffers, which a cache entry must not keep alive.
    pub fn finish(self) -> Bytes {
        let mut body = Vec::with_capacity(self.len);
        for chunk in &self.chunks {
            body.extend_from_slice(chunk);
        }
        Bytes::from(body)
    }
}

impl Drop for BodyCopy {
    fn drop(&mut self) {
        self.budget.give_back(self.len);
    }
}

/// The bounded cache.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    entries: moka::future::Cache<UpstreamKey, Arc<Entry>>,
    max_entry_bytes: usize,
    copies: Arc<CopyBudget>,
    metrics: Arc<Metrics>,
}

struct TtlPerEntry;

impl moka::Expiry<UpstreamKey, Arc<Entry>> for TtlPerEntry {
    fn expire_after_create(
        &self,
        _key: &UpstreamKey,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl ResponseCache {
    /// A cache as `cfg` says, or `None` when caching is off.
    pub fn new(cfg: &CacheConfig, metrics: Arc<Metrics>) -> Option<ResponseCache> {
        if !cfg.enabled {
            return None;
        }
        let listener_metrics = Arc::clone(&metrics);
        let entries = moka::future::Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(|_k, v: &Arc<Entry>| v.weight())
            .expire_after(TtlPerEntry)
            .eviction_listener(move |_k, v: Arc<Entry>, cause| {
                let m = &listener_metrics;
                m.cache_bytes.sub(i64::from(v.weight()));
                let cause = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Size => "size",
                    RemovalCause::Replaced => "replaced",
                    RemovalCause::Explicit => "explicit",
                };
                m.cache_evictions.with_label_values(&[cause]).inc();
            })
            .build();
        Some(ResponseCache {
            entries,
            max_entry_bytes: cfg.max_entry_bytes,
            copies: Arc::new(CopyBudget {
                held: AtomicU64::new(0),
                max: cfg.max_bytes,
                metrics: Arc::clone(&metrics),
            }),
            metrics,
        })
    }

    /// A copy of a body that announced at least `lower` bytes (its
    /// `Content-Length`, when it had one); none when that already exceeds
    /// `max_entry_bytes`.
    pub fn copy(&self, lower: u64) -> Option<BodyCopy> {
        (lower <= self.max_entry_bytes as u64).then(|| BodyCopy {
            chunks: Vec::new(),
            len: 0,
            limit: self.max_entry_bytes,
            budget: Arc::clone(&self.copies),
        })
    }

    /// The kept answer for `key`, counting the lookup.
    /// (The future owns what it uses: callers hold it across their own awaits.)
    pub fn get(
        &self,
        key: UpstreamKey,
    ) -> impl std::future::Future<Output = Option<Arc<Entry>>> + Send + 'static {
        let entries = self.entries.clone();
        let metrics = Arc::clone(&self.metrics);
        async move {
            let found = entries.get(&key).await;
            match found {
                Some(_) => metrics.cache_hits.inc(),
                None => metrics.cache_misses.inc(),
            }
            found
        }
    }

    /// Keeps `body` under `key` for `ttl`.
    pub async fn insert(&self, key: UpstreamKey, head: Arc<Head>, body: Bytes, ttl: Duration) {
        if body.len() > self.max_entry_bytes {
            return;
        }
        let etag = head
            .headers
            .get(header::ETAG)
            .cloned()
            .unwrap_or_else(|| body_etag(&body));
        let entry = Arc::new(Entry {
            head,
            body,
            etag,
            stored: Instant::now(),
            ttl,
        });
        self.metrics.cache_bytes.add(i64::from(entry.weight()));
        self.entries.insert(key, entry).await;
    }

    /// Drops every entry.
    #[cfg(test)]
    async fn clear(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks().await;
    }

    /// Runs pending evictions now, so their metrics are counted.
    #[cfg(test)]
    async fn settle(&self) {
        self.entries.run_pending_tasks().await;
    }
}

/// A strong validator for a body: a quoted prefix of its SHA-256.
fn body_etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let tag = format!("\"{}\"", hex::encode(&digest[..16]));
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, Category};
    use crate::request::Params;

    #[test]
    fn a_body_copy_joins_its_chunks_into_an_exact_allocation() {
        let (cache, _) = sized(100, 10);
        let mut copy = cache.copy(0).unwrap();
        let big = Bytes::from(vec![b'x'; 64]);
        assert_eq!(copy.push(&Bytes::from_static(b"abc")), Ok(()));
        assert_eq!(copy.push(&Bytes::new()), Ok(()));
        assert_eq!(copy.push(&big.slice(0..4)), Ok(()));
        assert_eq!(copy.push(&Bytes::from_static(b"def")), Ok(()));
        let body = copy.finish();
        assert_eq!(&body[..], b"abcxxxxdef");
        // Its own allocation, not a view that keeps `big` alive.
        assert!(!big.as_ptr_range().contains(&body.as_ptr()));
        assert!(!big.as_ptr_range().contains(&body[3..].as_ptr()));
    }

    #[test]
    fn a_body_copy_gives_up_past_the_limit_or_on_a_long_announced_length() {
        let (cache, metrics) = sized(100, 10);
        assert!(cache.copy(11).is_none(), "Content-Length above the limit");
        assert!(cache.copy(10).is_some());
        let mut copy = cache.copy(0).unwrap();
        assert_eq!(copy.push(&Bytes::from_static(b"0123456789")), Ok(()));
        assert_eq!(
            copy.push(&Bytes::from_static(b"!")),
            Err(GaveUp::TooLarge),
            "one byte past the limit"
        );
        assert_eq!(metrics.cache_copy_bytes.get(), 10);
        drop(copy);
        assert_eq!(
            metrics.cache_copy_bytes.get(),
            0,
            "a dropped copy holds nothing"
        );
    }

    #[test]
    fn copies_streaming_at_once_share_the_caches_memory() {
        let (cache, metrics) = sized(25, 20);
        let ten = Bytes::from_static(b"0123456789");
        let mut a = cache.copy(0).unwrap();
        let mut b = cache.copy(0).unwrap();
        assert_eq!(a.push(&ten), Ok(()));
        assert_eq!(b.push(&ten), Ok(()));
        let mut c = cache.copy(0).unwrap();
        assert_eq!(c.push(&ten), Err(GaveUp::Budget), "30 bytes held of 25");
        assert_eq!(
            metrics.cache_copy_bytes.get(),
            20,
            "a refused push takes nothing"
        );
        drop(c);
        let mut d = cache.copy(0).unwrap();
        assert_eq!(d.push(&ten.slice(..5)), Ok(()), "what fits is taken");
        assert_eq!(metrics.cache_copy_bytes.get(), 25);
        // Finished or dropped, a copy gives its bytes back.
        assert_eq!(a.finish().len(), 10);
        drop(d);
        assert_eq!(metrics.cache_copy_bytes.get(), 10);
        assert_eq!(b.push(&ten), Ok(()));
        assert_eq!(b.push(&Bytes::from_static(b"!")), Err(GaveUp::TooLarge));
        drop(b);
        assert_eq!(metrics.cache_copy_bytes.get(), 0);
        assert_eq!(cache.copies.held.load(Ordering::Relaxed), 0);
        let dropped = |why: GaveUp| {
            metrics
                .cache_copies_dropped
                .with_label_values(&[why.as_str()])
                .get()
        };
        assert_eq!((dropped(GaveUp::Budget), dropped(GaveUp::TooLarge)), (1, 1));
    }

    /// A cache of `max_bytes` whose entries may be `max_entry_bytes`.
    fn sized(max_bytes: u64, max_entry_bytes: usize) -> (ResponseCache, Arc<Metrics>) {
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(Metrics::register(&registry).unwrap());
        let cfg = CacheConfig {
            max_bytes,
            max_entry_bytes,
            ..cfg()
        };
        (
            ResponseCache::new(&cfg, Arc::clone(&metrics)).unwrap(),
            metrics,
        )
    }

    fn cfg() -> CacheConfig {
        CacheConfig {
            coalesce: true,
            enabled: true,
            max_bytes: 1 << 20,
            max_entry_bytes: 1 << 16,
            discovery_ttl: Duration::from_secs(60),
            report_ttl: Duration::from_secs(3600),
            settle: Duration::from_secs(900),
        }
    }

    fn report(name: &str, start: Option<&str>, stop: Option<&str>) -> GatewayRequest {
        let catalog = Catalog::new(&crate::catalog::builtin());
        let def = catalog.find(name).unwrap();
        GatewayRequest {
            target: Target::Report(def),
            params: Params {
                queue_id: Some(1),
                start: start.map(|s| s.parse().unwrap()),
                stop: stop.map(|s| s.parse().unwrap()),
                ..Params::default()
            },
            end_name: "stop",
            ignored: Vec::new(),
        }
    }

    #[test]
    fn only_settled_history_and_discovery_are_kept() {
        let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let c = cfg();
        let range = "InboundVsAnsweredChats";
        let past = report(
            range,
            Some("2026-11-01T00:00:00Z"),
            Some("2026-11-02T00:00:00Z"),
        );
        assert_eq!(c.ttl_for(&past, now), Some(c.report_ttl));
        // Ended 10 minutes ago: inside the settle time, late chats may still land.
        let recent = report(
            range,
            Some("2026-11-22T00:00:00Z"),
            Some("2026-11-22T11:50:00Z"),
        );
        assert_eq!(c.ttl_for(&recent, now), None);
        // Includes now, or runs up to now (no stop).
        let live = report(
            range,
            Some("2026-11-22T00:00:00Z"),
            Some("2026-11-23T00:00:00Z"),
        );
        assert_eq!(c.ttl_for(&live, now), None);
        let open = report(range, Some("2026-11-22T00:00:00Z"), None);
        assert_eq!(c.ttl_for(&open, now), None);
        let session = GatewayRequest {
            target: Target::SessionDetails(7),
            params: Params::default(),
            end_name: "stop",
            ignored: Vec::new(),
        };
        assert_eq!(c.ttl_for(&session, now), None);
        let discovery = GatewayRequest {
            target: Target::Discovery(Category::QueueBasic),
            ..session
        };
        assert_eq!(c.ttl_for(&discovery, now), Some(c.discovery_ttl));
        let off = CacheConfig {
            enabled: false,
            ..cfg()
        };
        assert_eq!(off.ttl_for(&past, now), None);
        assert_eq!(off.ttl_for(&discovery, now), None);
    }

    #[test]
    fn start_only_reports_cover_a_day() {
        let catalog = Catalog::new(&crate::catalog::builtin());
        let name = crate::catalog::builtin()
            .into_iter()
            .find(|d| d.start_only)
            .unwrap()
            .name;
        assert!(catalog.find(&name).is_ok());
        let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let c = cfg();
        let yesterday = report(&name, Some("2026-11-21T00:00:00Z"), None);
        assert_eq!(c.ttl_for(&yesterday, now), Some(c.report_ttl));
        let today = report(&name, Some("2026-11-22T00:00:00Z"), None);
        assert_eq!(c.ttl_for(&today, now), None);
    }

    #[test]
    fn keys_separate_what_changes_the_answer() {
        let req = |uri: &str, auth: &str, accept: &str, ua: &str| {
            let mut req = UpstreamRequest::get(uri);
            let value = |v: &str| HeaderValue::from_str(v).unwrap();
            req.push(header::AUTHORIZATION, value(auth));
            req.push(header::ACCEPT, value(accept));
            req.push(header::USER_AGENT, value(ua));
            req.push(
                http::HeaderName::from_static("x-request-id"),
                value(&uuid::Uuid::new_v4().to_string()),
            );
            req
        };
        let base = UpstreamKey::of(&req("/Chime/Report/X?queueId=1", "Bearer a", "*/*", "a"));
        assert_eq!(
            base,
            UpstreamKey::of(&req("/Chime/Report/X?queueId=1", "Bearer a", "*/*", "b")),
            "user agent and request id do not split"
        );
        for other in [
            req("/Chime/Report/X?queueId=2", "Bearer a", "*/*", "a"),
            req("/Chime/Report/X?queueId=1", "Bearer b", "*/*", "a"),
            req("/Chime/Report/X?queueId=1", "Bearer a", "text/csv", "a"),
        ] {
            assert_ne!(base, UpstreamKey::of(&other));
        }
    }

    #[test]
    fn storability_follows_cache_control() {
        let head = |status: StatusCode, pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                headers.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            Head {
                status,
                headers,
                request_id: None,
            }
        };
        assert!(head(StatusCode::OK, &[("cache-control", "max-age=60")]).storable());
        assert!(!head(StatusCode::OK, &[("cache-control", "max-age=60, No-Store")]).storable());
        assert!(!head(StatusCode::OK, &[("cache-control", "private=\"x\"")]).storable());
        assert!(!head(StatusCode::OK, &[("vary", "*")]).storable());
        assert!(!head(StatusCode::NOT_FOUND, &[]).storable());
        assert!(!head(StatusCode::NO_CONTENT, &[]).storable());
    }

    #[test]
    fn etag_comparison_is_weak() {
        let tag = HeaderValue::from_static("\"abc\"");
        let inm = |s: &'static str| HeaderValue::from_static(s);
        assert!(etag_matches(&inm("\"abc\""), &tag));
        assert!(etag_matches(&inm("W/\"abc\""), &tag));
        assert!(etag_matches(&inm("\"x\", \"abc\""), &tag));
        assert!(etag_matches(&inm("*"), &tag));
        assert!(!etag_matches(&inm("\"abd\""), &tag));
        assert!(!etag_matches(&inm("abc"), &tag));
    }

    #[tokio::test]
    async fn hits_revalidate_and_big_bodies_are_not_kept() {
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(Metrics::register(&registry).unwrap());
        let cache = ResponseCache::new(&cfg(), Arc::clone(&metrics)).unwrap();
        let key = UpstreamKey::of(&UpstreamRequest::get("/a"));
        assert!(cache.get(key).await.is_none());
        let head = Arc::new(Head {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            request_id: None,
        });
        cache
            .insert(
                key,
                Arc::clone(&head),
                Bytes::from_static(b"a,b\n1,2\n"),
                Duration::from_secs(60),
            )
            .await;
        let hit = cache.get(key).await.unwrap();
        let full = hit.respond(None);
        assert_eq!(full.status(), StatusCode::OK);
        let etag = full.headers()[header::ETAG].clone();
        assert_eq!(full.headers()[&X_CACHE], "hit");
        assert_eq!(full.headers()[header::CONTENT_LENGTH], "8");
        assert_eq!(hit.respond(Some(&etag)).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            hit.respond(Some(&HeaderValue::from_static("\"other\"")))
                .status(),
            StatusCode::OK
        );
        let big = UpstreamKey::of(&UpstreamRequest::get("/big"));
        cache
            .insert(
                big,
                head,
                Bytes::from(vec![b'x'; (1 << 16) + 1]),
                Duration::from_secs(60),
            )
            .await;
        assert!(cache.get(big).await.is_none());
        cache.settle().await;
        assert!(metrics.cache_bytes.get() > 8);
        cache.clear().await;
        assert_eq!(metrics.cache_bytes.get(), 0);
        assert_eq!(metrics.cache_lookups.with_label_values(&["hit"]).get(), 1);
        assert_eq!(
            metrics
                .cache_evictions
                .with_label_values(&["explicit"])
                .get(),
            1
        );
    }
}
