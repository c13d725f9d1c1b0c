//! Rate limit: per-user budgets, per-user concurrency and load shedding.
//!
//! Runs after the ACL, so that only requests that would be forwarded are
//! counted, and so that a report's cost can depend on the typed request
//! (a per-report weight, optionally times the window length). Keyed by
//! user, not by key, so rotating a key does not reset a budget. In order:
//!
//! 1. a per-user in-flight cap (tier `max_in_flight`) — 429
//!    `concurrency_limited` + `Retry-After`;
//! 2. a global cap on requests in flight to Chime — 503 `overloaded` +
//!    `Retry-After` (shed, never queued);
//! 3. the user's tier budget (GCRA: `per_minute`, `burst`), locally with
//!    governor or shared through Redis ([`shared`]) — 429 `rate_limited` +
//!    `Retry-After`. A refused request takes nothing from any budget.
//!
//! Every response that passes adds `RateLimit-Policy` and `RateLimit` (IETF
//! httpapi draft) and `X-RateLimit-Limit/-Remaining/-Reset`; refusals by
//! the budget carry the same headers with `Retry-After`.

pub mod local;
pub mod shared;
pub mod slots;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use foldhash::fast::RandomState;
use futures_util::future::Either;
use http::header::{HeaderName, HeaderValue};
use http::Request;
use serde::Serialize;

use crate::auth::{Authenticated, Principal};
use crate::body::{self, Response};
use crate::clock::Clock;
use crate::gate::{decided, Finish, Finishing, StepFuture};
use crate::header_number;
use crate::metrics::Metrics;
use crate::request::{GatewayRequest, Target};
use crate::{BoxError, BoxFuture};
use local::LocalLimiter;
use shared::SharedLimiter;
use slots::{Slot, Slots};

/// A named quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Name, as users' `tier` refers to it.
    pub name: Arc<str>,
    /// Sustained requests per minute.
    pub per_minute: NonZeroU32,
    /// Requests allowed at once from a full budget.
    pub burst: NonZeroU32,
    /// Requests one user may have in flight.
    pub max_in_flight: usize,
    /// Its `RateLimit-Policy` header, the same for every answer; `None`
    /// when the name is not header-safe (config validation prevents that).
    policy_header: Option<HeaderValue>,
}

impl Tier {
    /// A tier (zero values are raised to one).
    pub fn new(name: &str, per_minute: u32, burst: u32, max_in_flight: usize) -> Self {
        let mut tier = Tier {
            name: name.into(),
            per_minute: NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
            max_in_flight: max_in_flight.max(1),
            policy_header: None,
        };
        let policy = format!(
            "\"{}\";q={};w={}",
            tier.name,
            tier.burst,
            secs_up(tier.window())
        );
        tier.policy_header = HeaderValue::try_from(policy).ok();
        tier
    }

    /// Time for one unit of budget to come back.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.get()
    }

    /// Time for the whole burst to come back (the policy's window).
    pub fn window(&self) -> Duration {
        self.interval() * self.burst.get()
    }
}

/// One budget decision, with what the headers report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The tier's name.
    pub policy: Arc<str>,
    /// The budget when full (the burst).
    pub limit: u32,
    /// What is left after this request.
    pub remaining: u32,
    /// Until the budget is full again (allowed) or usable again (refused).
    pub reset: Duration,
    /// For a refusal: when to try again.
    pub retry_after: Duration,
    /// The tier's `RateLimit-Policy` header (its window included).
    policy_header: Option<HeaderValue>,
}

/// Whole seconds, rounded up (a client told "0" would retry in a hot loop).
fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

impl Decision {
    /// An allowed request.
    pub fn allowed(tier: &Tier, remaining: u32, reset: Duration) -> Self {
        Decision {
            allowed: true,
            policy: Arc::clone(&tier.name),
            limit: tier.burst.get(),
            remaining,
            reset,
            retry_after: Duration::ZERO,
            policy_header: tier.policy_header.clone(),
        }
    }

    /// A refused request that may retry after `wait`.
    pub fn denied(tier: &Tier, wait: Duration) -> Self {
        Decision {
            allowed: false,
            policy: Arc::clone(&tier.name),
            limit: tier.burst.get(),
            remaining: 0,
            reset: wait,
            retry_after: wait,
            policy_header: tier.policy_header.clone(),
        }
    }

    /// The rate-limit headers for this decision (without `Retry-After`).
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        // Tier names are validated header-safe; a value that is not is left out.
        let reset = secs_up(self.reset);
        let (mut r, mut t) = (itoa::Buffer::new(), itoa::Buffer::new());
        let parts: [&[u8]; 6] = [
            b"\"",
            self.policy.as_bytes(),
            b"\";r=",
            r.format(self.remaining).as_bytes(),
            b";t=",
            t.format(reset).as_bytes(),
        ];
        // Allocated at its exact size, so the header value takes it as is.
        let ratelimit = bytes::Bytes::from(parts.concat());
        [
            (&RATELIMIT_POLICY, self.policy_header.clone()),
            (&RATELIMIT, HeaderValue::from_maybe_shared(ratelimit).ok()),
            (&X_LIMIT, Some(header_number::number(u64::from(self.limit)))),
            (
                &X_REMAINING,
                Some(header_number::number(u64::from(self.remaining))),
            ),
            (&X_RESET, Some(header_number::number(reset))),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.clone(), value?)))
    }

    /// `Retry-After` for a refusal, in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        secs_up(self.retry_after).max(1)
    }
}

/// Why a request was not let through to Chime.
#[derive(Debug, thiserror::Error)]
pub enum Limited {
    /// The user's budget is spent.
    #[error("rate limit reached for tier \"{}\"; retry after {} s", .0.policy, .0.retry_after_secs())]
    Rate(Box<Decision>),
    /// The user has too many requests in flight.
    #[error("you already have {max} requests in progress; wait for one to finish")]
    Concurrency {
        /// The tier's cap.
        max: usize,
    },
    /// The gateway has as many requests in flight to Chime as it allows.
    #[error("the gateway is at capacity; retry shortly")]
    Overloaded,
}

/// Where budgets live.
#[derive(Debug)]
pub enum Backend {
    /// In this process.
    Local(LocalLimiter),
    /// In Redis, shared by every instance (local fallback).
    Shared(SharedLimiter),
}

impl Backend {
    async fn check(&self, tier: &Tier, user: &Arc<str>, cost: NonZeroU32) -> Decision {
        match self {
            Backend::Local(l) => l.check(tier, user, cost),
            Backend::Shared(s) => s.check(tier, user, cost).await,
        }
    }

    fn prune(&self) {
        match self {
            Backend::Local(l) => l.prune(),
            Backend::Shared(s) => s.prune(),
        }
    }
}

/// Per-user in-flight slots; entries of idle users are pruned. A sharded
/// map, so requests of different users rarely meet on a lock, and a known
/// user's lookup takes only a shard's read lock.
#[derive(Debug, Default)]
struct UserSlots(DashMap<Arc<str>, Arc<Slots>, RandomState>);

impl UserSlots {
    fn acquire(&self, user: &Arc<str>, max: usize) -> Option<Slot> {
        if let Some(slots) = self.0.get(user) {
            return slots.try_take();
        }
        self.0
            .entry(Arc::clone(user))
            .or_insert_with(|| Slots::new(max))
            .try_take()
    }

    fn prune(&self) {
        // A held slot keeps a reference to its user's slots.
        self.0.retain(|_, slots| Arc::strong_count(slots) > 1);
    }
}

fn ser_tiers<S: serde::Serializer>(tiers: &[Tier], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(tiers.len()))?;
    for t in tiers {
        map.serialize_entry(
            &*t.name,
            &serde_json::json!({"per_minute": t.per_minute, "burst": t.burst, "max_in_flight": t.max_in_flight}),
        )?;
    }
    map.end()
}

/// The rate-limit settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimitConfig {
    #[serde(serialize_with = "ser_tiers")]
    /// The tiers; one is named `default`.
    pub tiers: Vec<Tier>,
    /// Most requests in flight to Chime, over all users.
    pub upstream_max_in_flight: usize,
    /// Report weights (cost per request), by lower-cased report name.
    pub report_weight: HashMap<String, NonZeroU32>,
    /// When non-zero, a report costs one more unit per this many days of window.
    pub window_days_per_cost: u32,
    /// Budgets in Redis, shared by every instance; `None`: in this process.
    pub shared: Option<SharedConfig>,
}

/// Where the shared budgets live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedConfig {
    /// Redis URL (may hold a password: masked when printed).
    pub url: crate::config::Secret,
    /// Longest wait for Redis before deciding locally.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub timeout: Duration,
    /// Prefix of the budget keys.
    pub key_prefix: String,
}

/// Shared state of the layer.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    tiers: HashMap<Arc<str>, Tier, RandomState>,
    backend: Backend,
    users: UserSlots,
    upstream: Arc<Slots>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    /// A limiter over `backend`.
    pub fn new(
        config: RateLimitConfig,
        backend: Backend,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        RateLimiter {
            tiers: config
                .tiers
                .iter()
                .map(|t| (Arc::clone(&t.name), t.clone()))
                .collect(),
            upstream: Slots::new(config.upstream_max_in_flight),
            config,
            backend,
            users: UserSlots::default(),
            clock,
            metrics,
        }
    }

    /// The tier of a principal; an unknown tier name gets `default`.
    fn tier(&self, principal: &Principal) -> Option<&Tier> {
        self.tiers
            .get(&principal.tier)
            .or_else(|| self.tiers.get("default"))
    }

    /// The limits that apply to `request` from `principal`, for `explain`
    /// (nothing is spent).
    pub fn describe(&self, principal: &Principal, request: &GatewayRequest) -> serde_json::Value {
        match self.tier(principal) {
            Some(tier) => serde_json::json!({
                "tier": &*tier.name,
                "per_minute": tier.per_minute.get(),
                "burst": tier.burst.get(),
                "max_in_flight": tier.max_in_flight,
                "cost": self.cost(request, tier).get(),
                "shared": matches!(self.backend, Backend::Shared(_)),
            }),
            None => {
                serde_json::json!({"tier": null, "message": "no tier applies: requests are refused as overloaded"})
            }
        }
    }

    /// What a request costs: its report's weight, times the number of
    /// started `window_days_per_cost` periods in its window; at most the burst.
    pub fn cost(&self, request: &GatewayRequest, tier: &Tier) -> NonZeroU32 {
        let Target::Report(report) = &request.target else {
            return NonZeroU32::MIN;
        };
        let weight = crate::catalog::by_report_name(&self.config.report_weight, &report.name)
            .map_or(1, |w| w.get());
        let periods = match (self.config.window_days_per_cost, request.params.start) {
            (0, _) | (_, None) => 1,
            (per, Some(start)) => {
                let end = request
                    .params
                    .stop
                    .unwrap_or_else(|| self.clock.now())
                    .max(start);
                let days = end.duration_since(start).as_secs().max(0) as u64;
                let period = u64::from(per) * 86_400;
                days.div_ceil(period).max(1)
            }
        };
        let cost = u64::from(weight)
            .saturating_mul(periods)
            .min(u64::from(tier.burst.get()));
        NonZeroU32::new(u32::try_from(cost).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
    }

    /// Admits a request, returning what must be held while it runs.
    pub async fn admit(
        &self,
        principal: &Principal,
        request: &GatewayRequest,
    ) -> Result<Admitted, Limited> {
        let entry = self.enter(principal, request)?;
        let decision = self
            .backend
            .check(entry.tier, &principal.user, entry.cost)
            .await;
        self.settle(decision, entry.slot)
    }

    /// [`admit`](Self::admit)'s answer when budgets live in this process,
    /// so the request path does not suspend for it; `None` for the shared
    /// backend, which only `admit` can ask.
    pub fn admit_now(
        &self,
        principal: &Principal,
        request: &GatewayRequest,
    ) -> Option<Result<Admitted, Limited>> {
        let Backend::Local(local) = &self.backend else {
            return None;
        };
        Some(self.enter(principal, request).and_then(|entry| {
            let decision = local.check(entry.tier, &principal.user, entry.cost);
            self.settle(decision, entry.slot)
        }))
    }

    /// The checks before the budget's: a tier, and a free in-flight slot of
    /// the user's.
    fn enter(&self, principal: &Principal, request: &GatewayRequest) -> Result<Entry<'_>, Limited> {
        let tier = self.tier(principal).ok_or(Limited::Overloaded)?;
        let slot = self
            .users
            .acquire(&principal.user, tier.max_in_flight)
            .ok_or_else(|| {
                self.rejected(
                    "concurrency",
                    Limited::Concurrency {
                        max: tier.max_in_flight,
                    },
                )
            })?;
        Ok(Entry {
            tier,
            slot,
            cost: self.cost(request, tier),
        })
    }

    /// The budget's `decision`, with the user's `slot` held if it allows.
    fn settle(&self, decision: Decision, slot: Slot) -> Result<Admitted, Limited> {
        if !decision.allowed {
            return Err(self.rejected("rate", Limited::Rate(Box::new(decision))));
        }
        Ok(Admitted { decision, slot })
    }

    /// Counts a rejection by `limit` and returns it.
    fn rejected(&self, limit: &str, e: Limited) -> Limited {
        self.metrics
            .ratelimit_rejections
            .with_label_values(&[limit])
            .inc();
        e
    }

    /// A slot for one upstream exchange (held by the request that calls
    /// Chime; requests sharing its answer need none), or 503 `overloaded`.
    pub fn upstream_slot(&self) -> Result<Slot, Limited> {
        self.upstream
            .try_take()
            .ok_or_else(|| self.rejected("upstream", Limited::Overloaded))
    }

    /// Forgets users whose budgets and slots are idle.
    pub fn prune(&self) {
        self.backend.prune();
        self.users.prune();
    }
}

/// A request let through: its decision and the user's in-flight slot it holds.
#[derive(Debug)]
pub struct Admitted {
    decision: Decision,
    slot: Slot,
}

/// Who asks for what: the extensions authentication and parsing added.
fn subject(req: &Request<()>) -> Result<(&Principal, &GatewayRequest), BoxError> {
    match (
        Authenticated::principal(req),
        req.extensions().get::<GatewayRequest>(),
    ) {
        (Some(principal), Some(typed)) => Ok((principal, typed)),
        _ => Err("rate limit reached without principal or typed request".into()),
    }
}

/// A request past the checks that never wait (see [`RateLimiter::enter`]).
struct Entry<'a> {
    tier: &'a Tier,
    slot: Slot,
    cost: NonZeroU32,
}

/// An admitted request's answer gets the admission's headers, and its body
/// holds the user's slot until it ends or is dropped.
impl Finish for Admitted {
    type Output = Result<Response, BoxError>;

    fn finish(self, answer: Result<Response, BoxError>) -> Self::Output {
        let mut resp = answer?;
        for (name, value) in self.decision.headers() {
            resp.headers_mut().insert(name, value);
        }
        Ok(resp.map(|b| body::with_guard(b, self.slot)))
    }

    fn spent() -> Self::Output {
        Err("rate-limited answer polled after it completed".into())
    }
}

/// Layer for [`RateLimit`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
}

impl RateLimitLayer {
    /// Limits with `limiter`.
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            handle: Arc::new(Handle {
                limiter: Arc::clone(&self.limiter),
            }),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    /// A handle of this stack's own (one stack per worker): the clone each
    /// request takes touches no reference count another worker touches.
    handle: Arc<Handle>,
}

/// See [`RateLimit::handle`].
#[derive(Debug)]
struct Handle {
    limiter: Arc<RateLimiter>,
}

impl<S> tower::Service<Request<()>> for RateLimit<S>
where
    S: tower::Service<Request<()>, Response = Response, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    /// Not boxed when budgets live in this process.
    type Future =
        Either<StepFuture<Finishing<S::Future, Admitted>>, BoxFuture<Result<Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let (principal, typed) = match subject(&req) {
            Ok(found) => found,
            Err(e) => return Either::Left(decided(Err(e))),
        };
        match self.handle.limiter.admit_now(principal, typed) {
            Some(Ok(admitted)) => {
                return Either::Left(Either::Left(Finishing::new(self.inner.call(req), admitted)))
            }
            Some(Err(e)) => return Either::Left(decided(Err(e.into()))),
            None => {}
        }
        let handle = Arc::clone(&self.handle);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let (principal, typed) = subject(&req)?;
            let admitted = handle.limiter.admit(principal, typed).await?;
            admitted.finish(inner.call(req).await)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_slots_cap_each_user_and_forget_idle_ones() {
        let slots = UserSlots::default();
        let (ann, bob): (Arc<str>, Arc<str>) = ("ann".into(), "bob".into());
        let held: Vec<_> = (0..2).map(|_| slots.acquire(&ann, 2).unwrap()).collect();
        assert!(
            slots.acquire(&ann, 2).is_none(),
            "a third in flight is refused"
        );
        assert!(
            slots.acquire(&bob, 2).is_some(),
            "other users are unaffected"
        );
        slots.prune();
        assert!(slots.0.contains_key(&ann), "a busy user is kept");
        assert!(!slots.0.contains_key(&bob), "an idle user is forgotten");
        drop(held);
        assert!(
            slots.acquire(&ann, 2).is_some(),
            "finished requests free slots"
        );
    }

    #[test]
    fn header_values() {
        let tier = Tier::new("partner", 120, 10, 4);
        let d = Decision::allowed(&tier, 7, Duration::from_millis(1500));
        let h: HashMap<String, String> = d
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(h["ratelimit-policy"], "\"partner\";q=10;w=5");
        assert_eq!(h["ratelimit"], "\"partner\";r=7;t=2");
        assert_eq!(h["x-ratelimit-limit"], "10");
        assert_eq!(h["x-ratelimit-remaining"], "7");
        assert_eq!(h["x-ratelimit-reset"], "2");
        let d = Decision::denied(&tier, Duration::from_millis(200));
        assert_eq!(d.retry_after_secs(), 1);
        assert_eq!(d.remaining, 0);
    }

    fn limiter(window_days_per_cost: u32) -> RateLimiter {
        let config = RateLimitConfig {
            tiers: vec![
                Tier::new("default", 60, 20, 4),
                Tier::new("partner", 120, 40, 8),
            ],
            upstream_max_in_flight: 8,
            report_weight: HashMap::from([(
                "botchatdetails".to_owned(),
                NonZeroU32::new(3).unwrap(),
            )]),
            window_days_per_cost,
            shared: None,
        };
        let registry = prometheus::Registry::new();
        RateLimiter::new(
            config.clone(),
            Backend::Local(LocalLimiter::new(&config.tiers)),
            Arc::new(crate::clock::FixedClock::new(
                "2020-12-31T00:00:00Z".parse().unwrap(),
            )),
            Arc::new(Metrics::register(&registry).unwrap()),
        )
    }

    fn principal(tier: &str) -> Principal {
        Principal {
            user: "u".into(),
            role: crate::auth::Role::Admin,
            queues: Arc::default(),
            tier: tier.into(),
            fingerprint: crate::auth::ApiKey::generate().hash().fingerprint(),
        }
    }

    fn typed(path: &str, query: &str) -> GatewayRequest {
        let route = crate::route::match_path(path).unwrap();
        let catalog = crate::catalog::Catalog::new(&crate::catalog::builtin());
        let options = crate::request::RequestOptions::default();
        let ctx = crate::request::ParseContext {
            now: crate::request::Now::at("2020-12-31T00:00:00Z".parse().unwrap()),
            accept_csv: false,
            options: &options,
        };
        crate::request::parse_with(&route, Some(query), &catalog, &ctx).unwrap()
    }

    /// Local budgets are decided without waiting, and the same way as
    /// `admit` decides them: the burst is spent, the user's in-flight cap
    /// holds, and a refusal is a rate refusal.
    #[tokio::test]
    async fn local_budgets_are_decided_at_once() {
        let l = limiter(0);
        let (p, r) = (
            principal("default"),
            typed(
                "/Chime/Report/InboundVsAnsweredChats",
                "queueId=1&start=2020-12-01",
            ),
        );
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                l.admit_now(&p, &r)
                    .expect("local: decided at once")
                    .unwrap(),
            );
        }
        assert!(
            matches!(
                l.admit_now(&p, &r),
                Some(Err(Limited::Concurrency { max: 4 }))
            ),
            "the fifth in flight is refused"
        );
        drop(held);
        for _ in 4..20 {
            drop(l.admit(&p, &r).await.unwrap());
        }
        assert!(
            matches!(l.admit_now(&p, &r), Some(Err(Limited::Rate(_)))),
            "the burst of 20 is spent, by either path"
        );
    }

    #[test]
    fn tier_selection() {
        let l = limiter(0);
        assert_eq!(&*l.tier(&principal("partner")).unwrap().name, "partner");
        assert_eq!(&*l.tier(&principal("default")).unwrap().name, "default");
        assert_eq!(
            &*l.tier(&principal("no-such-tier")).unwrap().name,
            "default"
        );
    }

    #[test]
    fn cost_by_weight_and_window() {
        let flat = limiter(0);
        let tier = Tier::new("default", 60, 20, 4);
        let q = "queueId=1&start=2020-01-01&stop=2020-12-30";
        assert_eq!(
            flat.cost(&typed("/Chime/Report/InboundVsAnsweredChats", q), &tier)
                .get(),
            1
        );
        assert_eq!(
            flat.cost(&typed("/Chime/Report/BotChatDetails", q), &tier)
                .get(),
            3
        );
        assert_eq!(
            flat.cost(
                &typed("/Chime/Report/GetQueueBotReports", "queueId=1"),
                &tier
            )
            .get(),
            1
        );
        let by_window = limiter(31);
        // 364 days: 12 started 31-day periods.
        assert_eq!(
            by_window
                .cost(&typed("/Chime/Report/InboundVsAnsweredChats", q), &tier)
                .get(),
            12
        );
        // Weighted and long: capped at the burst, so it can ever pass.
        assert_eq!(
            by_window
                .cost(&typed("/Chime/Report/BotChatDetails", q), &tier)
                .get(),
            20
        );
        let day = "queueId=1&start=2020-12-01&stop=2020-12-01";
        assert_eq!(
            by_window
                .cost(&typed("/Chime/Report/InboundVsAnsweredChats", day), &tier)
                .get(),
            1
        );
        // No stop: the window runs to now (the injected clock).
        let open = "queueId=1&start=2020-10-01";
        assert_eq!(
            by_window
                .cost(&typed("/Chime/Report/InboundVsAnsweredChats", open), &tier)
                .get(),
            3
        );
    }

    #[test]
    fn tier_arithmetic() {
        let t = Tier::new("default", 60, 20, 4);
        assert_eq!(t.interval(), Duration::from_secs(1));
        assert_eq!(t.window(), Duration::from_secs(20));
        let slow = Tier::new("slow", 7, 3, 1);
        assert_eq!(slow.interval(), Duration::from_secs(60) / 7);
    }
}
