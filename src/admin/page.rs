//! The key-management page: one HTML page, its script and its style sheet,
//! compiled into the binary (no CDN, nothing fetched from elsewhere), served
//! with a Content-Security-Policy that allows only these same-origin assets.

use http::header::{HeaderValue, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{Method, StatusCode};

use crate::body::{self, Response};
use crate::error;
use crate::request_id::RequestId;
use crate::route::RouteError;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/admin.js");
const STYLE: &str = include_str!("assets/admin.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's paths.
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/admin.js" | "/admin.css")
}

/// Serves `path` (one of [`is_page`]).
pub fn serve(method: &Method, path: &str, id: &RequestId) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return error::render(&error::classify(&RouteError::MethodNotAllowed), id);
    }
    let (text, kind) = match path {
        "/admin.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/admin.css" => (STYLE, "text/css; charset=utf-8"),
        _ => (INDEX, "text/html; charset=utf-8"),
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
