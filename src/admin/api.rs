//! The admin API (`/api/…` on the admin listener): users and keys, and
//! `explain`. JSON in and out; refusals use the gateway's error shape.
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET /api/session` | how the API is protected, the store, the tiers |
//! | `GET /api/users` | every user with their keys (fingerprints, never keys) |
//! | `POST /api/users` | add a user `{name, role, queues, tier}` |
//! | `PATCH /api/users/{name}` | change `{role?, queues?, tier?}` |
//! | `POST /api/users/{name}/keys` | generate `{rotate?, grace?, expires_in?}`; the key is in this answer only |
//! | `DELETE /api/users/{name}/keys` | revoke every active key of the user |
//! | `DELETE /api/keys/{fingerprint}` | revoke one key |
//! | `POST /api/explain` | `{user or fingerprint, target}`: the decision trace, nothing forwarded |
//!
//! Key files are reloaded as soon as an edit is written, so a new key works
//! (and a revoked one stops) at once on this instance; other instances see
//! the file change within `keys.watch_interval`, PostgreSQL edits at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use jiff::Timestamp;
use serde::Deserialize;

use super::guard::Guard;
use crate::acl;
use crate::auth::{Authenticated, Fingerprint, KeyHash, Principal, Role};
use crate::body::Response;
use crate::error;
use crate::gate::{Gate, Passed};
use crate::keystore::editor::{key_status, KeyEditor, ReadOnlyStore};
use crate::keystore::file::edit::EditError;
use crate::keystore::file::KeyFile;
use crate::request::{GatewayRequest, Parse};
use crate::route::{Route, RouteMatch};
use crate::state::AppState;
use crate::BoxError;

/// Largest request body the API reads.
const BODY_LIMIT: usize = 64 * 1024;

/// An admin request that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// No such user or key.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The path exists but not for this method.
    #[error("this admin API path does not take that method")]
    MethodNotAllowed,
    /// Reading or writing the store failed.
    #[error("the key store could not be read or written; see the gateway's log")]
    Store,
}

impl From<EditError> for AdminError {
    fn from(e: EditError) -> Self {
        let message = e.to_string().replace("pass --rotate", "rotate");
        match e {
            EditError::NoSuchUser(_) | EditError::NothingToRevoke(_) => {
                AdminError::NotFound(message)
            }
            EditError::UserExists(_)
            | EditError::ActiveKeyExists { .. }
            | EditError::DuplicateKey(_) => AdminError::Conflict(message),
            EditError::Invalid(_) => AdminError::BadRequest(message),
        }
    }
}

/// Maps an edit's failure: lifecycle refusals keep their meaning, anything
/// else is a store failure (logged, never echoed).
fn edit_failed(e: BoxError) -> BoxError {
    match e.downcast::<EditError>() {
        Ok(edit) => AdminError::from(*edit).into(),
        Err(e) if e.is::<AdminError>() || e.is::<ReadOnlyStore>() => e,
        Err(e) => {
            tracing::error!(error = %e, "admin API: key store edit failed");
            AdminError::Store.into()
        }
    }
}

/// The API over a gateway's state.
#[derive(Debug)]
pub struct AdminApi {
    state: Arc<AppState>,
    editor: KeyEditor,
    guard: Guard,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: Role,
    #[serde(default)]
    queues: Vec<u32>,
    #[serde(default = "default_tier")]
    tier: String,
}

fn default_tier() -> String {
    "default".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    role: Option<Role>,
    queues: Option<Vec<u32>>,
    tier: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GenerateKey {
    rotate: bool,
    grace: Option<String>,
    expires_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Explain {
    user: Option<String>,
    fingerprint: Option<String>,
    target: String,
}

fn duration(field: &str, value: Option<&str>) -> Result<Option<Duration>, AdminError> {
    value
        .map(|v| {
            humantime::parse_duration(v).map_err(|e| {
                AdminError::BadRequest(format!("{field}: `{v}` is not a duration ({e})"))
            })
        })
        .transpose()
}

/// A path segment, percent-decoded (user names may hold `@`).
fn segment(s: &str) -> Result<String, AdminError> {
    crate::percent::decode(s)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| AdminError::BadRequest(format!("`{s}` is not a valid path segment: {e}")))
}

impl AdminApi {
    /// The API over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        let editor = KeyEditor::for_source(&state.config.keys.source);
        let guard = Guard::new(state.config.admin.token.as_ref());
        AdminApi {
            state,
            editor,
            guard,
        }
    }

    /// Answers one `/api/…` request (already known to start with `/api/`).
    pub async fn handle<B>(&self, req: Request<B>) -> Result<Response, BoxError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        self.guard.check(req.headers())?;
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().trim_start_matches("/api/");
        let segs: Vec<&str> = path.split('/').collect();
        let method = &parts.method;
        match (segs.as_slice(), method) {
            (["session"], &Method::GET) => Ok(self.session()),
            (["users"], &Method::GET) => self.list().await,
            (["users"], &Method::POST) => self.add_user(read_json(body).await?).await,
            ([_], _) if segs[0] == "users" || segs[0] == "session" => Err(not_allowed()),
            (["users", name], &Method::PATCH) => {
                self.set_user(&segment(name)?, read_json(body).await?).await
            }
            (["users", name, "keys"], &Method::POST) => {
                let request = if parts
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .is_some_and(|v| v == "0")
                {
                    GenerateKey::default()
                } else {
                    read_json(body).await?
                };
                self.generate(&segment(name)?, request).await
            }
            (["users", name, "keys"], &Method::DELETE) => self.revoke(&segment(name)?).await,
            (["keys", fp], &Method::DELETE) => self.revoke(&segment(fp)?).await,
            (["explain"], &Method::POST) => self.explain(read_json(body).await?).await,
            (["users", _] | ["users", _, "keys"] | ["keys", _] | ["explain"], _) => {
                Err(not_allowed())
            }
            _ => Err(crate::route::RouteError::NotFound.into()),
        }
    }

    fn session(&self) -> Response {
        let tiers: Vec<&str> = self
            .state
            .config
            .ratelimit
            .tiers
            .iter()
            .map(|t| &*t.name)
            .collect();
        super::json(
            StatusCode::OK,
            &serde_json::json!({
                "auth": if self.guard.uses_token() { "token" } else { "loopback" },
                "store": self.editor.kind(),
                "editable": self.editor.is_editable(),
                "tiers": tiers,
                "roles": ["admin", "manager"],
            }),
        )
    }

    async fn read_store(&self) -> Result<KeyFile, BoxError> {
        self.editor.read().await.map_err(edit_failed)
    }

    async fn edit<R>(
        &self,
        op: impl FnOnce(&mut KeyFile) -> Result<R, BoxError>,
    ) -> Result<R, BoxError> {
        let out = self.editor.edit(op).await.map_err(edit_failed)?;
        // A key file is re-read now rather than at the next watch tick.
        self.state.reload_keys(true);
        Ok(out)
    }

    async fn list(&self) -> Result<Response, BoxError> {
        let file = self.read_store().await?;
        let now = Timestamp::now();
        let mut last_used: HashMap<String, String> = self
            .editor
            .recorded_last_use()
            .await
            .map_err(edit_failed)?
            .unwrap_or_default();
        for (fp, at) in self.state.keys.last_used() {
            last_used.insert(fp.as_str().to_owned(), at.to_string());
        }
        let users: Vec<_> = file
            .users
            .iter()
            .map(|u| {
                let keys: Vec<_> = file
                    .keys
                    .iter()
                    .filter(|k| k.user == u.name)
                    .map(|k| {
                        let fp = k.fingerprint().map(|f| f.as_str().to_owned());
                        serde_json::json!({
                            "fingerprint": fp,
                            "created": k.created_at.to_string(),
                            "expires": k.expires_at.map(|t| t.to_string()),
                            "status": key_status(k, now),
                            "last_used": fp.and_then(|f| last_used.get(&f).cloned()),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": u.name,
                    "role": u.role.as_str(),
                    "queues": u.queues,
                    "tier": u.tier,
                    "keys": keys,
                })
            })
            .collect();
        Ok(super::json(
            StatusCode::OK,
            &serde_json::json!({ "users": users }),
        ))
    }

    fn known_tier(&self, tier: &str) -> Result<(), AdminError> {
        if self
            .state
            .config
            .ratelimit
            .tiers
            .iter()
            .any(|t| &*t.name == tier)
        {
            Ok(())
        } else {
            Err(AdminError::BadRequest(format!(
                "tier `{tier}` is not configured ([ratelimit.tier.*])"
            )))
        }
    }

    async fn add_user(&self, u: NewUser) -> Result<Response, BoxError> {
        self.known_tier(&u.tier)?;
        let name = u.name.clone();
        self.edit(move |f| Ok(f.add_user(&u.name, u.role, u.queues, &u.tier)?))
            .await?;
        Ok(super::json(
            StatusCode::CREATED,
            &serde_json::json!({ "name": name }),
        ))
    }

    async fn set_user(&self, name: &str, c: UserChange) -> Result<Response, BoxError> {
        if let Some(tier) = &c.tier {
            self.known_tier(tier)?;
        }
        self.edit(|f| Ok(f.set_user(name, c.role, c.queues, c.tier.as_deref())?))
            .await?;
        Ok(super::json(
            StatusCode::OK,
            &serde_json::json!({ "name": name }),
        ))
    }

    async fn generate(&self, user: &str, g: GenerateKey) -> Result<Response, BoxError> {
        let grace = duration("grace", g.grace.as_deref())?;
        if grace.is_some() && !g.rotate {
            return Err(AdminError::BadRequest("grace applies only with rotate".into()).into());
        }
        let expires_in = duration("expires_in", g.expires_in.as_deref())?;
        let now = Timestamp::from_second(Timestamp::now().as_second())?;
        let expires_at = expires_in
            .map(|d| jiff::SignedDuration::try_from(d).and_then(|d| now.checked_add(d)))
            .transpose()
            .map_err(|e| AdminError::BadRequest(format!("expires_in: {e}")))?;
        let rotate = g.rotate.then(|| grace.unwrap_or(Duration::ZERO));
        let generated = self
            .edit(|f| Ok(f.generate(user, now, rotate, expires_at)?))
            .await?;
        let retired: Vec<_> = generated
            .retired
            .iter()
            .map(|(fp, until)| serde_json::json!({"fingerprint": fp.as_str(), "until": until.to_string()}))
            .collect();
        Ok(super::json(
            StatusCode::CREATED,
            &serde_json::json!({
                "user": user,
                "key": generated.key.expose(),
                "fingerprint": generated.key.hash().fingerprint().as_str(),
                "retired": retired,
            }),
        ))
    }

    async fn revoke(&self, who: &str) -> Result<Response, BoxError> {
        let now = Timestamp::now();
        let revoked = self.edit(|f| Ok(f.revoke(who, now)?)).await?;
        let list: Vec<&str> = revoked.iter().map(Fingerprint::as_str).collect();
        Ok(super::json(
            StatusCode::OK,
            &serde_json::json!({ "revoked": list }),
        ))
    }

    /// The principal `user` or the key `fingerprint` stands for.
    fn principal(file: &KeyFile, e: &Explain) -> Result<Principal, AdminError> {
        let (name, fingerprint) = match (&e.user, &e.fingerprint) {
            (Some(user), None) => {
                let fp = file
                    .keys
                    .iter()
                    .filter(|k| &k.user == user)
                    .filter_map(|k| k.fingerprint())
                    .next_back();
                (user.clone(), fp)
            }
            (None, Some(fp)) => {
                let key = file
                    .keys
                    .iter()
                    .find(|k| k.fingerprint().is_some_and(|f| f.as_str() == fp))
                    .ok_or_else(|| {
                        AdminError::NotFound(format!("no key with fingerprint `{fp}`"))
                    })?;
                (key.user.clone(), key.fingerprint())
            }
            _ => {
                return Err(AdminError::BadRequest(
                    "give exactly one of `user` and `fingerprint`".into(),
                ))
            }
        };
        let u = file
            .users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| AdminError::NotFound(format!("no user named `{name}`")))?;
        // A user without keys is explained under a fingerprint of no real key.
        let fingerprint = fingerprint
            .or_else(|| KeyHash::from_bytes(&[0; 32]).map(|h| h.fingerprint()))
            .ok_or(AdminError::Store)?;
        Ok(Principal {
            user: u.name.as_str().into(),
            role: u.role,
            queues: Arc::new(u.queues.iter().copied().collect::<BTreeSet<u32>>()),
            tier: u.tier.as_str().into(),
            fingerprint,
        })
    }

    async fn explain(&self, e: Explain) -> Result<Response, BoxError> {
        let file = self.read_store().await?;
        let principal = Self::principal(&file, &e)?;
        let uri: Uri = e.target.parse().map_err(|_| {
            AdminError::BadRequest(format!("`{}` is not a request target", e.target))
        })?;
        if uri.scheme().is_some() || !e.target.starts_with('/') {
            return Err(AdminError::BadRequest(
                "target is a path and query, e.g. /Chime/Report/InboundVsAnsweredChats?queueId=1"
                    .into(),
            )
            .into());
        }
        let mut req = Request::get(uri).body(())?;
        req.extensions_mut().insert(Authenticated {
            principal: principal.clone(),
            key: None,
        });
        let mut steps = Vec::new();
        let refused = |step: &str, steps: &mut Vec<serde_json::Value>, err: BoxError| {
            let c = error::classify(&*err);
            steps.push(serde_json::json!({"step": step, "ok": false, "code": c.code, "message": c.message}));
            (c.status, c.code, c.message)
        };
        let outcome = 'decide: {
            if let Err(err) = Route.pass(&mut req) {
                break 'decide Err(refused("route", &mut steps, err));
            }
            let kind = req
                .extensions()
                .get::<RouteMatch>()
                .map(|m| m.kind().as_str());
            steps.push(serde_json::json!({"step": "route", "ok": true, "route": kind}));
            if matches!(
                req.extensions().get::<RouteMatch>(),
                Some(RouteMatch::Listing)
            ) {
                steps.push(serde_json::json!({"step": "listing", "ok": true,
                    "message": "answered by the gateway: the reports this key may call"}));
                break 'decide Ok(None);
            }
            let parse = Parse::new(
                Arc::clone(&self.state.catalog),
                Arc::clone(&self.state.request_options),
                Arc::clone(&self.state.clock),
            );
            if let Err(err) = parse.pass(&mut req).map(|p| matches!(p, Passed::Next)) {
                break 'decide Err(refused("parse", &mut steps, err));
            }
            let Some(typed) = req.extensions().get::<GatewayRequest>().cloned() else {
                break 'decide Err(refused("parse", &mut steps, "no typed request".into()));
            };
            let canonical = typed.upstream_path_and_query(self.state.config.upstream.path_prefix());
            steps.push(serde_json::json!({
                "step": "parse", "ok": true, "upstream_request": canonical,
                "start": typed.params.start.map(|t| t.to_string()),
                "stop": typed.params.stop.map(|t| t.to_string()),
                "ignored": typed.ignored,
            }));
            match acl::decide(&principal, &typed) {
                Ok(check) => steps.push(serde_json::json!({
                    "step": "acl", "ok": true,
                    "message": if check.is_some() {
                        "allowed; Chime's answer is checked for the session's queue before it is passed on"
                    } else {
                        "allowed"
                    },
                })),
                Err(denied) => break 'decide Err(refused("acl", &mut steps, denied.into())),
            }
            steps.push(serde_json::json!({
                "step": "rate_limit", "ok": true,
                "limits": self.state.ratelimiter.describe(&principal, &typed),
            }));
            let cache = self
                .state
                .config
                .cache
                .ttl_for(&typed, self.state.clock.now());
            steps.push(serde_json::json!({
                "step": "cache", "ok": true,
                "cacheable_for_seconds": cache.map(|d| d.as_secs()),
            }));
            Ok(Some(canonical))
        };
        let doc = match outcome {
            Ok(upstream) => serde_json::json!({
                "decision": "allow", "user": &*principal.user, "fingerprint": principal.fingerprint.as_str(),
                "upstream_request": upstream, "forwarded": false, "steps": steps,
            }),
            Err((status, code, message)) => serde_json::json!({
                "decision": "deny", "user": &*principal.user, "fingerprint": principal.fingerprint.as_str(),
                "status": status.as_u16(), "code": code, "message": message,
                "forwarded": false, "steps": steps,
            }),
        };
        Ok(super::json(StatusCode::OK, &doc))
    }
}

fn not_allowed() -> BoxError {
    AdminError::MethodNotAllowed.into()
}

async fn read_json<T, B>(body: B) -> Result<T, BoxError>
where
    T: serde::de::DeserializeOwned,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let bytes = Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .map_err(|_| {
            AdminError::BadRequest(format!(
                "the body must be JSON of at most {BODY_LIMIT} bytes"
            ))
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| AdminError::BadRequest(format!("invalid JSON body: {e}")).into())
}
