//! A JWKS document fetched over HTTP and cached by key id.

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::SyncError;

struct State {
    keys: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Keys by `kid`, refetched on a TTL and on unknown ids, never more often
/// than `min_refetch` (so a flood of tokens with random `kid`s cannot turn
/// the server into a fetch amplifier).
pub(crate) struct JwksCache {
    url: String,
    client: reqwest::Client,
    timing: StdMutex<(Duration, Duration)>,
    state: tokio::sync::Mutex<State>,
}

impl JwksCache {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            timing: StdMutex::new((Duration::from_secs(600), Duration::from_secs(30))),
            state: tokio::sync::Mutex::new(State {
                keys: HashMap::new(),
                fetched_at: None,
                last_attempt: None,
            }),
        }
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.timing.lock().unwrap_or_else(|e| e.into_inner()).0 = ttl;
    }

    pub(crate) fn set_min_refetch(&self, every: Duration) {
        self.timing.lock().unwrap_or_else(|e| e.into_inner()).1 = every;
    }

    /// The key for `kid`, usable with one of `allowed`.
    pub(crate) async fn key(
        &self,
        kid: &str,
        allowed: &[Algorithm],
    ) -> Result<DecodingKey, SyncError> {
        let (ttl, min_refetch) = *self.timing.lock().unwrap_or_else(|e| e.into_inner());
        // Held across the fetch: concurrent verifications share one fetch.
        let mut st = self.state.lock().await;
        let stale = st.fetched_at.is_none_or(|t| t.elapsed() >= ttl);
        let unknown = !st.keys.contains_key(kid);
        let may_fetch = st.last_attempt.is_none_or(|t| t.elapsed() >= min_refetch);
        if (stale || unknown) && may_fetch {
            st.last_attempt = Some(Instant::now());
            match self.fetch(allowed).await {
                Ok(keys) => {
                    st.keys = keys;
                    st.fetched_at = Some(Instant::now());
                }
                // Keep serving the keys we have; the next attempt is rate-limited.
                Err(e) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed"),
            }
        }
        match st.keys.get(kid) {
            Some((key, alg)) => {
                if alg.is_some_and(|a| !allowed.contains(&a)) {
                    return Err(SyncError::unauthorized(
                        "invalid token: the key's algorithm is not accepted",
                    ));
                }
                Ok(key.clone())
            }
            None => Err(SyncError::unauthorized(format!(
                "invalid token: unknown key id {:?}",
                kid.chars().take(64).collect::<String>()
            ))),
        }
    }

    async fn fetch(
        &self,
        allowed: &[Algorithm],
    ) -> Result<HashMap<String, (DecodingKey, Option<Algorithm>)>, String> {
        let res = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let set: JwkSet = res.json().await.map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            // Only signing keys.
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            if alg.is_some_and(|a| !allowed.contains(&a)) {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, (key, alg));
                }
                Err(e) => tracing::warn!(kid = %kid, error = %e, "unusable JWK skipped"),
            }
        }
        Ok(keys)
    }
}
