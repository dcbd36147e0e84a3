//! Helpers for tests and development servers (the `testing` feature): HS256
//! tokens signed in-process. Not for production: a real deployment verifies
//! tokens its identity provider signed.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::auth::now_secs;

/// Sign an HS256 token for development and tests: `sub` = user, `tenant` =
/// tenant, expiring after `ttl_secs`.
///
/// ```
/// use better_sync::testing::dev_token;
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
