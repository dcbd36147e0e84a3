//! The merge of a group's changes into its rows' states: sequence numbers,
//! log entries, per-batch results, and replays recognised by op id.

use std::collections::HashMap;

use super::{Pending, RowKey, ValidChange};
use crate::error::{ErrorCode, SyncError};
use crate::storage::{LogEntry, SnapshotRecord};
use better_sync_core::conflict::{RowState, Stamp};
use better_sync_core::protocol::ChangeResult;

/// Per batch of a group: its results, or why it was refused.
pub(super) type Outcomes = Vec<Result<Vec<ChangeResult>, SyncError>>;

/// The state of each row a group touches, and the sequence number of the
/// last change that moved it (`None`: unchanged).
pub(super) type Rows = HashMap<RowKey, (RowState, Option<i64>)>;

/// Whether a logged entry is this change sent again. It compares what the
/// change would store with what was stored: the canonical clock and payload
/// texts, both written by the same serializer from the parsed change, so a
/// retry is recognised whatever its representation (key order, escapes,
/// exponent form), and a parse of the stored text never stands in for it.
pub(super) fn same_change(e: &LogEntry, v: &ValidChange) -> bool {
    let c = &v.change;
    e.model == c.model
        && e.pk == c.pk
        && e.op == c.op
        && e.actor == c.actor
        && e.updated_at == v.updated_at
        && e.payload == v.payload_text
}

/// The rows of a commit with the length of their texts, for [`Known`].
pub(super) fn with_sizes(
    rows: Rows,
    sizes: &HashMap<RowKey, usize>,
) -> impl Iterator<Item = (RowKey, RowState, usize)> + '_ {
    rows.into_iter().map(|(key, (state, _))| {
        let bytes = sizes.get(&key).copied().unwrap_or(0);
        (key, state, bytes)
    })
}

pub(super) fn snapshot_record(
    (tenant_id, model, id): &RowKey,
    state: &RowState,
    seq: i64,
) -> SnapshotRecord {
    SnapshotRecord {
        tenant_id: tenant_id.clone(),
        model: model.clone(),
        id: id.clone(),
        value: state.value_text(),
        clocks: state.clocks_text(),
        deleted: !state.is_live(),
        seq,
    }
}

/// Fold a group's changes into `rows`, numbering them from `head + 1`:
/// per batch its results (or why it was refused), the log entries, and the
/// last sequence number. `logged` holds the op ids already in the log (by
/// tenant) and gains the group's own, so that a change sent twice in one
/// group is applied once.
pub(super) fn merge(
    group: &[Pending],
    rows: &mut Rows,
    logged: &mut HashMap<(String, String), LogEntry>,
    head: i64,
) -> (Outcomes, Vec<LogEntry>, i64) {
    let op_key = |tenant: &str, v: &ValidChange| (tenant.to_owned(), v.change.op_id.clone());
    let mut seq = head;
    let mut entries = Vec::new();
    let mut outcomes = Vec::with_capacity(group.len());
    'batch: for p in group {
        // A reused op id with other content fails its whole batch before
        // anything of the batch is applied.
        for (index, v) in p.changes.iter().enumerate() {
            if let Some(e) = logged.get(&op_key(&p.tenant, v))
                && !same_change(e, v)
            {
                outcomes.push(Err(SyncError::new(
                    ErrorCode::OpIdConflict,
                    format!(
                        "op_id {:?} was already used for a different change",
                        v.change.op_id
                    ),
                )
                .with_meta(
                    serde_json::json!({ "index": index, "op_id": v.change.op_id }),
                )));
                continue 'batch;
            }
        }
        let mut results = Vec::with_capacity(p.changes.len());
        for v in &p.changes {
            let c = &v.change;
            if let Some(e) = logged.get(&op_key(&p.tenant, v)) {
                results.push(ChangeResult {
                    op_id: c.op_id.clone(),
                    status: "applied".into(),
                    seq: e.seq,
                    duplicate: true,
                });
                continue;
            }
            seq += 1;
            let key = (p.tenant.clone(), c.model.clone(), c.pk.clone());
            let (state, dirty) = rows.entry(key).or_default();
            let stamp = Stamp::new(v.clock, c.actor.clone(), c.op_id.clone());
            if state.apply(c.op, &c.payload, &stamp) {
                *dirty = Some(seq);
            }
            let entry = LogEntry {
                seq,
                op_id: c.op_id.clone(),
                tenant_id: p.tenant.clone(),
                model: c.model.clone(),
                pk: c.pk.clone(),
                op: c.op,
                actor: c.actor.clone(),
                updated_at: v.updated_at.clone(),
                payload: v.payload_text.clone(),
            };
            logged.insert(op_key(&p.tenant, v), entry.clone());
            entries.push(entry);
            results.push(ChangeResult {
                op_id: c.op_id.clone(),
                status: "applied".into(),
                seq,
                duplicate: false,
            });
        }
        outcomes.push(Ok(results));
    }
    (outcomes, entries, seq)
}

/// Rebuild a row's merge state from its stored snapshot.
pub(super) fn state_of(value: &str, clocks: &str) -> Option<RowState> {
    let value: serde_json::Value = serde_json::from_str(value).ok()?;
    let clocks: serde_json::Value = serde_json::from_str(clocks).ok()?;
    RowState::from_parts(&value, &clocks)
}
