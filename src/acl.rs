//! Authorize: the queue ACL, decided on the typed request only.
//!
//! Admins may call everything. Managers may call per-queue reports and the
//! queue discovery routes only for a `queueId` they manage (403
//! `queue_forbidden`), never tenant-wide reports or
//! `GetAvailableGlobalReports` (403 `admin_only`), and SessionDetails only
//! when the session belongs to one of their queues: that is known only from
//! Chime's answer, so this layer marks the request with a
//! [`SessionQueueCheck`] and the proxy verifies the answer's `QueueId`
//! before releasing any byte of it (403 `session_forbidden` otherwise).

use std::collections::BTreeSet;
use std::sync::Arc;

use http::Request;

use crate::auth::{Authenticated, Principal, Role};
use crate::catalog::Category;
use crate::gate::{Gate, Passed};
use crate::metrics::Metrics;
use crate::request::{GatewayRequest, Target};
use crate::BoxError;

/// Why the ACL refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// A manager asked for a queue they do not manage.
    #[error("you do not have access to queue {queue}")]
    QueueForbidden {
        /// The queue asked for.
        queue: u32,
    },
    /// A manager asked for tenant-wide data.
    #[error("this route is tenant-wide and only admins may call it")]
    AdminOnly,
    /// The session belongs to a queue the manager does not manage.
    #[error("this session belongs to a queue you do not have access to")]
    SessionForbidden,
}

/// Set on a manager's SessionDetails request: the answer's `QueueId` must be one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionQueueCheck(pub Arc<BTreeSet<u32>>);

/// The ACL verdict for `principal` on `request`.
pub fn decide(
    principal: &Principal,
    request: &GatewayRequest,
) -> Result<Option<SessionQueueCheck>, Denied> {
    if principal.role == Role::Admin {
        return Ok(None);
    }
    let per_queue = match &request.target {
        Target::Report(r) => r.category.is_per_queue(),
        Target::Discovery(c) => *c != Category::Global,
        Target::SessionDetails(_) => {
            return Ok(Some(SessionQueueCheck(Arc::clone(&principal.queues))));
        }
    };
    if !per_queue {
        return Err(Denied::AdminOnly);
    }
    // The parser guarantees queueId on per-queue routes; its absence is refused all the same.
    let queue = request.params.queue_id.unwrap_or(0);
    if principal.may_see_queue(queue) {
        Ok(None)
    } else {
        Err(Denied::QueueForbidden { queue })
    }
}

/// The ACL gate (see the module docs); counts refusals by reason.
#[derive(Debug, Clone)]
pub struct Acl {
    metrics: Arc<Metrics>,
}

impl Acl {
    /// An ACL gate counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Acl { metrics }
    }
}

impl Denied {
    /// The refusal code (also the metric's `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::QueueForbidden { .. } => "queue_forbidden",
            Denied::AdminOnly => "admin_only",
            Denied::SessionForbidden => "session_forbidden",
        }
    }
}

impl Gate for Acl {
    fn pass(&self, req: &mut Request<()>) -> Result<Passed, BoxError> {
        let typed = req.extensions().get::<GatewayRequest>();
        let check = match (Authenticated::principal(req), typed) {
            (Some(p), Some(r)) => decide(p, r).inspect_err(|d| {
                self.metrics
                    .acl_denials
                    .with_label_values(&[d.reason()])
                    .inc();
            })?,
            // Fail closed if the stack was assembled without auth or parse.
            _ => return Err("acl reached without principal or typed request".into()),
        };
        if let Some(check) = check {
            req.extensions_mut().insert(check);
        }
        Ok(Passed::Next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{builtin, Catalog};

    fn principal(role: Role, queues: &[u32]) -> Principal {
        Principal {
            user: "u".into(),
            role,
            queues: Arc::new(queues.iter().copied().collect()),
            tier: "default".into(),
            fingerprint: crate::auth::ApiKey::generate().hash().fingerprint(),
        }
    }

    fn req(path: &str, query: &str) -> GatewayRequest {
        let route = crate::route::match_path(path).unwrap();
        let options = crate::request::RequestOptions::default();
        let ctx = crate::request::ParseContext {
            now: crate::request::Now::at("2020-01-02T00:00:00Z".parse().unwrap()),
            accept_csv: false,
            options: &options,
        };
        crate::request::parse_with(&route, Some(query), &Catalog::new(&builtin()), &ctx).unwrap()
    }

    #[test]
    fn manager_sees_only_their_queues() {
        let m = principal(Role::Manager, &[1, 3]);
        let ok = req(
            "/Chime/Report/InboundVsAnsweredChats",
            "queueId=3&start=2020-01-01T00:00:00Z",
        );
        assert!(decide(&m, &ok).unwrap().is_none());
        let no = req(
            "/Chime/Report/InboundVsAnsweredChats",
            "queueId=2&start=2020-01-01T00:00:00Z",
        );
        assert!(matches!(
            decide(&m, &no),
            Err(Denied::QueueForbidden { queue: 2 })
        ));
        assert!(decide(&m, &req("/Chime/Report/GetQueueBotReports", "queueId=1")).is_ok());
        assert!(decide(&m, &req("/Chime/Report/GetQueueBotReports", "queueId=2")).is_err());
    }

    #[test]
    fn tenant_wide_routes_are_admin_only() {
        let m = principal(Role::Manager, &[1]);
        let global = req(
            "/Chime/Report/GlobalChatVolume",
            "start=2020-01-01T00:00:00Z",
        );
        assert!(matches!(decide(&m, &global), Err(Denied::AdminOnly)));
        let disc = req("/Chime/Report/GetAvailableGlobalReports", "");
        assert!(matches!(decide(&m, &disc), Err(Denied::AdminOnly)));
        let a = principal(Role::Admin, &[]);
        assert!(decide(&a, &global).unwrap().is_none());
        assert!(decide(&a, &disc).unwrap().is_none());
        let q = req(
            "/Chime/Report/InboundVsAnsweredChats",
            "queueId=77&start=2020-01-01T00:00:00Z",
        );
        assert!(decide(&a, &q).unwrap().is_none());
    }

    #[test]
    fn manager_session_details_are_checked_on_the_answer() {
        let m = principal(Role::Manager, &[1, 3]);
        let check = decide(&m, &req("/Chime/Session/SessionDetails/5", ""))
            .unwrap()
            .unwrap();
        assert_eq!(*check.0, BTreeSet::from([1, 3]));
        let a = principal(Role::Admin, &[]);
        assert!(decide(&a, &req("/Chime/Session/SessionDetails/5", ""))
            .unwrap()
            .is_none());
    }
}
