//! The read paths: pull (with the long-poll wait), snapshot pages and
//! single rows, each filtered by `can_read`. Without a `can_read` hook
//! nothing needs the values, so pull and snapshot answers pass the stored
//! JSON text through ([`PullBody::Raw`], [`SnapshotBody::Raw`]) rather than
//! parse it and write it again (a third of a page's server time).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Engine;
use crate::access::current_rows;
use crate::auth::Ctx;
use crate::error::{ErrorCode, SyncError};
use crate::lifecycle::Work;
use crate::limits::ENTRY_OVERHEAD;
use crate::storage::LogEntry;
use crate::telemetry;
use better_sync_core::protocol::{Op, PullResponse, SnapshotResponse, SnapshotRow};

/// Options of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// Cursor from the previous pull; `None` pulls from the start.
    pub cursor: Option<String>,
    /// Most changes to return (capped by [`crate::limits::Limits::max_pull_limit`]).
    pub limit: Option<u64>,
    /// Long-poll: with nothing to return, wait up to this long for a commit.
    pub wait: Option<Duration>,
}

/// How often a long-poll re-reads the storage head, to see commits made by
/// other instances sharing the database.
const WAIT_RECHECK: Duration = Duration::from_millis(500);

impl Engine {
    /// Changes after a cursor, for `ctx`'s tenant, filtered by `can_read`,
    /// with every option, including the long-poll `wait`.
    pub(crate) async fn pull_with(
        &self,
        ctx: &Ctx,
        opts: PullOptions,
    ) -> Result<PullResponse, SyncError> {
        let (rows, cursor, has_more) = self.pull_entries(ctx, opts).await?;
        let inner = self;
        let mut changes = Vec::with_capacity(rows.len());
        for r in rows {
            let seq = r.seq;
            changes.push(r.into_pulled().map_err(|e| {
                SyncError::internal(format!("op_log payload of seq {seq} is not JSON: {e}"))
            })?);
        }
        if inner.read.filters() {
            let rows = current_rows(inner.storage.as_ref(), &ctx.tenant_id, &changes).await?;
            changes.retain(|c| inner.read.change_readable(ctx, c, &rows));
        }
        for c in &mut changes {
            inner.wire.encode(&c.model, &mut c.payload);
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
        if self.read.filters() {
            return Ok(PullBody::Parsed(self.pull_with(ctx, opts).await?));
        }
        let (rows, cursor, has_more) = self.pull_entries(ctx, opts).await?;
        let mut changes = Vec::with_capacity(rows.len());
        for r in rows {
            let seq = r.seq;
            let text = self.wire.encode_text(&r.model, r.payload);
            let payload = serde_json::value::RawValue::from_string(text).map_err(|e| {
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
    pub(super) async fn pull_entries(
        &self,
        ctx: &Ctx,
        opts: PullOptions,
    ) -> Result<(Vec<LogEntry>, String, bool), SyncError> {
        let inner = self;
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
            inner.fanout.ensure_started();
        }
        let deadline = Instant::now() + wait;
        let mut head_rx = inner.fanout.head.subscribe();
        let _working = (!wait.is_zero()).then(|| inner.lifecycle.start(Work::LongPoll));
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
            // A draining server answers at once: the client long-polls
            // again, at another instance.
            let draining = inner.lifecycle.is_draining();
            if rows.is_empty()
                && !has_more
                && !wait.is_zero()
                && !draining
                && Instant::now() < deadline
            {
                let sleep = WAIT_RECHECK.min(deadline.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = tokio::time::timeout(sleep, head_rx.changed()) => {}
                    () = inner.lifecycle.draining() => {}
                }
                if Instant::now() < deadline || head_rx.has_changed().unwrap_or(false) {
                    continue;
                }
            }
            // After the read (the horizon rule): a compaction that deleted
            // anything this page should have held raised the horizon first.
            self.check_horizon(&ctx.tenant_id, after).await?;
            let kind = if wait.is_zero() { "pull" } else { "long_poll" };
            metrics::counter!(telemetry::PULLS, "kind" => kind).increment(1);
            metrics::counter!(telemetry::PULLED_CHANGES).increment(rows.len() as u64);
            let page_bytes: usize = rows.iter().map(|r| r.payload.len() + ENTRY_OVERHEAD).sum();
            metrics::counter!(telemetry::PULLED_BYTES).increment(page_bytes as u64);
            return Ok((rows, inner.cursors.encode(&ctx.tenant_id, next), has_more));
        }
    }

    /// Refuse a cursor below the tenant's horizon: changes after it may have
    /// been compacted away.
    pub(crate) async fn check_horizon(&self, tenant: &str, after: i64) -> Result<(), SyncError> {
        let Some(r) = self.storage.retention() else {
            return Ok(());
        };
        let horizon = r.horizon(tenant).await?;
        if after < horizon {
            metrics::counter!(telemetry::STALE_CURSORS).increment(1);
            return Err(SyncError::new(
                ErrorCode::CursorStale,
                "the changes after this cursor were compacted away (the server keeps a bounded \
                 log); bootstrap again from the snapshot, keep your queued changes and push them",
            ));
        }
        Ok(())
    }

    /// A page of current rows of `model`, ordered by id, for bootstrapping a
    /// fresh replica. Keep the `cursor` of the first page and pull from it
    /// once every page is loaded.
    pub(crate) async fn snapshot(
        &self,
        ctx: &Ctx,
        model: &str,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SnapshotResponse, SyncError> {
        let page = self.snapshot_records(ctx, model, after, limit).await?;
        let rows = self.wire_rows(ctx, model, page.records)?;
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
        if self.read.filters() {
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
            let (value, clocks) = self.wire.encode_row_text(model, r.value, r.clocks);
            rows.push(RawSnapshotRow {
                value: raw(value, &r.id, "is not JSON")?,
                clocks: raw(clocks, &r.id, "clocks")?,
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
        let inner = self;
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

    /// Snapshot records as the rows readers receive: each filtered by
    /// `can_read`, then encoded by the model's wire serializer.
    pub(super) fn wire_rows(
        &self,
        ctx: &Ctx,
        model: &str,
        records: Vec<crate::storage::SnapshotRecord>,
    ) -> Result<Vec<SnapshotRow>, SyncError> {
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            let mut value: Value = serde_json::from_str(&r.value)
                .map_err(|e| SyncError::internal(format!("snapshot {} is not JSON: {e}", r.id)))?;
            let mut clocks: Value = serde_json::from_str(&r.clocks)
                .map_err(|e| SyncError::internal(format!("snapshot {} clocks: {e}", r.id)))?;
            if !self.read.readable(ctx, model, &value) {
                continue;
            }
            self.wire.encode_row(model, &mut value, &mut clocks);
            rows.push(SnapshotRow {
                id: r.id,
                value,
                deleted: r.deleted,
                clocks,
            });
        }
        Ok(rows)
    }

    /// The current state of one row, `None` if it never existed or is deleted.
    pub(crate) async fn get(
        &self,
        ctx: &Ctx,
        model: &str,
        id: &str,
    ) -> Result<Option<Value>, SyncError> {
        let Some(r) = self
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
        Ok(self.read.readable(ctx, model, &value).then_some(value))
    }
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

impl RawPull {
    /// The WebSocket `changes` message of subscription `id` with the changes
    /// `wants(model, seq)` keeps, payloads as stored (no value tree made and
    /// serialized again; `None` when it keeps none), the page's cursor and
    /// `has_more`. Consumes the page, so a sender waiting for room in its
    /// outgoing budget holds the message only, not the page beside it.
    pub(crate) fn into_changes_message(
        self,
        id: &str,
        wants: impl Fn(&str, i64) -> bool,
    ) -> Result<(Option<String>, String, bool), SyncError> {
        #[derive(serde::Serialize)]
        struct Message<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            changes: Vec<&'a RawChange>,
            cursor: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            id: &'a str,
        }
        let changes: Vec<&RawChange> = self
            .changes
            .iter()
            .filter(|c| wants(&c.model, c.seq))
            .collect();
        // A message that cannot be written fails the catch-up rather than
        // let its cursor pass changes that were never sent.
        let text = if changes.is_empty() {
            None
        } else {
            let message = Message {
                kind: "changes",
                changes,
                cursor: &self.cursor,
                id,
            };
            Some(serde_json::to_string(&message).map_err(|e| {
                SyncError::internal(format!("a changes message could not be written: {e}"))
            })?)
        };
        Ok((text, self.cursor, self.has_more))
    }
}

/// [`better_sync_core::protocol::PulledChange`] with its payload as raw JSON text.
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
