//! Request limits, each with a safe default.

use std::time::Duration;

/// Limits applied to every request. Each breach gets its own `SYNC:*` error.
///
/// ```
/// use better_sync::Limits;
/// let limits = Limits { max_batch: 200, ..Limits::default() };
/// assert_eq!(limits.max_body_bytes, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes (`SYNC:PAYLOAD_TOO_LARGE`). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Most changes in one push (`SYNC:BATCH_TOO_LARGE`). Default 1,000.
    pub max_batch: usize,
    /// Largest payload of one change, as JSON text (`SYNC:CHANGE_TOO_LARGE`). Default 256 KiB.
    pub max_payload_bytes: usize,
    /// Deepest nesting of arrays and objects in a payload (`SYNC:PAYLOAD_TOO_DEEP`). Default 32.
    pub max_payload_depth: usize,
    /// Default and largest `limit` of a pull page. Default 1,000.
    pub max_pull_limit: u64,
    /// Largest page of a pull (and of a WebSocket message), in payload bytes;
    /// a page stops early rather than exceed it. Default 4 MiB.
    pub max_pull_bytes: usize,
    /// Default and largest `limit` of a snapshot page. Default 1,000.
    pub max_snapshot_limit: u64,
    /// How far a change's clock may run ahead of the server's (`SYNC:CLOCK_SKEW`). Default 60 s.
    pub max_clock_skew: Duration,
    /// Longest long-poll `wait`; longer requests are shortened. Default 60 s.
    pub max_wait: Duration,
    /// Largest WebSocket message a client may send. Default 64 KiB.
    pub max_ws_message_bytes: usize,
    /// Subscriptions one WebSocket connection may hold
    /// (`SYNC:TOO_MANY_SUBSCRIPTIONS`). Default 8.
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch: 1000,
            max_payload_bytes: 256 << 10,
            max_payload_depth: 32,
            max_pull_limit: 1000,
            max_pull_bytes: 4 << 20,
            max_snapshot_limit: 1000,
            max_clock_skew: Duration::from_secs(60),
            max_wait: Duration::from_secs(60),
            max_ws_message_bytes: 64 << 10,
            max_subscriptions: 8,
        }
    }
}

/// Longest op id, tenant, primary key and actor the storage holds: the
/// schema's column sizes (`better_sync_migration::schema::len`; the model's is
/// `protocol::MAX_MODEL_LEN`, which the schema's matches).
pub(crate) const MAX_OP_ID: usize = better_sync_migration::schema::len::OP_ID as usize;
pub(crate) const MAX_TENANT: usize = better_sync_migration::schema::len::TENANT_ID as usize;
pub(crate) const MAX_PK: usize = better_sync_migration::schema::len::PK as usize;
pub(crate) const MAX_ACTOR: usize = better_sync_migration::schema::len::ACTOR as usize;

/// Rough JSON size of a change beside its payload, for the byte budgets of
/// pull pages and live batches.
pub(crate) const ENTRY_OVERHEAD: usize = 256;
