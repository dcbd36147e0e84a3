//! Shape subscriptions of a WebSocket session (PROTOCOL.md 16.3): the
//! shape's rows at the start, then per commit the touched rows whole while
//! in the shape and retractions of held rows that left it.

use std::collections::{HashMap, HashSet};

use futures_util::Sink;
use serde_json::json;

use super::super::WsFrame;
use super::super::frames::{error_frame, tag, text_frame};
use super::{Session, Stop, Subscription};
use crate::auth::Ctx;
use crate::error::SyncError;
use crate::live::Batch;
use crate::shape::{Bound, LookupValues, Shape};
use crate::storage::SnapshotRecord;
use better_sync_core::protocol::SnapshotRow;

/// A shape subscription's state: the shape bound to its parameters and the
/// ids of the rows the subscriber holds through it (what a retraction may
/// name).
pub(super) struct ShapeView {
    pub(super) shape: Shape,
    pub(super) bound: Bound,
    pub(super) held: HashSet<String>,
    /// Its lookups' values, read when first needed and again when a commit
    /// touches a lookup's model: touched rows are judged in Rust with them.
    pub(super) lookups: Option<LookupValues>,
}

/// Most rows one `rows` message carries.
const ROWS_PER_FRAME: usize = 500;
impl Session<'_> {
    /// A shape subscription's start (and restart after falling behind):
    /// every row of the shape, the first message flagged `reset` (the
    /// subscriber drops the rows of this shape it is not sent), then
    /// `synced` at the head read before the rows.
    pub(super) async fn shape_bootstrap<K>(
        &self,
        ctx: &Ctx,
        sub: &mut Subscription,
        out: &mut K,
    ) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        let Some(view) = sub.shape.as_mut() else {
            return Ok(());
        };
        let engine = self.engine;
        let read = async {
            let head = engine.storage.head().await?;
            let rows = engine
                .shape_rows(ctx, &view.shape, &view.bound, None)
                .await?;
            Ok::<_, SyncError>((head, rows))
        };
        let (head, rows) = match read.await {
            Ok(r) => r,
            Err(e) => {
                self.send(out, error_frame(&e, Some(&sub.id))).await?;
                return Err(Stop("catch_up_failed"));
            }
        };
        let cursor = engine.cursors.encode(&ctx.tenant_id, head);
        view.held = rows.iter().map(|r| r.id.clone()).collect();
        // Memberships may have moved while the session was behind.
        view.lookups = None;
        let mut first = true;
        for chunk in rows.chunks(ROWS_PER_FRAME) {
            let frame = rows_frame(&sub.id, view, chunk, &[], &cursor, first);
            first = false;
            self.send(out, frame).await?;
        }
        if first {
            let frame = rows_frame(&sub.id, view, &[], &[], &cursor, true);
            self.send(out, frame).await?;
        }
        sub.cursor = head;
        self.info.sent_up_to(head);
        let mut synced = json!({"type": "synced", "cursor": cursor});
        tag(&mut synced, &sub.id);
        self.send(out, text_frame(&synced)).await
    }

    /// What committed batches change in a shape subscription's rows: each
    /// row of the shape's model they touch is judged in the shape or not
    /// (sent whole if in the shape, retracted if held and not any more); a
    /// batch touching a lookup's model evaluates the whole shape again
    /// (membership moves every affected row). A touched row is judged on its
    /// state read after its commit; one already changed by a later commit
    /// waits for that commit (see `touched_in_shape`).
    pub(super) async fn deliver_shape<K>(
        &self,
        ctx: &Ctx,
        batches: &[std::sync::Arc<Batch>],
        sub: &mut Subscription,
        out: &mut K,
    ) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        let last = batches.last().map_or(0, |b| b.last_seq());
        let Some(view) = sub.shape.as_mut() else {
            return Ok(());
        };
        if last <= sub.cursor {
            return Ok(());
        }
        let lookups = view.shape.lookup_models();
        let mut touched: Vec<&str> = Vec::new();
        let mut membership = false;
        for c in batches
            .iter()
            .flat_map(|b| b.changes.iter())
            .filter(|c| c.seq > sub.cursor)
        {
            if c.model == view.shape.model() {
                touched.push(&c.pk);
            }
            membership |= lookups.contains(&c.model.as_str());
        }
        touched.sort_unstable();
        touched.dedup();
        let mut later: HashSet<String> = HashSet::new();
        let now = if membership {
            // Memberships moved: the whole shape by SQL, and its lookups again.
            view.lookups = None;
            self.engine
                .shape_rows(ctx, &view.shape, &view.bound, None)
                .await
        } else if !touched.is_empty() {
            self.touched_in_shape(ctx, batches, (sub.cursor, last), view, &mut later)
                .await
        } else {
            Ok(Vec::new())
        };
        let now = match now {
            Ok(rows) => rows,
            Err(e) => {
                self.send(out, error_frame(&e, Some(&sub.id))).await?;
                return Err(Stop("shape_failed"));
            }
        };
        let in_now: HashSet<&str> = now.iter().map(|r| r.id.as_str()).collect();
        // Out: held rows that are not in it now (of those evaluated).
        let retracts: Vec<String> = if membership {
            view.held
                .iter()
                .filter(|id| !in_now.contains(id.as_str()))
                .cloned()
                .collect()
        } else {
            touched
                .iter()
                .filter(|id| {
                    view.held.contains(**id) && !in_now.contains(**id) && !later.contains(**id)
                })
                .map(|id| (*id).to_owned())
                .collect()
        };
        // In: rows that moved in, and held rows a commit changed.
        let touched_set: HashSet<&str> = touched.iter().copied().collect();
        let rows: Vec<SnapshotRow> = now
            .into_iter()
            .filter(|r| !view.held.contains(&r.id) || touched_set.contains(r.id.as_str()))
            .collect();
        for id in &retracts {
            view.held.remove(id);
        }
        view.held.extend(rows.iter().map(|r| r.id.clone()));
        sub.cursor = last;
        if rows.is_empty() && retracts.is_empty() {
            return Ok(());
        }
        let cursor = self.engine.cursors.encode(&ctx.tenant_id, last);
        let frame = rows_frame(&sub.id, view, &rows, &retracts, &cursor, false);
        self.send(out, frame).await?;
        self.info.sent_up_to(last);
        Ok(())
    }
}

impl Session<'_> {
    /// The rows of the shape's model that `batches` touched (in `(cursor,
    /// last]`) and that are in the shape now: each judged in Rust on its
    /// record read after the last batch touching it (one read a batch,
    /// shared by every subscriber), with the subscriber's lookup values.
    ///
    /// A record already changed by a commit after `last` is left for that
    /// commit's delivery (its id goes in `later`): judged now, with lookup
    /// values that may predate a membership removed in between, it could
    /// show data written after the subscriber lost access.
    async fn touched_in_shape(
        &self,
        ctx: &Ctx,
        batches: &[std::sync::Arc<Batch>],
        (cursor, last): (i64, i64),
        view: &mut ShapeView,
        later: &mut HashSet<String>,
    ) -> Result<Vec<SnapshotRow>, SyncError> {
        let engine = self.engine;
        if view.lookups.is_none() {
            let values = engine.lookup_values(ctx, &view.shape, &view.bound).await?;
            view.lookups = Some(values);
        }
        let model = view.shape.model();
        let mut latest: HashMap<String, SnapshotRecord> = HashMap::new();
        for batch in batches {
            let ids: Vec<&str> = batch
                .changes
                .iter()
                .filter(|c| c.seq > cursor && c.model == model)
                .map(|c| c.pk.as_str())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let records = batch
                .touched_records(engine.storage.as_ref(), &ctx.tenant_id)
                .await?;
            for id in ids {
                match records.get(&(model.to_owned(), id.to_owned())) {
                    Some(r) => latest.insert(id.to_owned(), r.clone()),
                    // Gone (erased): not in the shape.
                    None => latest.remove(id),
                };
            }
        }
        latest.retain(|id, r| {
            let now = r.seq <= last;
            if !now {
                later.insert(id.clone());
            }
            now
        });
        let lookups = view.lookups.as_ref().expect("read above");
        let mut records: Vec<SnapshotRecord> = latest.into_values().collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        engine.shape_rows_among(ctx, &view.shape, &view.bound, lookups, records)
    }
}

/// A shape subscription's `rows` message: rows that are (now) in the shape,
/// whole, and ids of held rows that left it.
fn rows_frame(
    id: &str,
    view: &ShapeView,
    rows: &[SnapshotRow],
    retracts: &[String],
    cursor: &str,
    reset: bool,
) -> WsFrame {
    let mut v = json!({
        "type": "rows",
        "shape": view.shape.name(),
        "model": view.shape.model(),
        "rows": rows,
        "retracts": retracts,
        "cursor": cursor,
    });
    if reset {
        v["reset"] = json!(true);
    }
    tag(&mut v, id);
    text_frame(&v)
}
