//! WebSocket tickets: a browser cannot set headers on a WebSocket, so
//! instead of putting its token in the URL (where logs and console errors
//! show it) it asks `POST B/ws/ticket` for a ticket and opens
//! `B/ws?ticket=...` within 30 seconds.
//!
//! A ticket carries its context (user, tenant, roles) and the end of the
//! credentials it was issued against, signed with the deployment's cursor
//! key (HMAC-SHA256), so every instance of the deployment accepts it (a
//! load balancer need not send the socket where the ticket came from).
//! Each instance accepts a ticket once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::Ctx;
use crate::error::SyncError;

/// How long a ticket is good for.
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most used tickets remembered at once (they are forgotten once stale).
const MAX_USED: usize = 100_000;

/// What a ticket says.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// User, tenant, roles.
    u: String,
    t: String,
    r: Vec<String>,
    /// When the credentials end (Unix seconds), if they do.
    e: Option<u64>,
    /// Valid until (Unix milliseconds).
    v: u64,
    /// A nonce: what "once" is remembered by.
    n: String,
}

/// Issues and redeems tickets.
#[derive(Debug)]
pub(crate) struct Tickets {
    key: Vec<u8>,
    /// Nonces of tickets used here, with when they go stale.
    used: Mutex<HashMap<String, Instant>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Tickets {
    /// Tickets signed with `key` (the deployment's cursor key).
    pub(crate) fn new(key: &[u8]) -> Self {
        Self {
            key: key.to_vec(),
            used: Mutex::default(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // An HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// A new ticket for `ctx`, whose credentials end at `expires_at`.
    pub(crate) fn issue(&self, ctx: &Ctx, expires_at: Option<u64>) -> Result<String, SyncError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)
            .map_err(|e| SyncError::internal(format!("no random bytes for a ticket: {e}")))?;
        let claims = Claims {
            u: ctx.user_id.clone(),
            t: ctx.tenant_id.clone(),
            r: ctx.roles.clone(),
            e: expires_at,
            v: now_ms() + TICKET_TTL.as_millis() as u64,
            n: URL_SAFE_NO_PAD.encode(nonce),
        };
        let body =
            serde_json::to_vec(&claims).map_err(|e| SyncError::internal(format!("ticket: {e}")))?;
        let body = URL_SAFE_NO_PAD.encode(body);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{body}.{tag}"))
    }

    /// The context of a valid ticket, and when its credentials end; `None`
    /// for a forged, stale or (on this instance) already used one.
    pub(crate) fn redeem(&self, ticket: &str) -> Option<(Ctx, Option<u64>)> {
        let (body, tag) = ticket.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let left = claims.v.checked_sub(now_ms()).filter(|l| *l > 0)?;
        let now = Instant::now();
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() >= MAX_USED {
            used.retain(|_, stale| *stale > now);
        }
        if used.contains_key(&claims.n) {
            return None;
        }
        used.insert(claims.n, now + Duration::from_millis(left));
        let ctx = Ctx {
            user_id: claims.u,
            tenant_id: claims.t,
            roles: claims.r,
        };
        Some((ctx, claims.e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once_per_instance_and_only_with_its_key() {
        let here = Tickets::new(b"deployment key");
        let there = Tickets::new(b"deployment key");
        let elsewhere = Tickets::new(b"another deployment");
        let mut ctx = Ctx::new("u", "acme");
        ctx.roles.push("admin".into());
        let a = here.issue(&ctx, Some(9)).expect("ticket");
        let b = here.issue(&ctx, None).expect("ticket");
        assert_ne!(a, b);
        assert!(elsewhere.redeem(&a).is_none(), "another key");
        let (got, exp) = here.redeem(&a).expect("first use");
        assert_eq!((got, exp), (ctx.clone(), Some(9)));
        assert!(here.redeem(&a).is_none(), "used here");
        assert!(
            there.redeem(&a).is_some(),
            "another instance of the deployment"
        );
        assert!(here.redeem("made-up").is_none());
        assert!(here.redeem("a.b").is_none());
        // A tampered body fails the signature.
        let (body, tag) = b.split_once('.').expect("two parts");
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("b64")).expect("json");
        claims["t"] = "other".into();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"))
        );
        assert!(here.redeem(&forged).is_none());
        assert!(here.redeem(&b).is_some());
    }
}
