//! Listing: `GET /Chime/Gateway/Reports`, the reports this key may call.
//!
//! Answered by the gateway itself after authentication (nothing is
//! forwarded): for an admin every report and discovery route; for a manager
//! the per-queue reports and queue discovery routes, with the queues they
//! may pass as `queueId`. Each report carries its scope, category,
//! StartOnly flag and route, so a partner can build valid URLs. Rejects a
//! query string with 400 `malformed_query`; other requests pass through.

use std::sync::Arc;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Request;
use serde_json::json;

use crate::auth::{Authenticated, Principal, Role};
use crate::body::{self, Response};
use crate::catalog::{CatalogHandle, Category};
use crate::gate::{Gate, Passed};
use crate::request::QueryError;
use crate::route::RouteMatch;
use crate::BoxError;

/// The listing document for `principal`.
pub fn document(principal: &Principal, catalog: &CatalogHandle) -> serde_json::Value {
    let admin = principal.role == Role::Admin;
    let catalog = catalog.current();
    let reports: Vec<_> = catalog
        .reports()
        .iter()
        .filter(|r| admin || r.category.is_per_queue())
        .map(|r| {
            json!({
                "name": r.name,
                "title": r.title,
                "scope": if r.category.is_per_queue() { "queue" } else { "tenant" },
                "category": r.category,
                "start_only": r.start_only,
                "chart_type": r.chart_type,
                "route": format!("/Chime/Report/{}", r.name),
            })
        })
        .collect();
    let discovery: Vec<_> = Category::ALL
        .into_iter()
        .filter(|c| admin || c.is_per_queue())
        .map(|c| format!("/Chime/Report/{}", c.discovery_route()))
        .collect();
    json!({
        "user": &*principal.user,
        "role": principal.role.as_str(),
        "queues": if admin { serde_json::Value::String("all".into()) } else { json!(principal.queues.iter().collect::<Vec<_>>()) },
        "reports": reports,
        "discovery": discovery,
    })
}

/// The listing gate (see the module docs).
#[derive(Debug, Clone)]
pub struct Listing {
    catalog: Arc<CatalogHandle>,
}

impl Listing {
    /// Lists from `catalog`.
    pub fn new(catalog: Arc<CatalogHandle>) -> Self {
        Listing { catalog }
    }
}

impl Gate for Listing {
    fn pass(&self, req: &mut Request<()>) -> Result<Passed, BoxError> {
        if req.extensions().get::<RouteMatch>() != Some(&RouteMatch::Listing) {
            return Ok(Passed::Next);
        }
        if req.uri().query().is_some_and(|q| !q.is_empty()) {
            return Err(QueryError::Malformed {
                reason: "/Chime/Gateway/Reports takes no parameters".into(),
            }
            .into());
        }
        let principal =
            Authenticated::principal(req).ok_or("listing reached without a principal")?;
        let doc = document(principal, &self.catalog);
        let mut resp = Response::new(body::full(serde_json::to_vec(&doc)?));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        Ok(Passed::Answer(resp))
    }
}
