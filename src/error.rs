//! Errors: the `SYNC:*` codes clients see, and configuration errors.
//!
//! Every failure a client can cause maps to one [`ErrorCode`] with a stable
//! code string and HTTP status, serialized as
//! `{ "error": { "code", "message", "helpUrl"? }, "meta"? }`.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

/// Stable error codes of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON (400).
    MalformedJson,
    /// The JSON does not have the expected shape: wrong types, missing fields (422).
    InvalidBody,
    /// One change in a batch is invalid; `meta.index` says which (422).
    InvalidChange,
    /// A change names a model the server does not know (422).
    UnknownModel,
    /// A change's clock is too far ahead of the server's clock (422).
    ClockSkew,
    /// The same op id appears twice in one batch (409).
    DuplicateOpId,
    /// An op id already applied is sent again with different content (409).
    OpIdConflict,
    /// The request body is larger than allowed (413).
    PayloadTooLarge,
    /// The batch has more changes than allowed (413).
    BatchTooLarge,
    /// One change's payload is larger than allowed (413).
    ChangeTooLarge,
    /// One change's payload nests arrays and objects deeper than allowed (422).
    PayloadTooDeep,
    /// A WebSocket connection asked for more subscriptions than allowed (429).
    TooManySubscriptions,
    /// A query parameter is missing or malformed (400).
    InvalidQuery,
    /// The cursor is not one this server issued (400).
    InvalidCursor,
    /// The cursor was issued to another tenant (400).
    ForeignCursor,
    /// The cursor points past the end of the log: the server's data was reset (409).
    CursorAhead,
    /// A change's payload does not fit its typed model's schema (422);
    /// `meta.field` is the payload path, `meta.reason` why.
    SchemaViolation,
    /// The cursor is below the tenant's log horizon: the changes after it
    /// were compacted away; bootstrap again from the snapshot (409).
    CursorStale,
    /// The client announced a model version this server cannot serve: newer
    /// than the server's, or older than its upgrades reach (409); `meta`
    /// names the model, the version and the range served.
    VersionUnsupported,
    /// The subscription names a shape the server does not define (422).
    UnknownShape,
    /// A shape's parameters are missing, unknown or of the wrong type, or
    /// not a JSON object (422); `meta.shape` names the shape.
    InvalidShapeParams,
    /// No or invalid credentials (401).
    Unauthorized,
    /// Authenticated, but not allowed (403).
    Forbidden,
    /// Too many requests; retry after `meta.retryAfterMs` (429).
    RateLimited,
    /// No such route under the base path (404).
    NotFound,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// The WebSocket route was called without a valid upgrade (426).
    UpgradeRequired,
    /// Storage is unreachable or failed; safe to retry (503).
    Unavailable,
    /// A bug or a panicking hook (500).
    Internal,
}

impl ErrorCode {
    /// The wire code, e.g. `SYNC:INVALID_CHANGE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "SYNC:MALFORMED_JSON",
            ErrorCode::InvalidBody => "SYNC:INVALID_BODY",
            ErrorCode::InvalidChange => "SYNC:INVALID_CHANGE",
            ErrorCode::UnknownModel => "SYNC:UNKNOWN_MODEL",
            ErrorCode::ClockSkew => "SYNC:CLOCK_SKEW",
            ErrorCode::DuplicateOpId => "SYNC:DUPLICATE_OP_ID",
            ErrorCode::OpIdConflict => "SYNC:OP_ID_CONFLICT",
            ErrorCode::PayloadTooLarge => "SYNC:PAYLOAD_TOO_LARGE",
            ErrorCode::BatchTooLarge => "SYNC:BATCH_TOO_LARGE",
            ErrorCode::ChangeTooLarge => "SYNC:CHANGE_TOO_LARGE",
            ErrorCode::PayloadTooDeep => "SYNC:PAYLOAD_TOO_DEEP",
            ErrorCode::TooManySubscriptions => "SYNC:TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::InvalidQuery => "SYNC:INVALID_QUERY",
            ErrorCode::InvalidCursor => "SYNC:INVALID_CURSOR",
            ErrorCode::ForeignCursor => "SYNC:FOREIGN_CURSOR",
            ErrorCode::CursorAhead => "SYNC:CURSOR_AHEAD",
            ErrorCode::CursorStale => "SYNC:CURSOR_STALE",
            ErrorCode::VersionUnsupported => "SYNC:VERSION_UNSUPPORTED",
            ErrorCode::UnknownShape => "SYNC:UNKNOWN_SHAPE",
            ErrorCode::InvalidShapeParams => "SYNC:INVALID_SHAPE_PARAMS",
            ErrorCode::SchemaViolation => "SYNC:SCHEMA_VIOLATION",
            ErrorCode::Unauthorized => "SYNC:UNAUTHORIZED",
            ErrorCode::Forbidden => "SYNC:FORBIDDEN",
            ErrorCode::RateLimited => "SYNC:RATE_LIMITED",
            ErrorCode::NotFound => "SYNC:NOT_FOUND",
            ErrorCode::MethodNotAllowed => "SYNC:METHOD_NOT_ALLOWED",
            ErrorCode::UpgradeRequired => "SYNC:UPGRADE_REQUIRED",
            ErrorCode::Unavailable => "SYNC:UNAVAILABLE",
            ErrorCode::Internal => "SYNC:INTERNAL",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidCursor
            | ErrorCode::ForeignCursor => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody
            | ErrorCode::InvalidChange
            | ErrorCode::UnknownModel
            | ErrorCode::ClockSkew
            | ErrorCode::PayloadTooDeep
            | ErrorCode::SchemaViolation
            | ErrorCode::UnknownShape
            | ErrorCode::InvalidShapeParams => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::DuplicateOpId
            | ErrorCode::OpIdConflict
            | ErrorCode::CursorAhead
            | ErrorCode::CursorStale
            | ErrorCode::VersionUnsupported => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge | ErrorCode::BatchTooLarge | ErrorCode::ChangeTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited | ErrorCode::TooManySubscriptions => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::MalformedJson,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidChange,
        ErrorCode::UnknownModel,
        ErrorCode::ClockSkew,
        ErrorCode::DuplicateOpId,
        ErrorCode::OpIdConflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::ChangeTooLarge,
        ErrorCode::PayloadTooDeep,
        ErrorCode::TooManySubscriptions,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidCursor,
        ErrorCode::ForeignCursor,
        ErrorCode::CursorAhead,
        ErrorCode::CursorStale,
        ErrorCode::VersionUnsupported,
        ErrorCode::UnknownShape,
        ErrorCode::InvalidShapeParams,
        ErrorCode::SchemaViolation,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UpgradeRequired,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];
}

/// An error answered to a client: a code, a human message and optional details.
///
/// Hooks return it to reject a request:
///
/// ```
/// use better_sync::{ErrorCode, SyncError};
/// let err = SyncError::new(ErrorCode::Forbidden, "archived projects are read-only");
/// assert_eq!(err.code().as_str(), "SYNC:FORBIDDEN");
/// assert_eq!(err.status(), 403);
/// ```
#[derive(Debug, Clone)]
pub struct SyncError {
    code: ErrorCode,
    message: String,
    meta: Option<Value>,
    retry_after_ms: Option<u64>,
    /// The failure behind it (a storage error, say), for in-process callers
    /// and logs; never sent to clients.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Equal when what a client sees is equal; the source is not compared.
impl PartialEq for SyncError {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.meta == other.meta
            && self.retry_after_ms == other.retry_after_ms
    }
}

impl SyncError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            meta: None,
            retry_after_ms: None,
            source: None,
        }
    }

    /// Keep the failure behind this error: [`std::error::Error::source`]
    /// returns it. Clients never see it.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Attach details, answered as the body's `meta`.
    #[must_use]
    pub fn with_meta(mut self, meta: Value) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Ask the client to wait: sets `Retry-After` and `meta.retryAfterMs`.
    #[must_use]
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details, if any.
    pub fn meta(&self) -> Option<&Value> {
        self.meta.as_ref()
    }

    /// How long the client should wait, if said.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// Shorthand for [`ErrorCode::Unauthorized`].
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// Shorthand for [`ErrorCode::Forbidden`].
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// Shorthand for [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The JSON body: `{ "error": { "code", "message", "helpUrl" }, "meta"? }`.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "helpUrl": format!("https://docs.rs/better-sync/latest/better_sync/error/enum.ErrorCode.html#variant.{:?}", self.code),
            }
        });
        let mut meta = self.meta.clone();
        if let Some(ms) = self.retry_after_ms {
            let m = meta.get_or_insert_with(|| json!({}));
            if let Some(obj) = m.as_object_mut() {
                obj.insert("retryAfterMs".into(), json!(ms));
            }
        }
        if let Some(meta) = meta {
            body["meta"] = meta;
        }
        body
    }
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::storage::StorageError> for SyncError {
    fn from(e: crate::storage::StorageError) -> Self {
        tracing::error!(error = %e, "storage failure");
        SyncError::new(
            ErrorCode::Unavailable,
            "storage failed; retry later (a push may or may not have been written: \
             re-sending the same op ids is safe)",
        )
        .with_source(e)
    }
}

/// A configuration mistake found when an engine is built (`BetterSyncBuilder::build`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No storage was configured.
    #[error("no storage configured: call .storage(SeaOrmStorage::new(db))")]
    MissingStorage,
    /// Neither an auth provider nor an authorize hook: requests could not be
    /// tied to a tenant.
    #[error(
        "no auth configured: call .auth(Jwt::...) or .authorize(...); a tenant is never taken from an unverified request"
    )]
    MissingAuth,
    /// The base path is not `/` followed by segments without a trailing slash.
    #[error("invalid base path {0:?}: expected something like \"/api/sync\"")]
    InvalidBasePath(String),
    /// A model name is not a plain identifier.
    #[error("invalid model name {0:?}: use letters, digits, '_' and '-' (at most 64)")]
    InvalidModel(String),
    /// A typed model's Rust type cannot check payloads.
    #[error("model {model:?}: {reason}")]
    InvalidSchema {
        /// The model.
        model: String,
        /// Why its schema cannot be used.
        reason: String,
    },
    /// A shape cannot work: a name, field or parameter, or a model that is
    /// not registered.
    #[error("shape {shape:?}: {reason}")]
    InvalidShape {
        /// The shape.
        shape: String,
        /// Why.
        reason: String,
    },
    /// A model cannot be materialized into the entity it was bound to.
    #[error("model {model:?} cannot be materialized: {reason}")]
    InvalidMaterialize {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::storage::StorageError;

    #[test]
    fn a_storage_failure_keeps_its_cause() {
        let err = SyncError::from(StorageError::Corrupt("no counter row".into()));
        assert_eq!(err.code(), ErrorCode::Unavailable);
        let source = err.source().expect("source");
        assert!(source.to_string().contains("no counter row"), "{source}");
        // Clients never see it.
        assert!(!err.to_json().to_string().contains("no counter row"));
    }
}
