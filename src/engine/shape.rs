//! A shape's bootstrap: the page of its rows, chosen by its filter in SQL,
//! with the cursor to follow it from (the same as a model's snapshot).

use serde_json::Value;

use super::{Engine, PullOptions};
use crate::auth::Ctx;
use crate::error::{ErrorCode, SyncError};
use crate::shape::{Bound, LookupValues, Shape};
use crate::storage::SnapshotRecord;
use better_sync_core::protocol::{SnapshotResponse, SnapshotRow};

impl Engine {
    /// The shape `name` bound to `ctx` and the subscription's `params` (a
    /// JSON object, or absent when the shape declares none).
    pub(crate) fn bind_shape<'a>(
        &'a self,
        ctx: &Ctx,
        name: &str,
        params: Option<&Value>,
    ) -> Result<(&'a Shape, Bound), SyncError> {
        let shape = self.shapes.get(name).ok_or_else(|| {
            SyncError::new(ErrorCode::UnknownShape, format!("unknown shape {name:?}"))
                .with_meta(serde_json::json!({ "shape": name }))
        })?;
        Ok((shape, Bound::new(shape, params, ctx)?))
    }

    /// A subscription's `params` as the query gives them: JSON text.
    pub(crate) fn shape_params(name: &str, text: Option<&str>) -> Result<Option<Value>, SyncError> {
        text.map(serde_json::from_str).transpose().map_err(|e| {
            SyncError::new(
                ErrorCode::InvalidShapeParams,
                format!("shape {name}: params is not JSON: {e}"),
            )
            .with_meta(serde_json::json!({ "shape": name }))
        })
    }

    /// Every current row of the shape (all pages), or of those of `ids` that
    /// are in it, as wire rows (filtered by `can_read`, encoded).
    pub(crate) async fn shape_rows(
        &self,
        ctx: &Ctx,
        shape: &Shape,
        bound: &Bound,
        ids: Option<&[&str]>,
    ) -> Result<Vec<SnapshotRow>, SyncError> {
        let backend = self.shape_backend()?;
        let mut condition = crate::shape::condition(backend, &shape.filter, bound, &ctx.tenant_id);
        if let Some(ids) = ids {
            condition = crate::shape::restrict_to_ids(backend, condition, ids);
        }
        let records = self.records_where(ctx, &shape.model, &condition).await?;
        self.wire_rows(ctx, &shape.model, records)
    }

    /// The backend shapes are evaluated on (a storage without SQL has none).
    fn shape_backend(&self) -> Result<sea_orm::DatabaseBackend, SyncError> {
        self.storage
            .database_backend()
            .ok_or_else(|| SyncError::internal("the storage cannot evaluate shapes"))
    }

    /// Every live snapshot record of `model` that `condition` holds for,
    /// read in pages of the snapshot limit.
    async fn records_where(
        &self,
        ctx: &Ctx,
        model: &str,
        condition: &crate::storage::SqlCondition,
    ) -> Result<Vec<SnapshotRecord>, SyncError> {
        let page = self.limits.max_snapshot_limit.max(1);
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let records = self
                .storage
                .snapshot_page_where(&ctx.tenant_id, model, condition, after.as_deref(), page)
                .await?;
            let full = records.len() as u64 == page;
            after = records.last().map(|r| r.id.clone());
            out.extend(records);
            if !full {
                return Ok(out);
            }
        }
    }

    /// The values of the shape's lookups for a subscriber, read by SQL
    /// (a lookup's own filter, nested lookups included, runs there).
    pub(crate) async fn lookup_values(
        &self,
        ctx: &Ctx,
        shape: &Shape,
        bound: &Bound,
    ) -> Result<LookupValues, SyncError> {
        let backend = self.shape_backend()?;
        let mut out = Vec::new();
        for lookup in crate::shape::top_lookups(&shape.filter) {
            let condition = crate::shape::condition(backend, &lookup.filter, bound, &ctx.tenant_id);
            let mut values = Vec::new();
            for r in self.records_where(ctx, &lookup.model, &condition).await? {
                let Ok(Value::Object(row)) = serde_json::from_str::<Value>(&r.value) else {
                    continue;
                };
                if let Some(v @ (Value::String(_) | Value::Number(_))) = row.get(&lookup.field) {
                    values.push(v.clone());
                }
            }
            out.push((lookup.clone(), values));
        }
        Ok(LookupValues::new(out))
    }

    /// Which of these current records are in the shape, judged in Rust
    /// with the subscriber's lookup values, as the rows readers receive
    /// (`can_read`, the wire serializer).
    pub(crate) fn shape_rows_among(
        &self,
        ctx: &Ctx,
        shape: &Shape,
        bound: &Bound,
        lookups: &LookupValues,
        records: Vec<SnapshotRecord>,
    ) -> Result<Vec<SnapshotRow>, SyncError> {
        let inside: Vec<SnapshotRecord> = records
            .into_iter()
            .filter(|r| {
                !r.deleted
                    && r.model == shape.model
                    && matches!(
                        serde_json::from_str::<Value>(&r.value),
                        Ok(Value::Object(row)) if lookups.holds(shape, bound, &row)
                    )
            })
            .collect();
        self.wire_rows(ctx, &shape.model, inside)
    }

    /// A page of the shape's current rows, ordered by id, filtered by
    /// `can_read`, in the wire form; keep the first page's cursor.
    pub(crate) async fn shape_snapshot(
        &self,
        ctx: &Ctx,
        name: &str,
        params: Option<&Value>,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SnapshotResponse, SyncError> {
        let (shape, bound) = self.bind_shape(ctx, name, params)?;
        let backend = self.shape_backend()?;
        let condition = crate::shape::condition(backend, &shape.filter, &bound, &ctx.tenant_id);
        let limit = limit
            .unwrap_or(self.limits.max_snapshot_limit)
            .clamp(1, self.limits.max_snapshot_limit);
        // Head first: the page then reflects at least every change <= head.
        let head = self.storage.head().await?;
        let mut records = self
            .storage
            .snapshot_page_where(
                &ctx.tenant_id,
                &shape.model,
                &condition,
                after,
                limit.saturating_add(1),
            )
            .await?;
        let has_more = records.len() as u64 > limit;
        records.truncate(limit as usize);
        let next_after = has_more
            .then(|| records.last().map(|r| r.id.clone()))
            .flatten();
        let rows = self.wire_rows(ctx, &shape.model, records)?;
        Ok(SnapshotResponse {
            model: shape.model.clone(),
            rows,
            cursor: self.cursors.encode(&ctx.tenant_id, head),
            has_more,
            next_after,
        })
    }
}

impl Engine {
    /// A pull of a shape (`GET B/pull?shape=..`): the rows of the shape's
    /// model that changed after the cursor, each as it is now: whole if it
    /// is in the shape (`rows`), its id if it is not (`retracts`: drop it
    /// if held). A page that touches a lookup's model answers `reset`: the
    /// client bootstraps the shape again from its snapshot, since
    /// memberships may have moved rows no page names.
    pub(crate) async fn shape_pull(
        &self,
        ctx: &Ctx,
        name: &str,
        params: Option<&Value>,
        opts: PullOptions,
    ) -> Result<Value, SyncError> {
        let (shape, bound) = self.bind_shape(ctx, name, params)?;
        let reset_all = opts.cursor.is_none();
        let (entries, cursor, has_more) = self.pull_entries(ctx, opts).await?;
        let lookups = shape.lookup_models();
        let reset = reset_all || entries.iter().any(|e| lookups.contains(&e.model.as_str()));
        let mut touched: Vec<&str> = entries
            .iter()
            .filter(|e| e.model == shape.model)
            .map(|e| e.pk.as_str())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let (rows, retracts) = if reset || touched.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let rows = self.shape_rows(ctx, shape, &bound, Some(&touched)).await?;
            let in_now: std::collections::HashSet<&str> =
                rows.iter().map(|r| r.id.as_str()).collect();
            let retracts: Vec<&str> = touched
                .iter()
                .copied()
                .filter(|id| !in_now.contains(id))
                .collect();
            let retracts: Vec<String> = retracts.into_iter().map(str::to_owned).collect();
            (rows, retracts)
        };
        Ok(serde_json::json!({
            "shape": shape.name(),
            "model": shape.model(),
            "changes": [],
            "rows": rows,
            "retracts": retracts,
            "reset": reset,
            "cursor": cursor,
            "has_more": has_more,
        }))
    }
}
