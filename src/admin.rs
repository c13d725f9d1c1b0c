//! The admin listener (separate address, default `127.0.0.1:9090`):
//!
//! - `GET /healthz` — 200 while the process is alive;
//! - `GET /readyz` — 200 when ready to serve, 503 otherwise, with the
//!   reasons as JSON (draining, keys loaded, upstream proven dead);
//! - `GET /metrics` — Prometheus text exposition;
//! - `GET /keys/last-used` — when each key (by fingerprint) was last used by
//!   this instance, read by `chime-gateway keys list`;
//! - `/api/…` — the admin API ([`api`]), behind [`guard`];
//! - `GET /` — the key-management page ([`page`]), which uses the API.
//!
//! Anything else is 404 (405 for another method on a known path), in the
//! gateway's JSON error shape.

pub mod api;
pub mod guard;
pub mod page;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, StatusCode};

use crate::body::{self, Response};
use crate::error;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::route::RouteError;
use crate::state::AppState;
use crate::BoxError;

/// Serves the admin endpoints.
#[derive(Debug, Clone)]
pub struct Admin {
    state: Arc<AppState>,
    api: Option<Arc<api::AdminApi>>,
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut resp = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl Admin {
    /// Admin endpoints over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        let api = state
            .config
            .admin
            .api
            .then(|| Arc::new(api::AdminApi::new(Arc::clone(&state))));
        Admin { state, api }
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let id = RequestId::from_headers(req.headers());
        let mut resp = match &self.api {
            Some(api) if req.uri().path().starts_with("/api/") => match api.handle(req).await {
                Ok(resp) => resp,
                Err(e) => error::render(&error::classify(&*e), &id),
            },
            Some(_) if page::is_page(req.uri().path()) => {
                page::serve(req.method(), req.uri().path(), &id)
            }
            _ => self.operational(&req, &id),
        };
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp.headers_mut().insert(&X_REQUEST_ID, id.header_value());
        resp
    }

    /// Health, readiness, metrics and last use.
    fn operational<B>(&self, req: &Request<B>, id: &RequestId) -> Response {
        let known = matches!(
            req.uri().path(),
            "/healthz" | "/readyz" | "/metrics" | "/keys/last-used"
        );
        if !known {
            error::render(&error::classify(&RouteError::NotFound), id)
        } else if req.method() != Method::GET && req.method() != Method::HEAD {
            error::render(&error::classify(&RouteError::MethodNotAllowed), id)
        } else {
            match req.uri().path() {
                "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
                "/readyz" => {
                    let report = self.state.readiness.report();
                    let status = if report.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let mut doc = serde_json::to_value(&report).unwrap_or_default();
                    doc["keys"] = self.state.keys.key_count().into();
                    doc["reports"] = self.state.catalog.current().len().into();
                    json(status, &doc)
                }
                "/keys/last-used" => {
                    let keys: Vec<_> = self
                        .state
                        .keys
                        .last_used()
                        .into_iter()
                        .map(|(fp, at)| {
                            serde_json::json!({"fingerprint": fp.as_str(), "last_used": at.to_string()})
                        })
                        .collect();
                    json(StatusCode::OK, &serde_json::json!({ "keys": keys }))
                }
                _ => {
                    let mut resp =
                        Response::new(body::full(crate::metrics::render(&self.state.registry)));
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    resp
                }
            }
        }
    }
}
