//! Authenticate: `Authorization: Bearer {GUID}` to a [`Principal`].
//!
//! Exactly one `Authorization` header is accepted (several: 400
//! `multiple_credentials`); the scheme is matched case-insensitively and the
//! key must be a GUID (hyphenated, or braced as .NET prints it). A key is
//! never read from the query string. Missing, malformed and unknown keys are
//! refused with 401 and `WWW-Authenticate: Bearer realm="chime", ...`; an
//! unreachable key store with 503 (never 401, so a partner does not think
//! their key is wrong). Failed attempts count against the client address's
//! budget ([`throttle`]); over it, 429 `auth_throttled` + `Retry-After`.
//! Adds [`Authenticated`] (the [`Principal`] and the canonical [`ApiKey`],
//! for upstream pass-through) to the request's extensions and records the
//! key's last use.

pub mod key;
pub mod throttle;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request};
use serde::{Deserialize, Serialize};

use crate::body::Response;
use crate::gate::{decided, StepFuture};
use crate::keystore::{KeyStore, StoreUnavailable};
use crate::metrics::Metrics;
use crate::observe::Trace;
use crate::proxy::headers::Forwarding;
use crate::{BoxError, BoxFuture};
pub use key::{ApiKey, Fingerprint, KeyHash};
pub use throttle::AuthThrottle;

/// Why authentication failed. Messages never echo the key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing credentials: send `Authorization: Bearer {{API key}}`")]
    Missing,
    /// Not `Bearer {GUID}`.
    #[error("malformed credentials: the Authorization header must be `Bearer` followed by the API key GUID")]
    Malformed,
    /// Well-formed, but not a valid key.
    #[error("unknown key: the API key is not valid (unknown, expired or revoked)")]
    Unknown,
    /// More than one `Authorization` header.
    #[error("send exactly one Authorization header")]
    Multiple,
    /// The key store cannot answer and no cached verdict exists.
    #[error("the key store is unavailable; retry shortly")]
    StoreUnavailable,
    /// Too many failed authentications from this address.
    #[error("too many failed authentications from your address; retry after {} s", retry_after.as_secs().max(1))]
    Throttled {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
}

impl AuthError {
    /// The `reason` label for the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Unknown => "unknown",
            AuthError::Multiple => "multiple",
            AuthError::StoreUnavailable => "store_unavailable",
            AuthError::Throttled { .. } => "throttled",
        }
    }

    /// Whether this failure counts against the address's failure budget.
    fn counts_as_guess(&self) -> bool {
        matches!(
            self,
            AuthError::Missing | AuthError::Malformed | AuthError::Unknown | AuthError::Multiple
        )
    }
}

/// What a user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every report and queue.
    Admin,
    /// Only the queues in [`Principal::queues`].
    Manager,
}

impl Role {
    /// As text.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
        }
    }
}

/// The authenticated user behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name.
    pub user: Arc<str>,
    /// Role.
    pub role: Role,
    /// Queues a manager may see (ignored for admins).
    pub queues: Arc<BTreeSet<u32>>,
    /// Rate-limit tier.
    pub tier: Arc<str>,
    /// Fingerprint of the key used.
    pub fingerprint: Fingerprint,
}

/// What authentication establishes, as one extension of the request: who
/// asks, and with which key.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user behind the key.
    pub principal: Principal,
    /// The canonical key, for passing through upstream; `None` where a
    /// request is judged without one (the admin API's `explain`).
    pub key: Option<ApiKey>,
}

impl Authenticated {
    /// The principal authentication added to `req`, if it did.
    pub fn principal<B>(req: &Request<B>) -> Option<&Principal> {
        req.extensions()
            .get::<Authenticated>()
            .map(|a| &a.principal)
    }
}

impl Principal {
    /// Whether this principal may see `queue`.
    pub fn may_see_queue(&self, queue: u32) -> bool {
        self.role == Role::Admin || self.queues.contains(&queue)
    }
}

/// Extracts the bearer key from the request headers.
pub fn bearer_key(headers: &HeaderMap) -> Result<ApiKey, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(AuthError::Missing),
        (Some(_), Some(_)) => return Err(AuthError::Multiple),
        (Some(v), None) => v,
    };
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, key) = crate::split::once(text, b' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    ApiKey::parse(key.trim_matches(' ')).ok_or(AuthError::Malformed)
}

/// Layer for [`Authenticate`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn KeyStore>,
    throttle: Arc<AuthThrottle>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    /// Authenticates against `store`, throttling failures per address.
    pub fn new(
        store: Arc<dyn KeyStore>,
        throttle: Arc<AuthThrottle>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AuthLayer {
            shared: Arc::new(Shared {
                store,
                throttle,
                metrics,
            }),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Where authentication stands once the key is read.
enum Step {
    /// Decided without waiting: refused, or answered by a store that holds
    /// its keys in memory.
    Done(Result<(Principal, ApiKey), AuthError>),
    /// The store must be asked and awaited.
    Lookup(ApiKey, KeyHash),
}

impl Shared {
    /// Checks the address's failure budget, reads the key and asks the
    /// store for an answer it has at hand.
    fn begin(&self, headers: &HeaderMap, ip: Option<IpAddr>) -> Step {
        let presented = match ip.and_then(|ip| self.throttle.blocked_for(ip)) {
            Some(wait) => Err(AuthError::Throttled { retry_after: wait }),
            None => bearer_key(headers),
        };
        let key = match presented {
            Ok(key) => key,
            Err(e) => return Step::Done(self.failed(e, ip)),
        };
        let hash = key.hash();
        match self.store.lookup_now(&hash) {
            Some(answer) => Step::Done(self.conclude(key, answer, ip)),
            None => Step::Lookup(key, hash),
        }
    }

    /// The outcome of the store's `answer` for `key`.
    fn conclude(
        &self,
        key: ApiKey,
        answer: Result<Option<Principal>, StoreUnavailable>,
        ip: Option<IpAddr>,
    ) -> Result<(Principal, ApiKey), AuthError> {
        match answer {
            // The store recorded the key's use.
            Ok(Some(principal)) => Ok((principal, key)),
            Ok(None) => self.failed(AuthError::Unknown, ip),
            Err(e) => {
                tracing::error!(error = %e, "key store lookup failed");
                self.failed(AuthError::StoreUnavailable, ip)
            }
        }
    }

    /// Counts failure `e` and, for a guess, charges the address's budget.
    fn failed<T>(&self, e: AuthError, ip: Option<IpAddr>) -> Result<T, AuthError> {
        self.metrics
            .auth_failures
            .with_label_values(&[e.reason()])
            .inc();
        if let (true, Some(ip)) = (e.counts_as_guess(), ip) {
            if self.throttle.record_failure(ip).is_some() {
                tracing::warn!(client = %ip, "authentication failures over budget; address throttled");
            }
        }
        Err(e)
    }
}

/// Adds the authenticated principal and key to the request.
fn annotate(req: &mut Request<()>, principal: Principal, key: ApiKey) {
    if let Some(trace) = req.extensions().get::<Trace>() {
        trace.set_principal(&principal);
    }
    req.extensions_mut().insert(Authenticated {
        principal,
        key: Some(key),
    });
}

impl<S> tower::Service<Request<()>> for Authenticate<S>
where
    S: tower::Service<Request<()>, Response = Response, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    /// Not boxed when the store answered at once (the key file always does).
    type Future = Either<StepFuture<S::Future>, BoxFuture<Result<Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<()>) -> Self::Future {
        let ip = req
            .extensions()
            .get::<Trace>()
            .and_then(|t| t.correlation().client.as_ref())
            .map(Forwarding::ip);
        let (key, hash) = match self.shared.begin(req.headers(), ip) {
            Step::Done(Ok((principal, key))) => {
                annotate(&mut req, principal, key);
                return Either::Left(Either::Left(self.inner.call(req)));
            }
            Step::Done(Err(e)) => return Either::Left(decided(Err(e.into()))),
            Step::Lookup(key, hash) => (key, hash),
        };
        let shared = Arc::clone(&self.shared);
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let answer = shared.store.lookup(&hash).await;
            let (principal, key) = shared.conclude(key, answer, ip)?;
            annotate(&mut req, principal, key);
            inner.call(req).await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const DOC_KEY: &str = "b5c38d85-a042-4cef-8418-eb06752e346b";

    fn with_auth(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        let canonical = ApiKey::parse(DOC_KEY).unwrap();
        for ok in [
            format!("Bearer {DOC_KEY}"),
            format!("bearer {DOC_KEY}"),
            format!("BEARER {}", DOC_KEY.to_uppercase()),
            format!("Bearer {{{DOC_KEY}}}"),
        ] {
            assert_eq!(bearer_key(&with_auth(&[&ok])).unwrap(), canonical, "{ok}");
        }
        assert!(matches!(
            bearer_key(&with_auth(&[])),
            Err(AuthError::Missing)
        ));
        let two = format!("Bearer {DOC_KEY}");
        assert!(matches!(
            bearer_key(&with_auth(&[&two, &two])),
            Err(AuthError::Multiple)
        ));
        for bad in [
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            format!("Basic {DOC_KEY}"),
            format!("Token {DOC_KEY}"),
            DOC_KEY.to_owned(),
            format!("Bearer {DOC_KEY} extra"),
            "Bearer not-a-guid".to_owned(),
        ] {
            assert!(
                matches!(bearer_key(&with_auth(&[&bad])), Err(AuthError::Malformed)),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_never_echo_the_key() {
        for e in [AuthError::Missing, AuthError::Malformed, AuthError::Unknown] {
            assert!(!e.to_string().contains("b5c38d85"));
        }
    }
}
