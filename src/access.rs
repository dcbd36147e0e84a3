//! Access hooks: who a request is (`authorize`), which rows it may read
//! (`can_read`) and which changes it may write (`can_write`).
//!
//! The read filter is shared by every read path (pull, snapshot, the live
//! fan-out, WebSocket delivery), so it lives here rather than in any one of
//! them.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::auth::{AuthRequest, Ctx};
use crate::error::SyncError;
use crate::storage::Storage;
use better_sync_core::protocol::{Change, Op, PulledChange};

/// The `authorize` hook: a verified request to the context it runs under.
pub(crate) type AuthorizeFn =
    Arc<dyn Fn(AuthRequest) -> BoxFuture<'static, Result<Ctx, SyncError>> + Send + Sync>;
/// The `can_read` hook: whether a context may see a row of a model.
pub(crate) type CanReadFn = Arc<dyn Fn(&Ctx, &str, &Value) -> bool + Send + Sync>;
/// The `can_write` hook: whether a context may make a change.
pub(crate) type CanWriteFn = Arc<dyn Fn(&Ctx, &str, &Change) -> bool + Send + Sync>;

/// What the `on_write` hook is shown: who writes, the change, and the row's
/// current value (`None` when it does not exist or is deleted) as committed
/// when the push was checked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteCheck {
    /// The writer's context.
    pub ctx: Ctx,
    /// The change, validated.
    pub change: Change,
    /// The row's current value.
    pub current: Option<Value>,
}

/// What the `on_write` hook decides about one change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WriteDecision {
    /// Write it as it is.
    Accept,
    /// Write it with this payload instead (an insert's row, an update's
    /// fields; ignored for a delete). The new payload is validated again.
    Rewrite(Value),
    /// Refuse it: the push fails with `403 SYNC:FORBIDDEN`, this reason in
    /// the message and `meta.reason`, and its batch writes nothing.
    Reject(String),
}

/// The `on_write` hook.
pub(crate) type WriteHookFn =
    Arc<dyn Fn(WriteCheck) -> BoxFuture<'static, WriteDecision> + Send + Sync>;

/// Current values of rows by `(model, pk)`; `None` for a deleted row.
pub(crate) type CurrentRows = HashMap<(String, String), Option<Value>>;

/// The row-level read filter (`can_read`); without a hook every row passes.
#[derive(Clone, Default)]
pub(crate) struct ReadFilter {
    can_read: Option<CanReadFn>,
}

impl ReadFilter {
    pub(crate) fn new(can_read: Option<CanReadFn>) -> Self {
        Self { can_read }
    }

    /// Whether a hook is set: without one, readers need no row values and
    /// can pass stored JSON text through.
    pub(crate) fn filters(&self) -> bool {
        self.can_read.is_some()
    }

    /// Whether `ctx` may see this row.
    pub(crate) fn readable(&self, ctx: &Ctx, model: &str, row: &Value) -> bool {
        self.can_read.as_ref().is_none_or(|f| f(ctx, model, row))
    }

    /// `can_read` for a pulled change, judged on the row as it is now (an
    /// update's payload alone may lack the fields the hook looks at). A
    /// delete carries only a key and always passes, so that no replica keeps
    /// a row that was deleted.
    pub(crate) fn change_readable(&self, ctx: &Ctx, c: &PulledChange, rows: &CurrentRows) -> bool {
        if c.op == Op::Delete {
            return true;
        }
        match rows.get(&(c.model.clone(), c.pk.clone())) {
            Some(Some(row)) => self.readable(ctx, &c.model, row),
            // The row is deleted now: the change's data is superseded, and
            // judging it on its own payload could leak fields of a row the
            // reader may never have been allowed to see.
            Some(None) => false,
            None => self.readable(ctx, &c.model, &c.payload),
        }
    }
}

/// The current values of the live rows these changes touch (one query).
pub(crate) async fn current_rows(
    storage: &dyn Storage,
    tenant: &str,
    changes: &[PulledChange],
) -> Result<CurrentRows, SyncError> {
    let keys = changes
        .iter()
        .filter(|c| c.op != Op::Delete)
        .map(|c| (c.model.as_str(), c.pk.as_str()));
    current_values(storage, tenant, keys).await
}

/// The current values of these `(model, pk)` rows of one tenant, read once
/// (each key once); `None` for a deleted row, no entry for an absent one.
pub(crate) async fn current_values<'a>(
    storage: &dyn Storage,
    tenant: &str,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<CurrentRows, SyncError> {
    let mut keys: Vec<(&str, &str)> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rows = CurrentRows::new();
    if keys.is_empty() {
        return Ok(rows);
    }
    for r in storage.read_snapshots(tenant, &keys).await? {
        let value = if r.deleted {
            None
        } else {
            serde_json::from_str(&r.value).ok()
        };
        rows.insert((r.model, r.id), value);
    }
    Ok(rows)
}
