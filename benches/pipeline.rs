//! Micro-benchmarks of the request path: `cargo bench --bench pipeline`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chime_gateway::auth::{bearer_key, ApiKey};
use chime_gateway::catalog::{builtin, Catalog};
use chime_gateway::clock::SystemClock;
use chime_gateway::config::{Config, KeySource};
use chime_gateway::demo::{ADMIN_KEY, DEMO_KEYS, MANAGER_KEY};
use chime_gateway::keystore::file::FileKeyStore;
use chime_gateway::keystore::KeyStore;
use chime_gateway::route::match_path;
use chime_gateway::simulator::{Simulator, SimulatorConfig};
use chime_gateway::state::AppState;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;

const TARGET: &str = "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true";

fn parse(c: &mut Criterion) {
    let catalog = Catalog::new(&builtin());
    let (path, query) = TARGET.split_once('?').unwrap();
    c.bench_function("route + parse + canonical query", |b| {
        b.iter(|| {
            let route = match_path(path).unwrap();
            let typed = chime_gateway::request::parse(&route, Some(query), &catalog).unwrap();
            typed.upstream_path_and_query("/Chime")
        })
    });
}

fn auth(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = FileKeyStore::embedded(DEMO_KEYS, Arc::new(SystemClock)).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {MANAGER_KEY}")).unwrap(),
    );
    c.bench_function("bearer parse + hash + key lookup", |b| {
        b.to_async(&rt).iter(|| async {
            let key: ApiKey = bearer_key(&headers).unwrap();
            store.lookup(&key.hash()).await.unwrap().unwrap()
        })
    });
}

fn full_stack(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (svc, _sim) = rt.block_on(async {
        let sim = Simulator::start(SimulatorConfig {
            record: false,
            keys: vec![MANAGER_KEY.into(), ADMIN_KEY.into()],
            reports: builtin(),
        })
        .await
        .unwrap();
        // Every request's audit line is written as in production, but to
        // /dev/null rather than to the benchmark's output (two million
        // lines of it).
        let toml = format!(
            "[upstream]\nbase_url = \"{}\"\n[audit]\ntarget = \"file\"\nfile = \"/dev/null\"\n",
            sim.base_url()
        );
        let mut config = Config::from_toml(
            &toml,
            "<bench>",
            Path::new("."),
            &std::collections::HashMap::new(),
        )
        .unwrap();
        config.keys.source = KeySource::Embedded(DEMO_KEYS);
        // The benchmark measures the path, not the budget: never run out.
        config.ratelimit.tiers = vec![chime_gateway::ratelimit::Tier::new(
            "default",
            u32::MAX / 2,
            u32::MAX / 2,
            1024,
        )];
        let state = AppState::build(config, Arc::new(SystemClock))
            .await
            .unwrap();
        (chime_gateway::stack::build(&state, 0), sim)
    });
    c.bench_function("full stack, report via simulated Chime", |b| {
        b.to_async(&rt).iter(|| {
            let svc = svc.clone();
            async move {
                let req = Request::get(TARGET)
                    .header("authorization", format!("Bearer {MANAGER_KEY}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = svc.oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap().to_bytes().len()
            }
        })
    });
}

fn limiter(c: &mut Criterion) {
    use chime_gateway::ratelimit::local::LocalLimiter;
    use chime_gateway::ratelimit::shared::SharedLimiter;
    use chime_gateway::ratelimit::Tier;
    use std::num::NonZeroU32;
    // A budget that never runs out, so every decision does the full work.
    let tiers = vec![Tier::new("default", u32::MAX / 2, 1_000_000, 4)];
    let local = LocalLimiter::new(&tiers);
    let user: Arc<str> = "bench-user".into();
    c.bench_function("rate-limit decision, local", |b| {
        b.iter(|| local.check(&tiers[0], &user, NonZeroU32::MIN))
    });
    let Ok(url) = std::env::var("CHIME_GATEWAY_TEST_REDIS") else {
        eprintln!("skipped: set CHIME_GATEWAY_TEST_REDIS to benchmark the Redis limiter");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(chime_gateway::metrics::Metrics::register(&registry).unwrap());
    let prefix = format!("chime-gateway-bench:{}:", uuid::Uuid::new_v4());
    let shared = rt.block_on(async {
        SharedLimiter::new(
            &url,
            &prefix,
            std::time::Duration::from_millis(200),
            &tiers,
            metrics,
        )
        .unwrap()
    });
    c.bench_function("rate-limit decision, redis (one round trip)", |b| {
        b.to_async(&rt)
            .iter(|| async { shared.check(&tiers[0], &user, NonZeroU32::MIN).await })
    });
}

/// The ACL decision alone, and the whole per-request decision the issue's
/// target names: parse + ACL + local rate-limit decision (key lookup apart).
fn decision(c: &mut Criterion) {
    use chime_gateway::auth::{Principal, Role};
    use chime_gateway::ratelimit::local::LocalLimiter;
    use chime_gateway::ratelimit::Tier;
    use std::collections::BTreeSet;
    use std::num::NonZeroU32;
    let catalog = Catalog::new(&builtin());
    let (path, query) = TARGET.split_once('?').unwrap();
    let route = match_path(path).unwrap();
    let typed = chime_gateway::request::parse(&route, Some(query), &catalog).unwrap();
    let manager = Principal {
        user: "m".into(),
        role: Role::Manager,
        queues: Arc::new(BTreeSet::from([1, 4, 9])),
        tier: "default".into(),
        fingerprint: ApiKey::generate().hash().fingerprint(),
    };
    c.bench_function("ACL decision", |b| {
        b.iter(|| chime_gateway::acl::decide(&manager, &typed).unwrap())
    });
    let tiers = vec![Tier::new("default", u32::MAX / 2, 1_000_000, 4)];
    let local = LocalLimiter::new(&tiers);
    c.bench_function("parse + ACL + rate-limit decision", |b| {
        b.iter(|| {
            let route = match_path(path).unwrap();
            let typed = chime_gateway::request::parse(&route, Some(query), &catalog).unwrap();
            chime_gateway::acl::decide(&manager, &typed).unwrap();
            local.check(&tiers[0], &manager.user, NonZeroU32::MIN)
        })
    });
}

/// One reading of each clock a request reads: the precise monotonic clock
/// (tokio's and std's `Instant`), the wall clock (jiff's `Timestamp`, for
/// the window's "now", a bounded key's validity and the audit line) and the
/// coarse clocks (`src/clock/coarse.rs`: monotonic for idleness and the
/// pool's idle age, wall for a key's last use).
fn clocks(c: &mut Criterion) {
    use chime_gateway::clock::coarse::Tick;
    c.bench_function("clock read, precise (Instant::now)", |b| {
        b.iter(std::time::Instant::now)
    });
    c.bench_function("clock read, wall (Timestamp::now)", |b| {
        b.iter(jiff::Timestamp::now)
    });
    c.bench_function("clock read, coarse (Tick::now)", |b| b.iter(Tick::now));
    c.bench_function("clock read, coarse wall (coarse::wall)", |b| {
        b.iter(chime_gateway::clock::coarse::wall)
    });
}

criterion_group!(benches, parse, auth, decision, limiter, full_stack, clocks);
criterion_main!(benches);
