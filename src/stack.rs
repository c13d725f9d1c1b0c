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

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::acl::Acl;
use crate::auth::{AuthLayer, Authenticate};
use crate::gate::{GateLayer, Gated};
use crate::limits::{Limits, LimitsLayer};
use crate::listing::Listing;
use crate::observe::{Observe, ObserveLayer};
use crate::proxy::Proxy;
use crate::ratelimit::{RateLimit, RateLimitLayer};
use crate::request::Parse;
use crate::route::Route;
use crate::state::AppState;

/// The composed gateway service, named layer by layer as listed above. A
/// service for requests with any body type (the limits layer refuses a
/// body and drops it), never failing (errors are rendered as responses).
/// Named rather than boxed: a worker clones its stack per request without
/// allocating, and the layers' futures nest into one.
pub type Stack = Observe<
    Limits<Gated<Route, Authenticate<Gated<Listing, Gated<Parse, Gated<Acl, RateLimit<Proxy>>>>>>>,
>;

/// Builds worker `worker`'s stack over `state` (with that worker's copy of
/// the per-request metrics).
pub fn build(state: &AppState, worker: usize) -> Stack {
    let metrics = Arc::new(state.metrics.for_worker(worker));
    ServiceBuilder::new()
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
        .service(state.proxy.for_worker(metrics))
}
