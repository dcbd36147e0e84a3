//! The engine: validation, push, pull and snapshot, without any HTTP.
//!
//! [`BetterSync`] is cheap to clone (one `Arc`) and is what every adapter
//! (tower, actix) and the in-process API share.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::auth::{AuthRequest, Authenticator, Ctx, ctx_from_identity};
use crate::builder::{AuthorizeFn, BetterSyncBuilder, CanReadFn, CanWriteFn};
use crate::commit::{ValidChange, Writer};
use crate::conflict::{Conflict, RowState};
use crate::cors::Cors;
use crate::cursor::CursorCodec;
use crate::error::{ErrorCode, SyncError};
use crate::fanout::{Fanout, FanoutConfig};
use crate::hlc::Hlc;
use crate::limits::{Limits, MAX_ACTOR, MAX_OP_ID, MAX_PK, MAX_TENANT};
use crate::protocol::{
    Change, Op, PullResponse, PulledChange, PushRequest, PushResponse, SnapshotResponse,
    SnapshotRow,
};
use crate::protocol::{is_valid_model_name as valid_model_name, payload_depth};
use crate::storage::{LogEntry, Storage};

/// The sync engine. Build it with [`BetterSync::builder`], mount it with an
/// adapter (`better_sync_tower::BetterSyncLayer`, `better_sync_actix::sync_scope`)
/// or call it directly.
///
/// ```no_run
/// # async fn run(sync: better_sync::BetterSync) -> Result<(), better_sync::SyncError> {
/// use better_sync::{Ctx, protocol::{Change, Op, PushRequest}};
/// let ctx = Ctx::new("alice", "acme");
/// let change = Change {
///     op_id: "op-1".into(), model: "todo".into(), pk: "1".into(), op: Op::Insert,
///     payload: serde_json::json!({"id": "1", "title": "Write docs"}),
///     updated_at: "2026-11-25T10:00:00.000Z".into(), actor: "device-1".into(),
/// };
/// sync.push(&ctx, PushRequest { client_id: "device-1".into(), changes: vec![change] }).await?;
/// let page = sync.pull(&ctx, None, None).await?;
/// assert_eq!(page.changes.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BetterSync {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for BetterSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BetterSync")
            .field("base_path", &self.inner.base_path)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) base_path: String,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) auth: Option<Arc<dyn Authenticator>>,
    pub(crate) authorize: Option<AuthorizeFn>,
    pub(crate) can_read: Option<CanReadFn>,
    pub(crate) can_write: Option<CanWriteFn>,
    #[allow(dead_code)]
    pub(crate) conflict: Conflict,
    pub(crate) models: Option<BTreeSet<String>>,
    pub(crate) limits: Limits,
    pub(crate) cors: Option<Cors>,
    pub(crate) cursors: CursorCodec,
    pub(crate) writer: Writer,
    /// Highest sequence number known committed, for long-polls.
    pub(crate) head: watch::Sender<i64>,
    pub(crate) fanout: Fanout,
    pub(crate) fanout_config: FanoutConfig,
    /// Rate limits, in the order configured.
    pub(crate) limiters: Vec<crate::ratelimit::Limiter>,
    /// WebSocket ping interval.
    pub(crate) heartbeat: Duration,
    /// A WebSocket peer silent for this long is closed.
    pub(crate) heartbeat_timeout: Duration,
}

impl Inner {
    /// Whether `can_read` lets `ctx` see this row (no hook: everything).
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

    pub(crate) fn readable(&self, ctx: &Ctx, model: &str, row: &Value) -> bool {
        self.can_read.as_ref().is_none_or(|f| f(ctx, model, row))
    }
}

/// Options of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// Cursor from the previous pull; `None` pulls from the start.
    pub cursor: Option<String>,
    /// Most changes to return (capped by [`Limits::max_pull_limit`]).
    pub limit: Option<u64>,
    /// Long-poll: with nothing to return, wait up to this long for a commit.
    pub wait: Option<Duration>,
}

/// Rough JSON size of a change beside its payload, for page byte budgets.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// How often a long-poll re-reads the storage head, to see commits made by
/// other instances sharing the database.
const WAIT_RECHECK: Duration = Duration::from_millis(500);

impl BetterSync {
    /// Start configuring an engine.
    pub fn builder() -> BetterSyncBuilder {
        BetterSyncBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The base path the engine serves, e.g. `/api/sync`.
    pub fn base_path(&self) -> &str {
        &self.inner.base_path
    }

    /// Whether changes of `model` are accepted (see the builder's `model`).
    pub fn knows_model(&self, model: &str) -> bool {
        valid_model_name(model) && self.inner.models.as_ref().is_none_or(|m| m.contains(model))
    }

    /// Live WebSocket connections with subscriptions, held by this engine now.
    pub fn live_subscribers(&self) -> usize {
        self.inner.fanout.receivers()
    }

    /// How many times a live subscriber fell behind its buffer and caught up
    /// by pull instead (a measure of slow consumers).
    pub fn live_resyncs(&self) -> u64 {
        self.inner
            .fanout
            .resyncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Authenticate and authorize a request: the context it runs under.
    pub async fn authorize(&self, req: AuthRequest) -> Result<Ctx, SyncError> {
        self.authorize_until(req).await.map(|(ctx, _)| ctx)
    }

    /// [`Self::authorize`], plus when the credentials expire (the token's
    /// `exp`, Unix seconds), for sessions that outlive one request.
    pub(crate) async fn authorize_until(
        &self,
        mut req: AuthRequest,
    ) -> Result<(Ctx, Option<u64>), SyncError> {
        if let Some(auth) = &self.inner.auth {
            req.identity = Some(auth.authenticate(&req).await?);
        }
        let expires = req.identity.as_ref().and_then(|i| {
            let exp = i.claims.get("exp")?;
            // `exp` may be fractional; round down so the session never
            // outlives the token.
            exp.as_u64()
                .or_else(|| exp.as_f64().map(|f| f.max(0.0) as u64))
        });
        let ctx = match (&self.inner.authorize, &req.identity) {
            (Some(hook), _) => hook(req).await?,
            (None, Some(identity)) => ctx_from_identity(identity)?,
            (None, None) => return Err(SyncError::unauthorized("no credentials")),
        };
        if ctx.tenant_id.is_empty() || ctx.tenant_id.len() > MAX_TENANT {
            return Err(SyncError::forbidden(
                "the request context has no valid tenant",
            ));
        }
        Ok((ctx, expires))
    }

    /// Apply a batch of changes for `ctx`'s tenant, all or nothing.
    ///
    /// Changes whose op id was already applied are not written again; their
    /// result carries the original `seq` and `duplicate: true`.
    pub async fn push(&self, ctx: &Ctx, req: PushRequest) -> Result<PushResponse, SyncError> {
        let inner = &self.inner;
        if req.changes.len() > inner.limits.max_batch {
            return Err(SyncError::new(
                ErrorCode::BatchTooLarge,
                format!(
                    "batch has {} changes, at most {} are allowed per push",
                    req.changes.len(),
                    inner.limits.max_batch
                ),
            )
            .with_meta(serde_json::json!({ "max": inner.limits.max_batch })));
        }
        let now = Hlc::now();
        let mut seen = HashSet::with_capacity(req.changes.len());
        let mut valid = Vec::with_capacity(req.changes.len());
        for (index, change) in req.changes.into_iter().enumerate() {
            if !seen.insert(change.op_id.clone()) {
                return Err(SyncError::new(
                    ErrorCode::DuplicateOpId,
                    format!("op_id {:?} appears twice in this batch", change.op_id),
                )
                .with_meta(serde_json::json!({ "index": index, "op_id": change.op_id })));
            }
            valid.push(self.validate(ctx, index, change, now)?);
        }
        if valid.is_empty() {
            let head = inner.storage.head().await?;
            return Ok(PushResponse {
                results: Vec::new(),
                cursor: inner.cursors.encode(&ctx.tenant_id, head),
            });
        }
        let (results, head) = inner
            .writer
            .submit(inner.storage.clone(), ctx.tenant_id.clone(), valid)
            .await?;
        inner.head.send_if_modified(|h| {
            let moved = head > *h;
            if moved {
                *h = head;
            }
            moved
        });
        Ok(PushResponse {
            results,
            cursor: inner.cursors.encode(&ctx.tenant_id, head),
        })
    }

    fn validate(
        &self,
        ctx: &Ctx,
        index: usize,
        mut c: Change,
        now: Hlc,
    ) -> Result<ValidChange, SyncError> {
        let limits = &self.inner.limits;
        let meta =
            |field: &str| serde_json::json!({ "index": index, "op_id": c.op_id, "field": field });
        let invalid = |field: &str, msg: String| {
            SyncError::new(
                ErrorCode::InvalidChange,
                format!("changes[{index}].{field}: {msg}"),
            )
            .with_meta(meta(field))
        };
        if c.op_id.is_empty() || c.op_id.len() > MAX_OP_ID || c.op_id.chars().any(char::is_control)
        {
            return Err(invalid(
                "op_id",
                format!("must be 1 to {MAX_OP_ID} bytes without control characters"),
            ));
        }
        if !valid_model_name(&c.model) {
            return Err(invalid("model", "must be a plain identifier".into()));
        }
        if let Some(models) = &self.inner.models
            && !models.contains(&c.model)
        {
            {
                return Err(SyncError::new(
                    ErrorCode::UnknownModel,
                    format!("changes[{index}].model: unknown model {:?}", c.model),
                )
                .with_meta(meta("model")));
            }
        }
        if c.pk.is_empty() || c.pk.len() > MAX_PK || c.pk.chars().any(char::is_control) {
            return Err(invalid(
                "pk",
                format!("must be 1 to {MAX_PK} bytes without control characters"),
            ));
        }
        if c.actor.is_empty() {
            c.actor = ctx.user_id.clone();
        }
        if c.actor.is_empty() || c.actor.len() > MAX_ACTOR || c.actor.chars().any(char::is_control)
        {
            return Err(invalid(
                "actor",
                format!("must be 1 to {MAX_ACTOR} bytes without control characters"),
            ));
        }
        let clock: Hlc = c
            .updated_at
            .parse()
            .map_err(|e: crate::hlc::HlcParseError| invalid("updated_at", e.to_string()))?;
        let skew = limits.max_clock_skew.as_millis() as i64;
        if clock.millis() > now.millis() + skew {
            return Err(SyncError::new(
                ErrorCode::ClockSkew,
                format!(
                    "changes[{index}].updated_at {} is more than {} ms ahead of the server clock {}",
                    c.updated_at, skew, now
                ),
            )
            .with_meta(meta("updated_at")));
        }
        match (c.op, &c.payload) {
            (Op::Insert, Value::Object(_)) => {}
            (Op::Update, Value::Object(o)) if !o.is_empty() => {}
            (Op::Delete, _) => c.payload = Value::Null,
            (Op::Insert, _) => {
                return Err(invalid(
                    "payload",
                    "an insert needs the row as an object".into(),
                ));
            }
            (Op::Update, _) => {
                return Err(invalid(
                    "payload",
                    "an update needs a non-empty object of changed fields".into(),
                ));
            }
        }
        if let Some(id) = c.payload.get("id") {
            let matches = match id {
                Value::String(s) => *s == c.pk,
                Value::Number(n) => n.to_string() == c.pk,
                _ => false,
            };
            if !matches {
                return Err(invalid("payload", "payload.id differs from pk".into()));
            }
        }
        if payload_depth(&c.payload) > limits.max_payload_depth {
            return Err(SyncError::new(
                ErrorCode::PayloadTooDeep,
                format!(
                    "changes[{index}].payload: nested deeper than {} levels",
                    limits.max_payload_depth
                ),
            )
            .with_meta(meta("payload")));
        }
        let payload_text = serde_json::to_string(&c.payload)
            .map_err(|e| SyncError::internal(format!("payload does not serialize: {e}")))?;
        if payload_text.len() > limits.max_payload_bytes {
            return Err(SyncError::new(
                ErrorCode::ChangeTooLarge,
                format!(
                    "changes[{index}].payload: larger than {} bytes",
                    limits.max_payload_bytes
                ),
            )
            .with_meta(meta("payload")));
        }
        if self
            .inner
            .can_write
            .as_ref()
            .is_some_and(|f| !f(ctx, &c.model, &c))
        {
            {
                return Err(SyncError::forbidden(format!(
                    "changes[{index}]: not allowed to {} {}/{}",
                    c.op.as_str(),
                    c.model,
                    c.pk
                ))
                .with_meta(meta("pk")));
            }
        }
        Ok(ValidChange {
            updated_at: clock.to_string(),
            clock,
            payload_text,
            change: c,
        })
    }

    /// Changes after a cursor, for `ctx`'s tenant, filtered by `can_read`.
    pub async fn pull(
        &self,
        ctx: &Ctx,
        cursor: Option<&str>,
        limit: Option<u64>,
    ) -> Result<PullResponse, SyncError> {
        self.pull_with(
            ctx,
            PullOptions {
                cursor: cursor.map(str::to_owned),
                limit,
                wait: None,
            },
        )
        .await
    }

    /// [`Self::pull`] with every option, including the long-poll `wait`.
    pub async fn pull_with(&self, ctx: &Ctx, opts: PullOptions) -> Result<PullResponse, SyncError> {
        let (rows, cursor, has_more) = self.pull_entries(ctx, opts).await?;
        let inner = &self.inner;
        let mut changes = Vec::with_capacity(rows.len());
        for r in rows {
            let seq = r.seq;
            changes.push(r.into_pulled().map_err(|e| {
                SyncError::internal(format!("op_log payload of seq {seq} is not JSON: {e}"))
            })?);
        }
        if inner.can_read.is_some() {
            let rows = current_rows(inner, &ctx.tenant_id, &changes).await?;
            changes.retain(|c| inner.change_readable(ctx, c, &rows));
        }
        Ok(PullResponse {
            changes,
            cursor,
            has_more,
        })
    }

    /// A pull answer ready to serialize. Without a `can_read` hook nothing
    /// needs the payloads as values, so their stored JSON text is passed
    /// through rather than parsed and written again (a third of a page's
    /// server time).
    pub(crate) async fn pull_body(
        &self,
        ctx: &Ctx,
        opts: PullOptions,
    ) -> Result<PullBody, SyncError> {
        if self.inner.can_read.is_some() {
            return Ok(PullBody::Parsed(self.pull_with(ctx, opts).await?));
        }
        let (rows, cursor, has_more) = self.pull_entries(ctx, opts).await?;
        let mut changes = Vec::with_capacity(rows.len());
        for r in rows {
            let seq = r.seq;
            let payload = serde_json::value::RawValue::from_string(r.payload).map_err(|e| {
                SyncError::internal(format!("op_log payload of seq {seq} is not JSON: {e}"))
            })?;
            changes.push(RawChange {
                seq,
                op_id: r.op_id,
                model: r.model,
                pk: r.pk,
                op: r.op,
                payload,
                updated_at: r.updated_at,
                actor: r.actor,
            });
        }
        Ok(PullBody::Raw(RawPull {
            changes,
            cursor,
            has_more,
        }))
    }

    /// The log entries of a pull page, its cursor and `has_more`; waits
    /// for changes when `opts.wait` says so.
    async fn pull_entries(
        &self,
        ctx: &Ctx,
        opts: PullOptions,
    ) -> Result<(Vec<LogEntry>, String, bool), SyncError> {
        let inner = &self.inner;
        let after = match &opts.cursor {
            Some(c) => inner.cursors.decode(&ctx.tenant_id, c)?,
            None => 0,
        };
        let limit = opts
            .limit
            .unwrap_or(inner.limits.max_pull_limit)
            .clamp(1, inner.limits.max_pull_limit);
        let wait = opts.wait.unwrap_or_default().min(inner.limits.max_wait);
        if !wait.is_zero() {
            // The fan-out also relays commits of other instances to `head`.
            inner.fanout.ensure_started(&self.inner);
        }
        let deadline = Instant::now() + wait;
        let mut head_rx = inner.head.subscribe();
        loop {
            head_rx.borrow_and_update();
            // Read the committed head first, then only changes at or below it:
            // everything <= head has committed (see storage docs), so nothing
            // between `after` and `head` can appear later.
            let head = inner.storage.head().await?;
            if after > head {
                return Err(SyncError::new(
                    ErrorCode::CursorAhead,
                    "cursor is past the end of the log (the server's data was reset); bootstrap again",
                ));
            }
            let mut rows = inner
                .storage
                .select_changes_since(&ctx.tenant_id, after, head, limit.saturating_add(1))
                .await?;
            let mut has_more = rows.len() as u64 > limit;
            rows.truncate(limit as usize);
            // Bound the page by bytes too: a page of large payloads stops
            // early (never before its first change).
            let mut bytes = 0usize;
            if let Some(cut) = rows.iter().position(|r| {
                bytes += r.payload.len() + ENTRY_OVERHEAD;
                bytes > inner.limits.max_pull_bytes
            }) {
                let keep = cut.max(1);
                if keep < rows.len() {
                    rows.truncate(keep);
                    has_more = true;
                }
            }
            let next = match (has_more, rows.last()) {
                (true, Some(last)) => last.seq,
                _ => head,
            };
            if rows.is_empty() && !has_more && !wait.is_zero() && Instant::now() < deadline {
                let sleep = WAIT_RECHECK.min(deadline.saturating_duration_since(Instant::now()));
                let _ = tokio::time::timeout(sleep, head_rx.changed()).await;
                if Instant::now() < deadline || head_rx.has_changed().unwrap_or(false) {
                    continue;
                }
            }
            return Ok((rows, inner.cursors.encode(&ctx.tenant_id, next), has_more));
        }
    }

    /// A page of current rows of `model`, ordered by id, for bootstrapping a
    /// fresh replica. Keep the `cursor` of the first page and pull from it
    /// once every page is loaded.
    pub async fn snapshot(
        &self,
        ctx: &Ctx,
        model: &str,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SnapshotResponse, SyncError> {
        let inner = &self.inner;
        let page = self.snapshot_records(ctx, model, after, limit).await?;
        let mut rows = Vec::with_capacity(page.records.len());
        for r in page.records {
            let value: Value = serde_json::from_str(&r.value)
                .map_err(|e| SyncError::internal(format!("snapshot {} is not JSON: {e}", r.id)))?;
            let clocks: Value = serde_json::from_str(&r.clocks)
                .map_err(|e| SyncError::internal(format!("snapshot {} clocks: {e}", r.id)))?;
            if !inner.readable(ctx, model, &value) {
                continue;
            }
            rows.push(SnapshotRow {
                id: r.id,
                value,
                deleted: r.deleted,
                clocks,
            });
        }
        Ok(SnapshotResponse {
            model: model.to_owned(),
            rows,
            cursor: page.cursor,
            has_more: page.has_more,
            next_after: page.next_after,
        })
    }

    /// A snapshot page ready to serialize: like [`BetterSync::pull_body`],
    /// without a `can_read` hook the stored JSON of values and clocks is
    /// passed through rather than parsed and written again.
    pub(crate) async fn snapshot_body(
        &self,
        ctx: &Ctx,
        model: &str,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SnapshotBody, SyncError> {
        if self.inner.can_read.is_some() {
            return Ok(SnapshotBody::Parsed(
                self.snapshot(ctx, model, after, limit).await?,
            ));
        }
        let page = self.snapshot_records(ctx, model, after, limit).await?;
        let raw = |text: String, id: &str, what: &str| {
            serde_json::value::RawValue::from_string(text)
                .map_err(|e| SyncError::internal(format!("snapshot {id} {what}: {e}")))
        };
        let mut rows = Vec::with_capacity(page.records.len());
        for r in page.records {
            rows.push(RawSnapshotRow {
                value: raw(r.value, &r.id, "is not JSON")?,
                clocks: raw(r.clocks, &r.id, "clocks")?,
                deleted: r.deleted,
                id: r.id,
            });
        }
        Ok(SnapshotBody::Raw(RawSnapshot {
            model: model.to_owned(),
            rows,
            cursor: page.cursor,
            has_more: page.has_more,
            next_after: page.next_after,
        }))
    }

    /// One page of snapshot records of `model`, with the cursor it reflects.
    async fn snapshot_records(
        &self,
        ctx: &Ctx,
        model: &str,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SnapshotPage, SyncError> {
        let inner = &self.inner;
        if !self.knows_model(model) {
            return Err(SyncError::new(
                ErrorCode::UnknownModel,
                format!("unknown model {model:?}"),
            ));
        }
        let limit = limit
            .unwrap_or(inner.limits.max_snapshot_limit)
            .clamp(1, inner.limits.max_snapshot_limit);
        // Head first: the page then reflects at least every change <= head.
        let head = inner.storage.head().await?;
        let mut records = inner
            .storage
            .snapshot_page(&ctx.tenant_id, model, after, limit.saturating_add(1))
            .await?;
        let has_more = records.len() as u64 > limit;
        records.truncate(limit as usize);
        let next_after = has_more
            .then(|| records.last().map(|r| r.id.clone()))
            .flatten();
        Ok(SnapshotPage {
            records,
            cursor: inner.cursors.encode(&ctx.tenant_id, head),
            has_more,
            next_after,
        })
    }

    /// The current state of one row, `None` if it never existed or is deleted.
    pub async fn get(&self, ctx: &Ctx, model: &str, id: &str) -> Result<Option<Value>, SyncError> {
        let Some(r) = self
            .inner
            .storage
            .read_snapshot(&ctx.tenant_id, model, id)
            .await?
        else {
            return Ok(None);
        };
        if r.deleted {
            return Ok(None);
        }
        let value: Value = serde_json::from_str(&r.value)
            .map_err(|e| SyncError::internal(format!("snapshot {id} is not JSON: {e}")))?;
        Ok(self.inner.readable(ctx, model, &value).then_some(value))
    }
}

/// Current values of rows by `(model, pk)`; `None` for a deleted row.
pub(crate) type CurrentRows = std::collections::HashMap<(String, String), Option<Value>>;

/// The current values of the live rows these changes touch (one query).
pub(crate) async fn current_rows(
    inner: &Inner,
    tenant: &str,
    changes: &[PulledChange],
) -> Result<CurrentRows, SyncError> {
    let mut keys: Vec<(&str, &str)> = changes
        .iter()
        .filter(|c| c.op != Op::Delete)
        .map(|c| (c.model.as_str(), c.pk.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rows = CurrentRows::new();
    if keys.is_empty() {
        return Ok(rows);
    }
    for r in inner.storage.read_snapshots(tenant, &keys).await? {
        let value = if r.deleted {
            None
        } else {
            serde_json::from_str(&r.value).ok()
        };
        rows.insert((r.model, r.id), value);
    }
    Ok(rows)
}

/// Rebuild a row's merge state from its stored snapshot.
pub(crate) fn state_of(value: &str, clocks: &str) -> Option<RowState> {
    let value: Value = serde_json::from_str(value).ok()?;
    let clocks: Value = serde_json::from_str(clocks).ok()?;
    RowState::from_parts(&value, &clocks)
}

/// A page of snapshot records and what the answer says about it.
struct SnapshotPage {
    records: Vec<crate::storage::SnapshotRecord>,
    cursor: String,
    has_more: bool,
    next_after: Option<String>,
}

/// A snapshot answer as [`BetterSync::snapshot_body`] makes it.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum SnapshotBody {
    /// Values parsed (they went through `can_read`).
    Parsed(SnapshotResponse),
    /// Values and clocks passed through as stored.
    Raw(RawSnapshot),
}

/// [`SnapshotResponse`] with values and clocks as raw JSON text; the same
/// JSON.
#[derive(Debug, serde::Serialize)]
pub(crate) struct RawSnapshot {
    model: String,
    rows: Vec<RawSnapshotRow>,
    cursor: String,
    has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

/// [`SnapshotRow`] with value and clocks as raw JSON text.
#[derive(Debug, serde::Serialize)]
struct RawSnapshotRow {
    id: String,
    value: Box<serde_json::value::RawValue>,
    deleted: bool,
    clocks: Box<serde_json::value::RawValue>,
}

/// A pull answer as [`BetterSync::pull_body`] makes it.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum PullBody {
    /// Payloads parsed (they went through `can_read`).
    Parsed(PullResponse),
    /// Payloads passed through as stored.
    Raw(RawPull),
}

/// [`PullResponse`] with payloads as raw JSON text; the same JSON.
#[derive(Debug, serde::Serialize)]
pub(crate) struct RawPull {
    changes: Vec<RawChange>,
    cursor: String,
    has_more: bool,
}

/// [`crate::protocol::PulledChange`] with its payload as raw JSON text.
#[derive(Debug, serde::Serialize)]
struct RawChange {
    seq: i64,
    op_id: String,
    model: String,
    pk: String,
    op: Op,
    payload: Box<serde_json::value::RawValue>,
    updated_at: String,
    actor: String,
}
