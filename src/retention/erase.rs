//! Erasure: a row's or a tenant's values removed for good.
//!
//! A row is erased in two steps. First a delete goes through the writer
//! like any change (actor [`ERASE_ACTOR`], a clock above every stamp the row
//! holds), so the snapshot becomes a tombstone without fields, every
//! subscriber receives the delete, and every instance's row cache moves on.
//! Then the row's older log entries are deleted, outside the log lock. A
//! client whose cursor is below them misses only changes of a row it will
//! see deleted; one that is offline with queued writes to the row sees them
//! lose to the delete.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::SyncError;
use crate::storage::{LogFilter, SnapshotRecord, Storage};
use crate::telemetry;
use crate::write::{ValidChange, Writer};
use better_sync_core::hlc::Hlc;
use better_sync_core::protocol::{Change, Op};

/// The actor of erasure's deletes.
pub(crate) const ERASE_ACTOR: &str = "better-sync:erase";
/// Rows erased per writer batch (and log rows deleted per transaction).
const ERASE_CHUNK: usize = 500;
/// Passes of a tenant erasure before it gives up on writes that keep coming.
const MAX_PASSES: usize = 5;

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasureReport {
    /// Rows erased (each got a delete that subscribers receive).
    pub rows: u64,
    /// Log entries deleted.
    pub log_deleted: u64,
    /// The log position of the last erasing delete (0: nothing to erase).
    pub seq: i64,
}

/// Whether a snapshot is what an erasure leaves: a tombstone without
/// fields, deleted by the eraser.
fn erased(r: &SnapshotRecord) -> bool {
    r.deleted
        && r.value == "{}"
        && serde_json::from_str::<Value>(&r.clocks)
            .ok()
            .and_then(|c| c.get("t")?.get(1)?.as_str().map(|a| a == ERASE_ACTOR))
            .unwrap_or(false)
}

/// The largest clock of a snapshot's stamps (`{"t", "i", "f": {..}}`, each
/// stamp `[clock, actor, op_id]`).
fn max_clock(clocks: &str) -> Option<Hlc> {
    let v: Value = serde_json::from_str(clocks).ok()?;
    let stamp = |s: &Value| s.get(0)?.as_str()?.parse::<Hlc>().ok();
    let mut all: Vec<Hlc> = ["t", "i"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(stamp))
        .collect();
    if let Some(fields) = v.get("f").and_then(Value::as_object) {
        all.extend(fields.values().filter_map(stamp));
    }
    all.into_iter().max()
}

fn op_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&super::now_ms().to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("erase-{hex}")
}

/// The deletes that erase `rows`, each with a clock that beats every stamp
/// the row holds and any write a client may still send with a clock up to
/// `skew_ms` ahead of now.
fn erasing_deletes(rows: &[&SnapshotRecord], skew_ms: i64) -> Vec<ValidChange> {
    let floor = Hlc::new(super::now_ms().saturating_add(skew_ms), 0);
    rows.iter()
        .map(|r| {
            let top = max_clock(&r.clocks).map_or(floor, |c| c.max(floor));
            let clock = if top.counter() == u16::MAX {
                Hlc::new(top.millis() + 1, 0)
            } else {
                Hlc::new(top.millis(), top.counter() + 1)
            };
            let updated_at = clock.to_string();
            ValidChange {
                change: Change {
                    op_id: op_id(),
                    model: r.model.clone(),
                    pk: r.id.clone(),
                    op: Op::Delete,
                    payload: Value::Null,
                    updated_at: updated_at.clone(),
                    actor: ERASE_ACTOR.to_owned(),
                },
                clock,
                updated_at,
                payload_text: "null".to_owned(),
            }
        })
        .collect()
}

/// Commit the erasing deletes of `rows`; the `seq` each got, by key.
async fn commit_deletes(
    storage: &std::sync::Arc<dyn Storage>,
    writer: &Writer,
    tenant: &str,
    rows: &[&SnapshotRecord],
    skew_ms: i64,
) -> Result<HashMap<(String, String), i64>, SyncError> {
    let mut seqs = HashMap::new();
    for chunk in rows.chunks(ERASE_CHUNK) {
        let changes = erasing_deletes(chunk, skew_ms);
        let keys: Vec<(String, String)> = changes
            .iter()
            .map(|c| (c.change.model.clone(), c.change.pk.clone()))
            .collect();
        let (results, _) = writer
            .submit(storage.clone(), tenant.to_owned(), changes)
            .await?;
        for (key, result) in keys.into_iter().zip(results) {
            seqs.insert(key, result.seq);
        }
    }
    metrics::counter!(telemetry::ERASED_ROWS).increment(seqs.len() as u64);
    Ok(seqs)
}

/// Erase rows of one tenant: a delete each (subscribers receive it), then
/// their older log entries. Rows without a snapshot are skipped.
pub(crate) async fn erase_rows(
    storage: &std::sync::Arc<dyn Storage>,
    writer: &Writer,
    tenant: &str,
    keys: &[(&str, &str)],
    skew_ms: i64,
) -> Result<ErasureReport, SyncError> {
    let Some(r) = storage.retention() else {
        return Err(SyncError::internal("this storage does not support erasure"));
    };
    let snapshots = storage.read_snapshots(tenant, keys).await?;
    let refs: Vec<&SnapshotRecord> = snapshots.iter().collect();
    let seqs = commit_deletes(storage, writer, tenant, &refs, skew_ms).await?;
    let mut report = ErasureReport {
        rows: seqs.len() as u64,
        ..ErasureReport::default()
    };
    for ((model, pk), seq) in &seqs {
        report.seq = report.seq.max(*seq);
        let filter = LogFilter {
            row: Some((model, pk)),
            keep_actor: None,
        };
        let mut after = 0;
        loop {
            let step = r
                .delete_log(tenant, after, seq - 1, filter, 10 * ERASE_CHUNK as u64)
                .await?;
            report.log_deleted += step.deleted;
            match step.next {
                Some(n) => after = n,
                None => break,
            }
        }
    }
    r.reclaim_space().await?;
    Ok(report)
}

/// Erase every row of a tenant: a delete for each (subscribers receive
/// them), then every log entry of the tenant but those deletes. Writes that
/// land meanwhile are erased by a further pass; after
/// `MAX_PASSES` passes that still find new writes it gives up with an
/// error (stop the tenant's writes first, e.g. in the `authorize` hook).
pub(crate) async fn erase_tenant(
    storage: &std::sync::Arc<dyn Storage>,
    writer: &Writer,
    tenant: &str,
    skew_ms: i64,
) -> Result<ErasureReport, SyncError> {
    let Some(r) = storage.retention() else {
        return Err(SyncError::internal("this storage does not support erasure"));
    };
    let mut report = ErasureReport::default();
    for _ in 0..MAX_PASSES {
        let mut erased_now = 0;
        let mut after: Option<(String, String)> = None;
        loop {
            let key = after.as_ref().map(|(m, id)| (m.as_str(), id.as_str()));
            let page = storage
                .tenant_snapshot_page(tenant, key, ERASE_CHUNK as u64)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.model.clone(), last.id.clone()));
            let todo: Vec<&SnapshotRecord> = page.iter().filter(|s| !erased(s)).collect();
            let seqs = commit_deletes(storage, writer, tenant, &todo, skew_ms).await?;
            erased_now += seqs.len() as u64;
            report.seq = report.seq.max(seqs.values().copied().max().unwrap_or(0));
            if page.len() < ERASE_CHUNK {
                break;
            }
        }
        report.rows += erased_now;
        if erased_now == 0 {
            r.reclaim_space().await?;
            return Ok(report);
        }
        // Everything of the tenant up to the last delete but the deletes
        // themselves; a write that landed meanwhile lost its entry here and
        // is erased by the next pass.
        let filter = LogFilter {
            row: None,
            keep_actor: Some(ERASE_ACTOR),
        };
        let mut from = 0;
        loop {
            let step = r
                .delete_log(tenant, from, report.seq, filter, 10 * ERASE_CHUNK as u64)
                .await?;
            report.log_deleted += step.deleted;
            match step.next {
                Some(n) => from = n,
                None => break,
            }
        }
    }
    Err(SyncError::new(
        crate::error::ErrorCode::Unavailable,
        format!(
            "tenant {tenant:?} kept being written while it was erased ({MAX_PASSES} passes); \
             stop its writes (e.g. refuse it in the authorize hook) and erase again"
        ),
    ))
}
