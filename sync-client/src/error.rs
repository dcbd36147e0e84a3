//! The client's error type: the server's `SYNC:*` answers and the client's own failures.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// Codes of failures that are the client's own (the server's are `SYNC:*`).
pub mod codes {
    /// The server could not be reached, the connection broke, or a request timed out.
    pub const NETWORK: &str = "NETWORK";
    /// The server answered something that is not the protocol.
    pub const BAD_RESPONSE: &str = "BAD_RESPONSE";
    /// The local store failed (disk full, file locked, corrupt row).
    pub const STORAGE: &str = "STORAGE";
    /// The client was closed.
    pub const CLOSED: &str = "CLOSED";
    /// A builder setting is wrong (bad URL, header value that is not ASCII).
    pub const CONFIG: &str = "CONFIG";
    /// A change refused locally, before it is queued (same code as the server's).
    pub const INVALID_CHANGE: &str = "SYNC:INVALID_CHANGE";
    /// A model the client was not built with (same code as the server's).
    pub const UNKNOWN_MODEL: &str = "SYNC:UNKNOWN_MODEL";
    /// The server's answer to a missing, invalid or expired token.
    pub const UNAUTHORIZED: &str = "SYNC:UNAUTHORIZED";
    /// A row that does not decode as the type a typed model asked for, or a
    /// value that does not encode as JSON.
    pub const DECODE: &str = "DECODE";
}

/// A failure of the client or an error answer of the server.
///
/// `code` is the server's `SYNC:*` code when the server answered with one
/// (see `docs/PROTOCOL.md`, section 10), or one of [`codes`]. Local
/// validation failures of [`crate::SyncClient::apply_change`] use the server's
/// codes with `status` 0, so an app handles both the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    code: String,
    message: String,
    status: u16,
    meta: Option<Value>,
    retry_after: Option<Duration>,
}

impl ClientError {
    /// An error with a code and a message, no HTTP status.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status: 0,
            meta: None,
            retry_after: None,
        }
    }

    pub(crate) fn network(message: impl fmt::Display) -> Self {
        Self::new(codes::NETWORK, message.to_string())
    }

    pub(crate) fn bad_response(message: impl fmt::Display) -> Self {
        Self::new(codes::BAD_RESPONSE, message.to_string())
    }

    pub(crate) fn storage(message: impl fmt::Display) -> Self {
        Self::new(codes::STORAGE, message.to_string())
    }

    pub(crate) fn closed() -> Self {
        Self::new(codes::CLOSED, "the sync client was closed")
    }

    pub(crate) fn config(message: impl fmt::Display) -> Self {
        Self::new(codes::CONFIG, message.to_string())
    }

    pub(crate) fn invalid_change(field: &str, message: impl fmt::Display) -> Self {
        Self::new(codes::INVALID_CHANGE, message.to_string())
            .with_meta(serde_json::json!({ "field": field }))
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn with_meta(mut self, meta: Value) -> Self {
        self.meta = Some(meta);
        self
    }

    pub(crate) fn with_retry_after(mut self, delay: Option<Duration>) -> Self {
        self.retry_after = delay;
        self
    }

    /// The machine-readable code: `SYNC:*` from the server, or one of [`codes`].
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status of the server's answer; 0 when there was none.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The answer's `meta` (`index`, `op_id`, `field`, `max`, `retryAfterMs`).
    pub fn meta(&self) -> Option<&Value> {
        self.meta.as_ref()
    }

    /// The delay the server asked for before a retry (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `meta.index`: the position of the offending change in a pushed batch.
    pub fn index(&self) -> Option<usize> {
        self.meta
            .as_ref()?
            .get("index")?
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
    }

    /// Whether sending the same request again later can succeed: network
    /// failures, `5xx`, `429`, `401` (after a token refresh),
    /// `SYNC:CLOCK_SKEW` (once the server's clock caught up), answers that
    /// were not the protocol, and local storage failures.
    pub fn is_retryable(&self) -> bool {
        self.code == codes::NETWORK
            || self.status >= 500
            || self.status == 429
            || self.status == 401
            || self.code == codes::BAD_RESPONSE
            || self.code == codes::STORAGE
            || self.code == "SYNC:CLOCK_SKEW"
    }

    /// Whether the server refused a pushed batch for its content, so that
    /// sending it again fails again. `SYNC:CLOCK_SKEW` is not: the same
    /// change is accepted once the server's clock has caught up.
    pub(crate) fn is_about_content(&self) -> bool {
        // MALFORMED_JSON and INVALID_BODY are not here: this client's
        // bodies are well-formed, so those mean a body damaged on the way,
        // and setting changes aside for them would lose them.
        const CONTENT: [&str; 9] = [
            "SYNC:INVALID_CHANGE",
            "SYNC:UNKNOWN_MODEL",
            "SYNC:DUPLICATE_OP_ID",
            "SYNC:OP_ID_CONFLICT",
            "SYNC:PAYLOAD_TOO_LARGE",
            "SYNC:BATCH_TOO_LARGE",
            "SYNC:CHANGE_TOO_LARGE",
            "SYNC:PAYLOAD_TOO_DEEP",
            "SYNC:SCHEMA_VIOLATION",
        ];
        // A 413 of a proxy has no SYNC body: smaller batches are the way out.
        self.status == 413
            || (400..500).contains(&self.status)
                && (CONTENT.contains(&self.code.as_str())
                    || (self.code == "SYNC:FORBIDDEN" && self.index().is_some()))
    }

    /// Whether the stored cursor is unusable and the client must bootstrap again.
    pub(crate) fn is_cursor_error(&self) -> bool {
        matches!(
            self.code.as_str(),
            "SYNC:CURSOR_AHEAD"
                | "SYNC:CURSOR_STALE"
                | "SYNC:FOREIGN_CURSOR"
                | "SYNC:INVALID_CURSOR"
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status > 0 {
            write!(f, "{} ({}): {}", self.code, self.status, self.message)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for ClientError {}

impl From<sea_orm::DbErr> for ClientError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::storage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::ClientError;

    /// A payload that does not fit a typed model is refused for its content:
    /// set aside, not retried; a stale cursor is a cursor error.
    #[test]
    fn refusals_are_told_apart() {
        let schema = ClientError::new("SYNC:SCHEMA_VIOLATION", "x").with_status(422);
        assert!(schema.is_about_content());
        let skew = ClientError::new("SYNC:CLOCK_SKEW", "x").with_status(422);
        assert!(!skew.is_about_content());
        let stale = ClientError::new("SYNC:CURSOR_STALE", "x").with_status(409);
        assert!(stale.is_cursor_error());
        assert!(!stale.is_about_content());
    }
}
