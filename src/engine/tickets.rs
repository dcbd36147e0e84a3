//! WebSocket tickets: a browser cannot set headers on a WebSocket, so
//! instead of putting its token in the URL (where logs and console errors
//! show it) it asks `POST B/ws/ticket` for a ticket, usable once, within
//! 30 seconds, on this instance, and opens `B/ws?ticket=...`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::Ctx;
use crate::error::SyncError;

/// How long a ticket is good for.
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most tickets waiting at once; past it the oldest go.
const MAX_TICKETS: usize = 10_000;

/// What a ticket stands for: the context it was issued to, when its
/// credentials end, and when it was issued.
type Issued = (Ctx, Option<u64>, Instant);

/// The tickets issued and not yet used.
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    waiting: Mutex<HashMap<String, Issued>>,
}

impl Tickets {
    /// A new ticket for `ctx`, whose credentials end at `expires_at`.
    pub(crate) fn issue(&self, ctx: Ctx, expires_at: Option<u64>) -> Result<String, SyncError> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| SyncError::internal(format!("no random bytes for a ticket: {e}")))?;
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.retain(|_, (_, _, at)| now.duration_since(*at) < TICKET_TTL);
        if waiting.len() >= MAX_TICKETS
            && let Some(oldest) = waiting
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(t, _)| t.clone())
        {
            waiting.remove(&oldest);
        }
        waiting.insert(ticket.clone(), (ctx, expires_at, now));
        Ok(ticket)
    }

    /// The context of a ticket, once: a used, unknown or stale ticket is
    /// `None`.
    pub(crate) fn redeem(&self, ticket: &str) -> Option<(Ctx, Option<u64>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let (ctx, expires_at, at) = waiting.remove(ticket)?;
        (at.elapsed() < TICKET_TTL).then_some((ctx, expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once() {
        let t = Tickets::default();
        let a = t.issue(Ctx::new("u", "acme"), Some(9)).expect("ticket");
        let b = t.issue(Ctx::new("v", "acme"), None).expect("ticket");
        assert_ne!(a, b);
        assert!(a.len() >= 32);
        let (ctx, exp) = t.redeem(&a).expect("first use");
        assert_eq!((ctx.user_id.as_str(), exp), ("u", Some(9)));
        assert!(t.redeem(&a).is_none(), "used");
        assert!(t.redeem("made-up").is_none());
        assert!(t.redeem(&b).is_some());
    }
}
