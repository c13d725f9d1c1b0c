//! Who may use the admin API and key page.
//!
//! With an admin token configured, every API request must carry
//! `Authorization: Bearer <token>`, compared in constant time (digests of
//! both sides, so not even the length leaks). Without one — allowed only
//! when the admin listener is bound to loopback (configuration refuses
//! anything else) — requests must name a loopback `Host`, so a web page
//! elsewhere cannot reach the API through DNS rebinding. Either way, every
//! API request must carry the `X-Chime-Gateway-Admin: 1` header: browsers
//! never add a custom header to a cross-site request without a CORS
//! pre-flight, which this listener never grants, so a forged form post or
//! image load from another site is refused (CSRF). Nothing is ever put in
//! a cookie.

use http::header::{HeaderMap, AUTHORIZATION, HOST};
use http::HeaderName;
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// The header every admin API request must carry.
pub static X_ADMIN: HeaderName = HeaderName::from_static("x-chime-gateway-admin");

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminAuthError {
    /// No token, or the wrong one.
    #[error("the admin API needs `Authorization: Bearer <admin token>` (admin.token_file or CHIME_GATEWAY_ADMIN_TOKEN)")]
    BadToken,
    /// A request that may come from another site.
    #[error("admin API requests must carry the header `X-Chime-Gateway-Admin: 1` and a loopback Host when no admin token is set")]
    CrossSite,
}

/// Checks admin API requests.
#[derive(Debug, Clone)]
pub struct Guard {
    token: Option<[u8; 32]>,
}

impl Guard {
    /// A guard for `token` (`None`: loopback-only, no token).
    pub fn new(token: Option<&Secret>) -> Self {
        Guard {
            token: token.map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        }
    }

    /// Whether a token is required.
    pub fn uses_token(&self) -> bool {
        self.token.is_some()
    }

    /// Admits or refuses a request with `headers`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AdminAuthError> {
        if headers.get(&X_ADMIN).map(|v| v.as_bytes()) != Some(b"1") {
            return Err(AdminAuthError::CrossSite);
        }
        match &self.token {
            Some(expected) => {
                let given = headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim())
                    .ok_or(AdminAuthError::BadToken)?;
                let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
                let diff = given
                    .iter()
                    .zip(expected)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if diff == 0 {
                    Ok(())
                } else {
                    Err(AdminAuthError::BadToken)
                }
            }
            None => {
                let host = headers
                    .get(HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if is_loopback_host(host) {
                    Ok(())
                } else {
                    Err(AdminAuthError::CrossSite)
                }
            }
        }
    }
}

/// `127.0.0.1:9090`, `localhost`, `[::1]:9090`, …
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn token_mode() {
        let g = Guard::new(Some(&Secret::new("s3cret-admin-token-123456")));
        let ok = headers(&[
            ("x-chime-gateway-admin", "1"),
            ("authorization", "Bearer s3cret-admin-token-123456"),
            ("host", "gw.example.com:9090"),
        ]);
        assert_eq!(g.check(&ok), Ok(()));
        for bad in [
            headers(&[
                ("x-chime-gateway-admin", "1"),
                ("authorization", "Bearer s3cret"),
            ]),
            headers(&[
                ("x-chime-gateway-admin", "1"),
                ("authorization", "Basic s3cret-admin-token-123456"),
            ]),
            headers(&[("x-chime-gateway-admin", "1")]),
        ] {
            assert_eq!(g.check(&bad), Err(AdminAuthError::BadToken));
        }
        let no_csrf = headers(&[("authorization", "Bearer s3cret-admin-token-123456")]);
        assert_eq!(g.check(&no_csrf), Err(AdminAuthError::CrossSite));
    }

    #[test]
    fn loopback_mode_refuses_other_hosts() {
        let g = Guard::new(None);
        for host in [
            "127.0.0.1:9090",
            "localhost:9090",
            "[::1]:9090",
            "LOCALHOST",
        ] {
            let h = headers(&[("x-chime-gateway-admin", "1"), ("host", host)]);
            assert_eq!(g.check(&h), Ok(()), "{host}");
        }
        for host in [
            "evil.example:9090",
            "127.0.0.1.evil.example",
            "",
            "10.0.0.1:9090",
        ] {
            let h = headers(&[("x-chime-gateway-admin", "1"), ("host", host)]);
            assert_eq!(g.check(&h), Err(AdminAuthError::CrossSite), "{host}");
        }
        let h = headers(&[("host", "127.0.0.1:9090")]);
        assert_eq!(g.check(&h), Err(AdminAuthError::CrossSite));
    }
}
