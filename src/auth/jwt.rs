//! [`Jwt`]: bearer-token authentication with pinned algorithms.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::JwksCache;
use super::{AuthRequest, Authenticator, Identity};
use crate::error::SyncError;

/// A key or algorithm that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The key does not parse, or does not fit the algorithm.
    #[error("invalid {what} key: {source}")]
    Key {
        /// Which kind of key was expected.
        what: &'static str,
        /// The parser's complaint.
        source: jsonwebtoken::errors::Error,
    },
    /// The algorithm does not belong to this kind of key.
    #[error("algorithm {0:?} does not fit this kind of key")]
    Algorithm(Algorithm),
}

/// Which claims carry the user, tenant and roles.
#[derive(Debug, Clone)]
struct ClaimNames {
    user: String,
    tenant: String,
    roles: String,
}

#[derive(Clone)]
enum Keys {
    Static(DecodingKey),
    Jwks(Arc<JwksCache>),
}

/// JWT bearer-token authentication: HMAC, RSA (PKCS#1 and PSS), EC (P-256,
/// P-384) and EdDSA keys, or a JWKS URL.
///
/// The accepted algorithms are pinned by configuration, never taken from the
/// token: a token whose header names another algorithm is refused, which
/// defeats `alg: none` and algorithm-confusion attacks. `exp` is required and
/// `nbf` checked, both with a leeway (default 30 s).
///
/// ```
/// use better_sync::auth::Jwt;
/// let jwt = Jwt::hs256(b"secret").issuer("https://issuer").audience("sync").leeway(std::time::Duration::from_secs(10));
/// ```
///
/// ```no_run
/// use better_sync::auth::Jwt;
/// use jsonwebtoken::Algorithm;
/// let jwt = Jwt::jwks("https://issuer.example/.well-known/jwks.json")
///     .algorithms(&[Algorithm::RS256, Algorithm::ES256]);
/// ```
#[derive(Clone)]
pub struct Jwt {
    keys: Keys,
    validation: Validation,
    claims: ClaimNames,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithms", &self.validation.algorithms)
            .field("jwks", &matches!(self.keys, Keys::Jwks(_)))
            .finish_non_exhaustive()
    }
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC_ALGS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];
const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

impl Jwt {
    /// HMAC-SHA256 with a shared secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        warn_if_short(secret.as_ref());
        Self::with_key(Algorithm::HS256, DecodingKey::from_secret(secret.as_ref()))
    }

    /// HMAC with `alg` (`HS256`, `HS384` or `HS512`).
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, JwtError> {
        if !HMAC_ALGS.contains(&alg) {
            return Err(JwtError::Algorithm(alg));
        }
        warn_if_short(secret.as_ref());
        Ok(Self::with_key(
            alg,
            DecodingKey::from_secret(secret.as_ref()),
        ))
    }

    /// RSA public key in PEM, with `alg` one of `RS256/384/512`, `PS256/384/512`.
    pub fn rsa_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, JwtError> {
        if !RSA_ALGS.contains(&alg) {
            return Err(JwtError::Algorithm(alg));
        }
        let key = DecodingKey::from_rsa_pem(pem).map_err(|source| JwtError::Key {
            what: "RSA",
            source,
        })?;
        Ok(Self::with_key(alg, key))
    }

    /// EC public key in PEM, with `alg` `ES256` (P-256) or `ES384` (P-384).
    pub fn ec_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, JwtError> {
        if !EC_ALGS.contains(&alg) {
            return Err(JwtError::Algorithm(alg));
        }
        let key =
            DecodingKey::from_ec_pem(pem).map_err(|source| JwtError::Key { what: "EC", source })?;
        Ok(Self::with_key(alg, key))
    }

    /// Ed25519 public key in PEM (`EdDSA`).
    pub fn ed_pem(pem: &[u8]) -> Result<Self, JwtError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|source| JwtError::Key {
            what: "Ed25519",
            source,
        })?;
        Ok(Self::with_key(Algorithm::EdDSA, key))
    }

    /// Any algorithm with an explicit key.
    pub fn with_key(alg: Algorithm, key: DecodingKey) -> Self {
        Self::new(Keys::Static(key), alg)
    }

    /// Keys from a JWKS document, cached by `kid`: refetched when a token
    /// names an unknown `kid` (at most once per 30 s by default) and when the
    /// cache is older than its TTL (10 min by default). Accepts `RS256`
    /// unless [`Self::algorithms`] says otherwise.
    pub fn jwks(url: impl Into<String>) -> Self {
        Self::new(
            Keys::Jwks(Arc::new(JwksCache::new(url.into()))),
            Algorithm::RS256,
        )
    }

    fn new(keys: Keys, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self {
            keys,
            validation,
            claims: ClaimNames {
                user: "sub".into(),
                tenant: "tenant".into(),
                roles: "roles".into(),
            },
        }
    }

    /// Pin the accepted algorithms (for JWKS, or several algorithms of one
    /// key family). Tokens naming any other algorithm are refused.
    #[must_use]
    pub fn algorithms(mut self, algs: &[Algorithm]) -> Self {
        self.validation.algorithms = algs.to_vec();
        self
    }

    /// How long fetched JWKS keys are trusted before a refetch (default 10 min).
    #[must_use]
    pub fn jwks_ttl(self, ttl: Duration) -> Self {
        if let Keys::Jwks(c) = &self.keys {
            c.set_ttl(ttl);
        }
        self
    }

    /// Least time between two JWKS fetches, whatever tokens arrive (default 30 s).
    #[must_use]
    pub fn jwks_min_refetch(self, every: Duration) -> Self {
        if let Keys::Jwks(c) = &self.keys {
            c.set_min_refetch(every);
        }
        self
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

    /// Clock leeway for `exp` and `nbf` (default 30 s; whole seconds, as
    /// JWT times are: a fraction is dropped).
    #[must_use]
    pub fn leeway(mut self, leeway: std::time::Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
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

    /// Claim holding the roles: an array of strings or a space-separated
    /// string (default `roles`).
    #[must_use]
    pub fn roles_claim(mut self, name: &str) -> Self {
        self.claims.roles = name.into();
        self
    }

    async fn verify(&self, token: &str) -> Result<Identity, SyncError> {
        let bad =
            |e: jsonwebtoken::errors::Error| SyncError::unauthorized(format!("invalid token: {e}"));
        let header = jsonwebtoken::decode_header(token).map_err(bad)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(SyncError::unauthorized(format!(
                "invalid token: algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let data = match &self.keys {
            Keys::Static(key) => jsonwebtoken::decode::<Value>(token, key, &self.validation),
            Keys::Jwks(cache) => {
                let kid = header.kid.ok_or_else(|| {
                    SyncError::unauthorized("invalid token: no kid in the header")
                })?;
                let key = cache.key(&kid, &self.validation.algorithms).await?;
                // The header's algorithm is already checked against the pinned
                // set; verify with exactly it (the set may mix key families).
                let mut validation = self.validation.clone();
                validation.algorithms = vec![header.alg];
                jsonwebtoken::decode::<Value>(token, &key, &validation)
            }
        }
        .map_err(bad)?;
        Ok(self.identity(data.claims))
    }

    fn identity(&self, claims: Value) -> Identity {
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
        Identity {
            user_id: text(&self.claims.user),
            tenant_id: text(&self.claims.tenant),
            roles,
            claims,
        }
    }
}

#[async_trait]
impl Authenticator for Jwt {
    fn leeway(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.validation.leeway)
    }

    async fn authenticate(&self, req: &AuthRequest) -> Result<Identity, SyncError> {
        let token = req
            .bearer_token()
            .ok_or_else(|| SyncError::unauthorized("missing bearer token"))?;
        self.verify(&token).await
    }
}

/// An HMAC secret shorter than the hash is guessable offline from any token.
fn warn_if_short(secret: &[u8]) {
    if secret.len() < 32 {
        tracing::warn!(
            bytes = secret.len(),
            "HMAC JWT secret shorter than 32 bytes: use a long random secret in production"
        );
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
