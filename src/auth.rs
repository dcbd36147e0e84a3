//! Authentication and the request context: who is asking, for which tenant.
//!
//! An [`Authenticator`] (such as [`Jwt`]) verifies credentials and yields an
//! [`Identity`]; the `authorize` hook, if set, turns it into the [`Ctx`] every
//! operation runs under (and may reject). Without a hook the context comes
//! straight from the identity's claims. The tenant is never read from a
//! request body or an unverified header.

use async_trait::async_trait;
use http::{HeaderMap, Method, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::error::SyncError;

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
}

/// Which claims carry the user, tenant and roles.
#[derive(Debug, Clone)]
struct ClaimNames {
    user: String,
    tenant: String,
    roles: String,
}

/// JWT bearer-token authentication.
///
/// The accepted algorithm is pinned by the constructor, never read from the
/// token; `exp` is required.
///
/// ```
/// use better_sync::auth::Jwt;
/// let jwt = Jwt::hs256(b"secret").issuer("https://issuer").leeway_secs(30);
/// ```
#[derive(Clone)]
pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
    claims: ClaimNames,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Jwt {
    /// HMAC-SHA256 with a shared secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        Self::hmac(Algorithm::HS256, secret)
    }

    /// HMAC with the given algorithm (`HS256`, `HS384` or `HS512`).
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Self {
        Self::with_key(alg, DecodingKey::from_secret(secret.as_ref()))
    }

    /// Any algorithm with an explicit key.
    pub fn with_key(alg: Algorithm, key: DecodingKey) -> Self {
        let mut validation = Validation::new(alg);
        validation.validate_aud = false;
        validation.leeway = 30;
        Self {
            key,
            validation,
            claims: ClaimNames {
                user: "sub".into(),
                tenant: "tenant".into(),
                roles: "roles".into(),
            },
        }
    }

    /// Require this `iss`.
    #[must_use]
    pub fn issuer(mut self, iss: &str) -> Self {
        self.validation.set_issuer(&[iss]);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Require this `aud`.
    #[must_use]
    pub fn audience(mut self, aud: &str) -> Self {
        self.validation.set_audience(&[aud]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// Clock leeway for `exp` and `nbf` (default 30 s).
    #[must_use]
    pub fn leeway_secs(mut self, secs: u64) -> Self {
        self.validation.leeway = secs;
        self
    }

    /// Claim holding the user id (default `sub`).
    #[must_use]
    pub fn user_claim(mut self, name: &str) -> Self {
        self.claims.user = name.into();
        self
    }

    /// Claim holding the tenant id (default `tenant`).
    #[must_use]
    pub fn tenant_claim(mut self, name: &str) -> Self {
        self.claims.tenant = name.into();
        self
    }

    /// Claim holding the roles, an array of strings (default `roles`).
    #[must_use]
    pub fn roles_claim(mut self, name: &str) -> Self {
        self.claims.roles = name.into();
        self
    }

    fn verify(&self, token: &str) -> Result<Identity, SyncError> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| SyncError::unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let text = |name: &str| match claims.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let roles = match claims.get(&self.claims.roles) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            user_id: text(&self.claims.user),
            tenant_id: text(&self.claims.tenant),
            roles,
            claims,
        })
    }
}

#[async_trait]
impl Authenticator for Jwt {
    async fn authenticate(&self, req: &AuthRequest) -> Result<Identity, SyncError> {
        let token = req
            .bearer_token()
            .ok_or_else(|| SyncError::unauthorized("missing bearer token"))?;
        self.verify(&token)
    }
}

/// Sign an HS256 token for development and tests: `sub` = user, `tenant` =
/// tenant, expiring after `ttl_secs`.
///
/// ```
/// use better_sync::auth::{dev_token, Jwt};
/// let token = dev_token(b"secret", "alice", "acme", 3600);
/// assert_eq!(token.split('.').count(), 3);
/// ```
pub fn dev_token(secret: &[u8], user: &str, tenant: &str, ttl_secs: u64) -> String {
    sign_hs256(
        secret,
        &json!({ "sub": user, "tenant": tenant, "exp": now_secs() + ttl_secs }),
    )
}

/// Sign arbitrary claims with HS256.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], uri: &str) -> AuthRequest {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        AuthRequest {
            method: Method::GET,
            uri: uri.parse().unwrap(),
            headers: h,
            identity: None,
        }
    }

    #[tokio::test]
    async fn hs256_roundtrip_and_rejections() {
        let jwt = Jwt::hs256(b"s3cret");
        let token = dev_token(b"s3cret", "alice", "acme", 60);
        let id = jwt
            .authenticate(&req(&[("authorization", &format!("Bearer {token}"))], "/"))
            .await
            .unwrap();
        assert_eq!(id.user_id.as_deref(), Some("alice"));
        assert_eq!(id.tenant_id.as_deref(), Some("acme"));
        let q = jwt
            .authenticate(&req(&[], &format!("/ws?access_token={token}")))
            .await
            .unwrap();
        assert_eq!(q, id);

        let wrong = dev_token(b"other", "alice", "acme", 60);
        let expired = sign_hs256(
            b"s3cret",
            &json!({"sub": "a", "tenant": "t", "exp": now_secs() - 3600}),
        );
        for bad in [
            req(&[], "/"),
            req(&[("authorization", "Basic abc")], "/"),
            req(&[("authorization", "Bearer not.a.jwt")], "/"),
            req(&[("authorization", &format!("Bearer {wrong}"))], "/"),
            req(&[("authorization", &format!("Bearer {expired}"))], "/"),
        ] {
            let err = jwt.authenticate(&bad).await.unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::Unauthorized);
        }
    }

    #[tokio::test]
    async fn issuer_and_audience_are_required_when_configured() {
        let jwt = Jwt::hs256(b"k").issuer("https://iss").audience("sync");
        let exp = now_secs() + 60;
        let with = |claims: Value| {
            let t = sign_hs256(b"k", &claims);
            req(&[("authorization", &format!("Bearer {t}"))], "/")
        };
        let good = with(
            json!({"sub": "u", "tenant": "t", "exp": exp, "iss": "https://iss", "aud": "sync"}),
        );
        assert!(jwt.authenticate(&good).await.is_ok());
        for bad in [
            json!({"sub": "u", "tenant": "t", "exp": exp, "aud": "sync"}),
            json!({"sub": "u", "tenant": "t", "exp": exp, "iss": "https://other", "aud": "sync"}),
            json!({"sub": "u", "tenant": "t", "exp": exp, "iss": "https://iss"}),
            json!({"sub": "u", "tenant": "t", "exp": exp, "iss": "https://iss", "aud": "other"}),
        ] {
            let err = jwt.authenticate(&with(bad.clone())).await.unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::Unauthorized, "{bad}");
        }
    }
}
