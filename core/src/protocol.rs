//! Wire types of the sync protocol (JSON bodies of push, pull and snapshot).
//!
//! Field names are fixed by the wire contract; see `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the wire protocol announced in `sync.json`.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Create the row (or re-create it after a delete); the payload is the row.
    Insert,
    /// Set the fields in the payload; other fields keep their values.
    Update,
    /// Remove the row.
    Delete,
}

impl Op {
    /// The wire name: `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "insert" => Some(Op::Insert),
            "update" => Some(Op::Update),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// One change as a client sends it: the seed's `op_log` fields minus the tenant,
/// which always comes from the verified request context.
///
/// ```
/// use better_sync_core::protocol::{Change, Op};
/// let c: Change = serde_json::from_str(r#"{
///   "op_id": "c1-0001", "model": "todo", "pk": "1", "op": "insert",
///   "payload": {"id": "1", "title": "Write docs"},
///   "updated_at": "2026-11-25T10:00:00.000Z", "actor": "device-1"
/// }"#).unwrap();
/// assert_eq!(c.op, Op::Insert);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Client-made unique id: the idempotency key.
    pub op_id: String,
    /// Model (table) name.
    pub model: String,
    /// Primary key of the row, as a string.
    pub pk: String,
    /// Insert, update or delete.
    pub op: Op,
    /// The row for an insert, the changed fields for an update, ignored for a delete.
    #[serde(default)]
    pub payload: Value,
    /// Hybrid logical clock of the change (see [`crate::hlc::Hlc`]).
    pub updated_at: String,
    /// The replica (device or user) that made the change; defaults to the user id.
    #[serde(default)]
    pub actor: String,
}

/// `POST B/push` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    /// The pushing replica's id, for logs and metrics.
    #[serde(default)]
    pub client_id: String,
    /// The batch, applied all-or-nothing.
    pub changes: Vec<Change>,
}

/// Outcome of one change in a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResult {
    /// The change's idempotency key.
    pub op_id: String,
    /// Always `applied` for an accepted change (a rejected batch is an error).
    pub status: String,
    /// Server sequence number the change was logged at.
    pub seq: i64,
    /// True when this op id had already been applied: nothing was written now
    /// and `seq` is the original one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// `POST B/push` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// One outcome per change, in request order.
    pub results: Vec<ChangeResult>,
    /// Cursor of the log head once this batch committed. Not a pull cursor for
    /// this client: changes of others may precede it.
    pub cursor: String,
}

/// A change as pulled: the client's change plus the server's sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulledChange {
    /// Server sequence number (cursor order).
    pub seq: i64,
    /// Idempotency key.
    pub op_id: String,
    /// Model name.
    pub model: String,
    /// Primary key.
    pub pk: String,
    /// Insert, update or delete.
    pub op: Op,
    /// Row or changed fields.
    pub payload: Value,
    /// Canonical hybrid logical clock.
    pub updated_at: String,
    /// Replica that made the change.
    pub actor: String,
}

/// `GET B/pull` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Changes after the request cursor, in cursor order.
    pub changes: Vec<PulledChange>,
    /// Cursor to send next time.
    pub cursor: String,
    /// True when more changes are waiting past `cursor`.
    pub has_more: bool,
}

/// One row of a snapshot page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    /// Primary key.
    pub id: String,
    /// Current fields of the row.
    pub value: Value,
    /// True for a deleted row, kept so that late older changes stay ordered.
    pub deleted: bool,
    /// Conflict-resolution state (per-field clocks, tombstone); opaque to
    /// simple clients, needed by replicas that merge.
    pub clocks: Value,
}

/// `GET B/snapshot` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    /// Model of the rows.
    pub model: String,
    /// Rows ordered by id, after the request's `after`.
    pub rows: Vec<SnapshotRow>,
    /// Cursor to pull from once bootstrapped: every change at or before it is
    /// reflected in this page. Keep the cursor of the first page.
    pub cursor: String,
    /// True when another page follows.
    pub has_more: bool,
    /// The `after` value for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Longest model name, in bytes.
pub const MAX_MODEL_LEN: usize = 64;

/// Whether `name` is a valid model name: 1 to 64 bytes of `A-Za-z0-9_-`.
///
/// ```
/// use better_sync_core::protocol::is_valid_model_name;
/// assert!(is_valid_model_name("todo_items-2"));
/// assert!(!is_valid_model_name("to do"));
/// ```
pub fn is_valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Nesting depth of a payload as the limit `max_payload_depth` counts it:
/// the value itself is level 1 and every nested value one more, so
/// `{"a": 1}` has depth 2. Iterative, so that hostile input cannot exhaust
/// the stack.
///
/// ```
/// use better_sync_core::protocol::payload_depth;
/// assert_eq!(payload_depth(&serde_json::json!({"a": [1]})), 3);
/// ```
pub fn payload_depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}
