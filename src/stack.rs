//! The request path, composed in one place. Outermost first:
//!
//! 1. [`observe`](crate::observe) — request id, error → JSON response,
//!    metrics and access log (sees every outcome);
//! 2. [`limits`](crate::limits) — no bodies, query length;
//! 3. [`route`](crate::route) — path allowlist and method;
//! 4. [`auth`](crate::auth) — bearer key → principal;
//! 5. [`listing`](crate::listing) — answers `/Chime/Gateway/Reports` itself;
//! 6. [`request`](crate::request) — query → typed request (with the catalog);
//! 7. [`acl`](crate::acl) — queue ACL on the typed request;
//! 8. [`ratelimit`](crate::ratelimit) — per-user concurrency, load shedding,
//!    per-user budgets. After the ACL (DESIGN.md puts it before parsing)
//!    because a report's cost depends on the typed request, and so that
//!    refused requests never spend budget;
//! 9. [`proxy`](crate::proxy) — canonical upstream request, streamed answer.
//!
//! Each layer refuses without calling the next one.

use std::convert::Infallible;
use std::sync::Arc;

use http::Request;
use tower::util::BoxCloneService;
use tower::ServiceBuilder;

use crate::acl::Acl;
use crate::auth::AuthLayer;
use crate::body::Response;
use crate::gate::GateLayer;
use crate::limits::LimitsLayer;
use crate::listing::Listing;
use crate::observe::ObserveLayer;
use crate::ratelimit::RateLimitLayer;
use crate::request::Parse;
use crate::route::Route;
use crate::state::AppState;

/// The composed gateway service for requests with body type `B`.
pub type GatewayService<B> = BoxCloneService<Request<B>, Response, Infallible>;

/// Builds worker `worker`'s stack over `state` (with that worker's copy of
/// the per-request metrics).
pub fn build<B>(state: &AppState, worker: usize) -> GatewayService<B>
where
    B: http_body::Body + Send + 'static,
{
    let metrics = Arc::new(state.metrics.for_worker(worker));
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::new(
            Arc::clone(&metrics),
            state.audit.clone(),
            state.config.metrics.per_user,
        ))
        .layer(LimitsLayer::new(state.config.listen.max_query_bytes))
        .layer(GateLayer::new(Route))
        .layer(AuthLayer::new(
            Arc::clone(&state.keys),
            Arc::clone(&state.auth_throttle),
            Arc::clone(&metrics),
        ))
        .layer(GateLayer::new(Listing::new(Arc::clone(&state.catalog))))
        .layer(GateLayer::new(Parse::new(
            Arc::clone(&state.catalog),
            Arc::clone(&state.request_options),
            Arc::clone(&state.clock),
        )))
        .layer(GateLayer::new(Acl::new(Arc::clone(&metrics))))
        .layer(RateLimitLayer::new(Arc::clone(&state.ratelimiter)))
        .service(state.proxy.for_worker(metrics));
    BoxCloneService::new(svc)
}
