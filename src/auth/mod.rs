//! Authentication and the request context: who is asking, for which tenant.
//!
//! An [`Authenticator`] (such as [`Jwt`]) verifies credentials and yields an
//! [`Identity`]; the `authorize` hook, if set, turns it into the [`Ctx`] every
//! operation runs under (and may reject). Without a hook the context comes
//! straight from the identity's claims. The tenant is never read from a
//! request body or an unverified header.

use async_trait::async_trait;
use http::{HeaderMap, Method, Uri};
use serde_json::Value;

use crate::error::SyncError;

mod jwks;
mod jwt;

pub(crate) use self::jwt::now_secs;
pub use self::jwt::{Jwt, JwtError};

/// The verified context a request runs under.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ctx {
    /// The authenticated user.
    pub user_id: String,
    /// The tenant whose data the request may see and change.
    pub tenant_id: String,
    /// The user's roles, for the `can_read` / `can_write` hooks.
    pub roles: Vec<String>,
}

impl Ctx {
    /// A context with no roles.
    pub fn new(user_id: impl Into<String>, tenant_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            tenant_id: tenant_id.into(),
            roles: Vec::new(),
        }
    }

    /// Whether the context holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// What an [`Authenticator`] established about the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// User id, if the credentials name one.
    pub user_id: Option<String>,
    /// Tenant id, if the credentials name one.
    pub tenant_id: Option<String>,
    /// Roles named by the credentials.
    pub roles: Vec<String>,
    /// All verified claims, for an `authorize` hook that needs more.
    pub claims: Value,
}

/// The parts of a request the auth step sees (never the body).
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// HTTP method.
    pub method: Method,
    /// Full request URI.
    pub uri: Uri,
    /// Request headers.
    pub headers: HeaderMap,
    /// The verified identity, when an authenticator is configured.
    pub identity: Option<Identity>,
}

impl AuthRequest {
    /// The bearer token of the request: the `Authorization: Bearer` header, or
    /// the `access_token` query parameter (browsers cannot set headers on a
    /// WebSocket).
    pub fn bearer_token(&self) -> Option<String> {
        if let Some(h) = self.headers.get(http::header::AUTHORIZATION) {
            let v = h.to_str().ok()?;
            let (scheme, token) = v.split_once(' ')?;
            return scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned());
        }
        form_urlencoded::parse(self.uri.query()?.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    }
}

/// Verifies credentials.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity of the caller, or a `SYNC:UNAUTHORIZED` error.
    async fn authenticate(&self, req: &AuthRequest) -> Result<Identity, SyncError>;

    /// How long past its `exp` a credential is still accepted. A WebSocket
    /// session, which outlives its handshake, ends at `exp` plus this.
    fn leeway(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Turn an identity into a context when no `authorize` hook is set: both a
/// user and a tenant are required.
pub(crate) fn ctx_from_identity(identity: &Identity) -> Result<Ctx, SyncError> {
    let user = identity
        .user_id
        .clone()
        .ok_or_else(|| SyncError::unauthorized("token names no user"))?;
    let tenant = identity
        .tenant_id
        .clone()
        .ok_or_else(|| SyncError::forbidden("token names no tenant"))?;
    Ok(Ctx {
        user_id: user,
        tenant_id: tenant,
        roles: identity.roles.clone(),
    })
}
