//! The one place where errors become responses.
//!
//! Every layer fails with a small error type owned by its module; services
//! return them boxed. [`classify`] walks the error chain, recognises each
//! condition and assigns its status, stable `code` and extra headers, and
//! [`render`] renders the single JSON shape every refusal uses:
//! `{"error":{"code":"...","message":"...","request_id":"..."}}`.
//! Client errors carry a specific message; anything unrecognised is an
//! internal error, logged by the caller and answered with a generic body.

use std::error::Error;

use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;

use crate::acl::Denied;
use crate::admin::api::AdminError;
use crate::admin::guard::AdminAuthError;
use crate::auth::AuthError;
use crate::body::{self, Response};
use crate::catalog::UnknownReport;
use crate::keystore::editor::ReadOnlyStore;
use crate::limits::LimitError;
use crate::proxy::UpstreamError;
use crate::ratelimit::Limited;
use crate::request::QueryError;
use crate::request_id::RequestId;
use crate::route::RouteError;

/// What a refusal looks like on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable, machine-readable reason (also the `outcome` metric label).
    pub code: &'static str,
    /// Human-readable explanation; never contains a key.
    pub message: String,
    /// Extra response headers (`WWW-Authenticate`, `Allow`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Classified {
    fn new(status: StatusCode, code: &'static str, err: &dyn Error) -> Self {
        Classified {
            status,
            code,
            message: err.to_string(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    fn retry_after(mut self, wait: std::time::Duration) -> Self {
        // Whole seconds, rounded up, never 0: "retry now" would invite a hot loop.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.headers.push((
            header::RETRY_AFTER,
            crate::header_number::number(secs.max(1)),
        ));
        self
    }

    /// Whether this is the gateway's own fault (logged as an error, generic body).
    pub fn is_internal(&self) -> bool {
        self.status == StatusCode::INTERNAL_SERVER_ERROR
    }
}

const WWW_AUTHENTICATE: &str = r#"Bearer realm="chime", error="invalid_token""#;

/// Maps an error (or anything in its source chain) to its response parts.
pub fn classify(err: &(dyn Error + 'static)) -> Classified {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = classify_one(e) {
            return found;
        }
        cur = e.source();
    }
    Classified {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message:
            "the gateway failed to handle this request; quote the request id when reporting it"
                .to_owned(),
        headers: Vec::new(),
    }
}

fn classify_one(e: &(dyn Error + 'static)) -> Option<Classified> {
    use StatusCode as S;
    if let Some(err) = e.downcast_ref::<RouteError>() {
        return Some(match err {
            RouteError::NotFound | RouteError::BadSessionId => {
                Classified::new(S::NOT_FOUND, "not_found", err)
            }
            RouteError::MethodNotAllowed => {
                Classified::new(S::METHOD_NOT_ALLOWED, "method_not_allowed", err)
                    .with_header(header::ALLOW, "GET, HEAD")
            }
        });
    }
    if let Some(err) = e.downcast_ref::<LimitError>() {
        return Some(match err {
            LimitError::BodyNotAllowed => Classified::new(S::BAD_REQUEST, "body_not_allowed", err),
            LimitError::QueryTooLong { .. } => {
                Classified::new(S::URI_TOO_LONG, "query_too_long", err)
            }
        });
    }
    if let Some(err) = e.downcast_ref::<Limited>() {
        return Some(match err {
            Limited::Rate(decision) => {
                let mut c = Classified::new(S::TOO_MANY_REQUESTS, "rate_limited", err)
                    .retry_after(decision.retry_after);
                c.headers.extend(decision.headers());
                c
            }
            Limited::Concurrency { .. } => {
                Classified::new(S::TOO_MANY_REQUESTS, "concurrency_limited", err)
                    .with_header(header::RETRY_AFTER, "1")
            }
            Limited::Overloaded => Classified::new(S::SERVICE_UNAVAILABLE, "overloaded", err)
                .with_header(header::RETRY_AFTER, "1"),
        });
    }
    if let Some(err) = e.downcast_ref::<AuthError>() {
        return Some(match err {
            AuthError::Missing => Classified::new(S::UNAUTHORIZED, "missing_credentials", err)
                .with_header(header::WWW_AUTHENTICATE, WWW_AUTHENTICATE),
            AuthError::Malformed => Classified::new(S::UNAUTHORIZED, "malformed_credentials", err)
                .with_header(header::WWW_AUTHENTICATE, WWW_AUTHENTICATE),
            AuthError::Unknown => Classified::new(S::UNAUTHORIZED, "unknown_key", err)
                .with_header(header::WWW_AUTHENTICATE, WWW_AUTHENTICATE),
            AuthError::Multiple => Classified::new(S::BAD_REQUEST, "multiple_credentials", err),
            AuthError::Throttled { retry_after } => {
                Classified::new(S::TOO_MANY_REQUESTS, "auth_throttled", err)
                    .retry_after(*retry_after)
            }
            AuthError::StoreUnavailable => {
                Classified::new(S::SERVICE_UNAVAILABLE, "key_store_unavailable", err)
                    .with_header(header::RETRY_AFTER, "5")
            }
        });
    }
    if let Some(err) = e.downcast_ref::<AdminAuthError>() {
        return Some(match err {
            AdminAuthError::BadToken => Classified::new(S::UNAUTHORIZED, "admin_unauthorized", err)
                .with_header(
                    header::WWW_AUTHENTICATE,
                    r#"Bearer realm="chime-gateway-admin""#,
                ),
            AdminAuthError::CrossSite => Classified::new(S::FORBIDDEN, "admin_cross_site", err),
        });
    }
    if let Some(err) = e.downcast_ref::<AdminError>() {
        return Some(match err {
            AdminError::BadRequest(_) => Classified::new(S::BAD_REQUEST, "invalid_request", err),
            AdminError::NotFound(_) => Classified::new(S::NOT_FOUND, "not_found", err),
            AdminError::Conflict(_) => Classified::new(S::CONFLICT, "conflict", err),
            AdminError::MethodNotAllowed => {
                Classified::new(S::METHOD_NOT_ALLOWED, "method_not_allowed", err)
            }
            AdminError::Store => {
                Classified::new(S::SERVICE_UNAVAILABLE, "key_store_unavailable", err)
            }
        });
    }
    if let Some(err) = e.downcast_ref::<ReadOnlyStore>() {
        return Some(Classified::new(S::CONFLICT, "read_only_key_store", err));
    }
    if let Some(err) = e.downcast_ref::<UnknownReport>() {
        return Some(Classified::new(S::NOT_FOUND, "unknown_report", err));
    }
    if let Some(err) = e.downcast_ref::<QueryError>() {
        let code = match err {
            QueryError::Malformed { .. } => "malformed_query",
            QueryError::UnknownParameter { .. } => "unknown_parameter",
            QueryError::DuplicateParameter { .. } => "duplicate_parameter",
            QueryError::ConflictingParameters { .. } => "conflicting_parameters",
            QueryError::MissingParameter { .. } => "missing_parameter",
            QueryError::BadValue { .. } => "bad_parameter",
            QueryError::NotAccepted { .. } => "parameter_not_accepted",
        };
        return Some(Classified::new(S::BAD_REQUEST, code, err));
    }
    if let Some(err) = e.downcast_ref::<Denied>() {
        return Some(Classified::new(S::FORBIDDEN, err.reason(), err));
    }
    if let Some(err) = e.downcast_ref::<UpstreamError>() {
        return Some(match err {
            UpstreamError::Unavailable => {
                Classified::new(S::BAD_GATEWAY, "upstream_unavailable", err)
            }
            UpstreamError::Timeout => Classified::new(S::GATEWAY_TIMEOUT, "upstream_timeout", err),
            UpstreamError::Failed => Classified::new(S::BAD_GATEWAY, "upstream_error", err),
            UpstreamError::BadAnswer => Classified::new(S::BAD_GATEWAY, "upstream_bad_answer", err),
            UpstreamError::CircuitOpen { retry_after } => {
                Classified::new(S::SERVICE_UNAVAILABLE, "upstream_circuit_open", err)
                    .retry_after(*retry_after)
            }
        });
    }
    None
}

/// Renders a classified refusal as the gateway's JSON error response.
pub fn render(classified: &Classified, request_id: &RequestId) -> Response {
    let doc = serde_json::json!({
        "error": {
            "code": classified.code,
            "message": classified.message,
            "request_id": request_id.as_str(),
        }
    });
    let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
    bytes.push(b'\n');
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = classified.status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for (name, value) in &classified.headers {
        headers.insert(name.clone(), value.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins every condition to its status and code: changing one is an API change.
    #[test]
    fn mapping_table() {
        let cases: Vec<(crate::BoxError, u16, &str)> = vec![
            (RouteError::NotFound.into(), 404, "not_found"),
            (RouteError::BadSessionId.into(), 404, "not_found"),
            (AdminAuthError::BadToken.into(), 401, "admin_unauthorized"),
            (AdminAuthError::CrossSite.into(), 403, "admin_cross_site"),
            (
                AdminError::BadRequest("x".into()).into(),
                400,
                "invalid_request",
            ),
            (AdminError::NotFound("x".into()).into(), 404, "not_found"),
            (AdminError::Conflict("x".into()).into(), 409, "conflict"),
            (ReadOnlyStore.into(), 409, "read_only_key_store"),
            (
                AdminError::MethodNotAllowed.into(),
                405,
                "method_not_allowed",
            ),
            (AdminError::Store.into(), 503, "key_store_unavailable"),
            (
                RouteError::MethodNotAllowed.into(),
                405,
                "method_not_allowed",
            ),
            (LimitError::BodyNotAllowed.into(), 400, "body_not_allowed"),
            (
                LimitError::QueryTooLong { limit: 10 }.into(),
                414,
                "query_too_long",
            ),
            (Limited::Overloaded.into(), 503, "overloaded"),
            (
                Limited::Concurrency { max: 4 }.into(),
                429,
                "concurrency_limited",
            ),
            (
                Limited::Rate(Box::new(crate::ratelimit::Decision::denied(
                    &crate::ratelimit::Tier::new("default", 60, 20, 4),
                    std::time::Duration::from_secs(3),
                )))
                .into(),
                429,
                "rate_limited",
            ),
            (AuthError::Missing.into(), 401, "missing_credentials"),
            (AuthError::Malformed.into(), 401, "malformed_credentials"),
            (AuthError::Unknown.into(), 401, "unknown_key"),
            (AuthError::Multiple.into(), 400, "multiple_credentials"),
            (
                AuthError::Throttled {
                    retry_after: std::time::Duration::from_millis(1500),
                }
                .into(),
                429,
                "auth_throttled",
            ),
            (
                AuthError::StoreUnavailable.into(),
                503,
                "key_store_unavailable",
            ),
            (
                UnknownReport { name: "X".into() }.into(),
                404,
                "unknown_report",
            ),
            (
                QueryError::Malformed { reason: "x".into() }.into(),
                400,
                "malformed_query",
            ),
            (
                QueryError::UnknownParameter { name: "x".into() }.into(),
                400,
                "unknown_parameter",
            ),
            (
                QueryError::DuplicateParameter { name: "queueId" }.into(),
                400,
                "duplicate_parameter",
            ),
            (
                QueryError::ConflictingParameters {
                    a: "stop",
                    b: "end",
                }
                .into(),
                400,
                "conflicting_parameters",
            ),
            (
                QueryError::MissingParameter {
                    name: "queueId",
                    example: "queueId=1",
                }
                .into(),
                400,
                "missing_parameter",
            ),
            (
                QueryError::BadValue {
                    name: "queueId",
                    problem: "x".into(),
                    example: "1",
                }
                .into(),
                400,
                "bad_parameter",
            ),
            (
                QueryError::NotAccepted {
                    name: "queueId",
                    route: "x",
                }
                .into(),
                400,
                "parameter_not_accepted",
            ),
            (
                Denied::QueueForbidden { queue: 2 }.into(),
                403,
                "queue_forbidden",
            ),
            (Denied::AdminOnly.into(), 403, "admin_only"),
            (Denied::SessionForbidden.into(), 403, "session_forbidden"),
            (
                UpstreamError::Unavailable.into(),
                502,
                "upstream_unavailable",
            ),
            (UpstreamError::Timeout.into(), 504, "upstream_timeout"),
            (UpstreamError::Failed.into(), 502, "upstream_error"),
            (UpstreamError::BadAnswer.into(), 502, "upstream_bad_answer"),
            (
                UpstreamError::CircuitOpen {
                    retry_after: std::time::Duration::from_secs(4),
                }
                .into(),
                503,
                "upstream_circuit_open",
            ),
            (std::io::Error::other("boom").into(), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let c = classify(err.as_ref());
            assert_eq!(c.status.as_u16(), status, "{err}");
            assert_eq!(c.code, code, "{err}");
        }
    }

    #[test]
    fn refusal_headers() {
        let c = classify(&AuthError::Unknown);
        assert_eq!(c.headers[0].0, header::WWW_AUTHENTICATE);
        assert_eq!(c.headers[0].1, WWW_AUTHENTICATE);
        let c = classify(&RouteError::MethodNotAllowed);
        assert_eq!(
            c.headers,
            vec![(header::ALLOW, HeaderValue::from_static("GET, HEAD"))]
        );
        let c = classify(&Limited::Overloaded);
        assert_eq!(c.headers[0].0, header::RETRY_AFTER);
        let c = classify(&AuthError::Throttled {
            retry_after: std::time::Duration::from_millis(1500),
        });
        assert_eq!(
            c.headers,
            vec![(header::RETRY_AFTER, HeaderValue::from(2u64))]
        );
        let c = classify(&AuthError::Missing);
        assert_eq!(c.headers[0].1, WWW_AUTHENTICATE);
    }

    #[test]
    fn internal_errors_get_a_generic_message() {
        let c = classify(&std::io::Error::other("secret detail"));
        assert!(c.is_internal());
        assert!(!c.message.contains("secret detail"));
    }

    #[test]
    fn source_chain_is_walked() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapper(#[source] UpstreamError);
        let c = classify(&Wrapper(UpstreamError::Timeout));
        assert_eq!(c.code, "upstream_timeout");
    }

    #[tokio::test]
    async fn rendered_shape() {
        use http_body_util::BodyExt;
        let id = RequestId::parse("abc-123").unwrap();
        let resp = render(&classify(&Denied::AdminOnly), &id);
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], "admin_only");
        assert_eq!(v["error"]["request_id"], "abc-123");
        assert!(v["error"]["message"].as_str().unwrap().contains("admin"));
    }
}
