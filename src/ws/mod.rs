//! WebSocket: the handshake checks and the per-connection session.
//!
//! Adapters (tower/hyper, actix) do the HTTP upgrade and translate frames to
//! and from [`WsFrame`]; everything else happens here, once:
//! `handshake.rs` checks the request, `session.rs` runs the connection,
//! `frames.rs` writes the server's messages.
//!
//! Client messages (JSON text frames):
//! - `{"type": "subscribe", "id"?, "cursor"?, "models"?}`: stream changes
//!   after the cursor (absent: from the start), of those models (absent:
//!   all). The server first catches up by pull, sends `{"type": "synced",
//!   "cursor"}`, then forwards changes as they commit. Up to
//!   `max_subscriptions` per connection; subscribing again with a known `id`
//!   replaces that subscription.
//! - `{"type": "unsubscribe", "id"?}`, `{"type": "ping"}` (answered
//!   `{"type": "pong"}`).
//!
//! Server messages: `{"type": "changes", "changes": [...], "cursor", "id"?}`,
//! `{"type": "synced", "cursor", "id"?}`, `{"type": "error", "error": {...}}`.
//! The session ends when its token expires.
//! The server pings every heartbeat interval and closes a connection that has
//! sent nothing (no pong, no message) for the heartbeat timeout.

mod frames;
mod handshake;
mod session;

pub(crate) use self::handshake::{prepare, switching_protocols};
pub(crate) use self::session::run;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, header};
use sha1::{Digest, Sha1};

use crate::auth::Ctx;

/// How WebSocket sessions behave; set on the builder.
#[derive(Debug, Clone)]
pub(crate) struct SocketConfig {
    /// Ping interval.
    pub(crate) heartbeat: Duration,
    /// A peer silent for this long is closed; a send that takes this long
    /// ends the session.
    pub(crate) heartbeat_timeout: Duration,
    /// Live batches a subscriber may fall behind before it catches up by pull.
    pub(crate) live_buffer: usize,
}

/// One WebSocket frame, as adapters hand them to `BetterSync::run_socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsFrame {
    /// A UTF-8 text frame: every protocol message.
    Text(String),
    /// A binary frame (not part of the protocol; answered with an error).
    Binary(Bytes),
    /// A ping; the session answers with a pong.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer closes, or the session closes.
    Close,
    /// The session closes with a status code and a reason (RFC 6455 7.4),
    /// e.g. 1012 when the server shuts down: clients reconnect elsewhere.
    CloseWith {
        /// The close code.
        code: u16,
        /// Why, for people (at most 123 bytes).
        reason: String,
    },
}

/// A checked WebSocket request: who it is, and the handshake answer key.
#[derive(Debug, Clone)]
pub struct WsAccept {
    /// The verified context the session runs under.
    pub ctx: Ctx,
    /// `Sec-WebSocket-Accept` value for the 101 answer.
    pub accept_key: String,
    /// When the credentials expire (Unix seconds): the session ends then.
    pub expires_at: Option<u64>,
}

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether the headers ask for a WebSocket upgrade.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_websocket_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&h));
    }
}
