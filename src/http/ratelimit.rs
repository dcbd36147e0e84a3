//! Rate limits: token buckets per user, tenant or client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use http::request::Parts;

use crate::auth::Ctx;
use crate::error::{ErrorCode, SyncError};

/// The client's address, as a request extension. Adapters that know the peer
/// address (actix) set it; under tower, insert it yourself (for example from
/// axum's `ConnectInfo`) or enable [`RateLimit::trust_forwarded_for`] behind a
/// proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// What a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateKey {
    /// The authenticated user (within the tenant).
    User,
    /// The tenant.
    Tenant,
    /// The client address ([`ClientAddr`], or `X-Forwarded-For` when trusted).
    ClientAddr,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
///
/// ```
/// use better_sync::RateLimit;
/// let limit = RateLimit::per_user(20.0, 40);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    key: RateKey,
    per_second: f64,
    burst: f64,
    trust_forwarded: bool,
}

impl RateLimit {
    /// A limit counting by `key`.
    pub fn new(key: RateKey, per_second: f64, burst: u32) -> Self {
        Self {
            key,
            per_second: per_second.max(0.001),
            burst: f64::from(burst.max(1)),
            trust_forwarded: false,
        }
    }

    /// Per authenticated user.
    pub fn per_user(per_second: f64, burst: u32) -> Self {
        Self::new(RateKey::User, per_second, burst)
    }

    /// Per tenant.
    pub fn per_tenant(per_second: f64, burst: u32) -> Self {
        Self::new(RateKey::Tenant, per_second, burst)
    }

    /// Per client address.
    pub fn per_address(per_second: f64, burst: u32) -> Self {
        Self::new(RateKey::ClientAddr, per_second, burst)
    }

    /// Take the first address of `X-Forwarded-For` when no [`ClientAddr`] is
    /// set. Only behind a proxy that sets it: clients can forge it.
    #[must_use]
    pub fn trust_forwarded_for(mut self, yes: bool) -> Self {
        self.trust_forwarded = yes;
        self
    }

    /// What this limit counts by.
    pub fn key(&self) -> RateKey {
        self.key
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets above which idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// The live state of one [`RateLimit`].
pub(crate) struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn key(&self) -> RateKey {
        self.limit.key
    }

    /// The bucket key of a request, if this limit applies to it.
    pub(crate) fn subject(&self, parts: &Parts, ctx: Option<&Ctx>) -> Option<String> {
        match self.limit.key {
            RateKey::User => ctx.map(|c| format!("{}\u{0}{}", c.tenant_id, c.user_id)),
            RateKey::Tenant => ctx.map(|c| c.tenant_id.clone()),
            RateKey::ClientAddr => {
                // Behind a trusted proxy the socket peer is the proxy; the
                // client is the last address the proxy appended (entries
                // further left are whatever the client sent).
                let forwarded = || {
                    let value = parts.headers.get("x-forwarded-for")?.to_str().ok()?;
                    let last = value.rsplit(',').next()?.trim();
                    last.parse::<IpAddr>().ok().map(|ip| ip.to_string())
                };
                let peer = || {
                    parts
                        .extensions
                        .get::<ClientAddr>()
                        .map(|a| a.0.to_string())
                };
                if self.limit.trust_forwarded {
                    forwarded().or_else(peer)
                } else {
                    peer()
                }
            }
        }
    }

    /// Take one token for `subject`, or say how long to wait.
    pub(crate) fn check(&self, subject: String) -> Result<(), SyncError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            let full_after = self.limit.burst / self.limit.per_second;
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() < full_after);
        }
        let b = buckets.entry(subject).or_insert(Bucket {
            tokens: self.limit.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.limit.per_second;
        b.tokens = (b.tokens + refill).min(self.limit.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - b.tokens) / self.limit.per_second * 1000.0).ceil() as u64;
        let key = match self.limit.key {
            RateKey::User => "user",
            RateKey::Tenant => "tenant",
            RateKey::ClientAddr => "address",
        };
        metrics::counter!(crate::telemetry::RATE_LIMITED, "key" => key).increment(1);
        Err(SyncError::new(
            ErrorCode::RateLimited,
            format!("too many requests; retry in {wait_ms} ms"),
        )
        .with_retry_after_ms(wait_ms.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses_then_recovers() {
        let l = Limiter::new(RateLimit::per_user(1000.0, 3));
        for _ in 0..3 {
            assert!(l.check("a".into()).is_ok());
        }
        let err = l.check("a".into()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::RateLimited);
        assert!(err.retry_after_ms().is_some_and(|ms| ms >= 1));
        assert!(l.check("b".into()).is_ok(), "buckets are per subject");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(l.check("a".into()).is_ok(), "refilled");
    }
}
