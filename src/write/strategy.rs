//! The three ways a group commits, tried in order (ARCHITECTURE.md, "The
//! write path"):
//!
//! 1. **From the row cache** ([`commit_known`]): every row the group touches
//!    is in the writer's row cache (or is an insert of a row it has not
//!    seen), so nothing is read; one storage call
//!    ([`crate::storage::Storage::commit_if_head`]) writes it all if the head has not
//!    moved. Most commits of a single instance take this path.
//! 2. **Optimistic** ([`attempt`] without look-up): read the rows under the
//!    log lock and insert assuming no op id was logged before; a replayed op
//!    id rolls the attempt back.
//! 3. **Look up first** ([`attempt`] with look-up): op ids are looked up
//!    before anything is written, so replays are answered as duplicates.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tracing::Instrument;

use super::Pending;
use super::merge::{Outcomes, Rows, merge, snapshot_record, state_of, with_sizes};
use super::row_cache::RowCache;
use crate::error::SyncError;
use crate::live::Handoff;
use crate::materialize::Materializers;
use crate::storage::{LogEntry, SnapshotRecord, Storage, StorageError, Writes};
use crate::telemetry;
use better_sync_core::conflict::RowState;
use better_sync_core::protocol::Op;

pub(super) async fn commit_group(
    storage: &dyn Storage,
    tables: &Materializers,
    handoff: &Handoff,
    known: &mut RowCache,
    group: Vec<Pending>,
) {
    let start = Instant::now();
    let changes: usize = group.iter().map(|p| p.changes.len()).sum();
    // One push can be followed from its request to this commit.
    let span = tracing::info_span!(
        "sync.commit",
        batches = group.len(),
        changes,
        path = tracing::field::Empty,
        head = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    for p in &group {
        span.follows_from(&p.span);
    }
    let committed = try_commit(storage, tables, known, &group)
        .instrument(span.clone())
        .await;
    if committed.is_err() {
        // Whether it reached the database is unknown.
        known.forget();
    }
    let path = committed.as_ref().map_or("failed", |c| c.path.as_str());
    span.record("path", path);
    metrics::counter!(telemetry::COMMIT_GROUPS, "path" => path).increment(1);
    metrics::histogram!(telemetry::COMMIT_GROUP_CHANGES).record(changes as f64);
    metrics::histogram!(telemetry::COMMIT_SECONDS, "path" => path).record(start.elapsed());
    match committed {
        Ok(Committed {
            outcomes,
            head,
            entries,
            ..
        }) => {
            span.record("head", head);
            metrics::counter!(telemetry::CHANGES_COMMITTED).increment(entries.len() as u64);
            metrics::gauge!(telemetry::LOG_HEAD).set(head as f64);
            // Subscribers may hear of the commit before its pushers do.
            handoff.offer(entries, span.clone());
            for (p, outcome) in group.into_iter().zip(outcomes) {
                let _ = p.reply.send(outcome.map(|r| (r, head)));
            }
        }
        Err(e) => {
            span.record("error", tracing::field::display(&e));
            let err = SyncError::from(e);
            for p in group {
                let _ = p.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Which of the three ways committed a group (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommitPath {
    /// From the row cache, with no read.
    FromCache,
    /// Rows read under the lock, op ids assumed new.
    Optimistic,
    /// Op ids looked up first.
    LookUpFirst,
}

impl CommitPath {
    /// The path's name in metrics and spans.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::FromCache => "from_cache",
            Self::Optimistic => "optimistic",
            Self::LookUpFirst => "look_up_first",
        }
    }
}

/// What a group's commit did.
pub(super) struct Committed {
    /// Which way it committed.
    pub(super) path: CommitPath,
    /// Per batch: its results, or why it was refused.
    pub(super) outcomes: Outcomes,
    /// The log head after the commit.
    pub(super) head: i64,
    /// The entries it appended, in sequence order.
    pub(super) entries: Vec<LogEntry>,
}

/// Commit a group: without reads when the writer knows every row it
/// touches; else optimistically, as if no op id had been logged before (the
/// common case: one statement less, and on Postgres no op id lookup for the
/// planner to get wrong); if the log turns out to hold one (a client
/// re-sending a push whose answer it lost), that attempt is rolled back and
/// the group is committed again with op ids looked up first.
pub(super) async fn try_commit(
    storage: &dyn Storage,
    tables: &Materializers,
    known: &mut RowCache,
    group: &[Pending],
) -> Result<Committed, StorageError> {
    if let Some(done) = commit_known(storage, tables, known, group).await? {
        return Ok(done);
    }
    if let Some(done) = attempt(storage, tables, known, group, false).await? {
        return Ok(done);
    }
    attempt(storage, tables, known, group, true)
        .await?
        .ok_or_else(|| StorageError::Corrupt("op ids logged while the log was locked".into()))
}

/// A commit from what the writer knows, with no read; `None` when some row
/// is not known (and not an insert's), or the storage found that something
/// moved (another writer committed, an op id is logged, a row taken for new
/// exists): nothing was written then.
pub(super) async fn commit_known(
    storage: &dyn Storage,
    tables: &Materializers,
    known: &mut RowCache,
    group: &[Pending],
) -> Result<Option<Committed>, StorageError> {
    let Some(head) = known.head.filter(|_| known.fast) else {
        return Ok(None);
    };
    let mut rows = Rows::new();
    let mut sizes = HashMap::new();
    let mut created = HashSet::new();
    for p in group {
        for v in &p.changes {
            let c = &v.change;
            let key = (p.tenant.clone(), c.model.clone(), c.pk.clone());
            if rows.contains_key(&key) {
                continue;
            }
            let state = match known.get(&key) {
                Some((state, bytes)) => {
                    sizes.insert(key.clone(), bytes);
                    state
                }
                None if c.op == Op::Insert => {
                    created.insert(key.clone());
                    RowState::default()
                }
                None => return Ok(None),
            };
            rows.insert(key, (state, None));
        }
    }
    let (outcomes, entries, seq) = merge(group, &mut rows, &mut HashMap::new(), head);
    // A row taken for new that nothing moved (its only change was refused)
    // is neither written nor known.
    rows.retain(|key, (_, dirty)| dirty.is_some() || !created.contains(key));
    let (mut new, mut changed) = (Vec::new(), Vec::new());
    for (key, (state, dirty)) in &rows {
        let Some(seq) = dirty else { continue };
        let record = snapshot_record(key, state, *seq);
        sizes.insert(key.clone(), record.value.len() + record.clocks.len());
        if created.contains(key) {
            new.push(record);
        } else {
            changed.push(record);
        }
    }
    let materialized = materialize(storage, tables, new.iter().chain(&changed));
    if !storage
        .commit_if_head(
            head,
            Writes {
                entries: &entries,
                created: &new,
                updated: &changed,
                last_seq: seq,
                materialized: &materialized,
            },
        )
        .await?
    {
        // What it holds may still be right (a replayed op id, a row it had
        // not seen): the commit that reads next tells by the head.
        known.refused();
        return Ok(None);
    }
    known.committed(seq, with_sizes(rows, &sizes));
    Ok(Some(Committed {
        path: CommitPath::FromCache,
        outcomes,
        head: seq,
        entries,
    }))
}

/// One commit attempt that reads what it needs under the lock; `None` when
/// `look_up` was off and an op id of the group turned out to be logged
/// already (nothing was committed).
async fn attempt(
    storage: &dyn Storage,
    tables: &Materializers,
    known: &mut RowCache,
    group: &[Pending],
    look_up: bool,
) -> Result<Option<Committed>, StorageError> {
    let mut tx = storage.begin().await?;
    let head = tx.last_seq();
    known.at_head(head);

    // Already-logged op ids, keyed by (tenant, op id).
    let mut logged: HashMap<(String, String), LogEntry> = HashMap::new();
    if look_up {
        let mut ids_by_tenant: HashMap<&str, Vec<&str>> = HashMap::new();
        for p in group {
            ids_by_tenant
                .entry(p.tenant.as_str())
                .or_default()
                .extend(p.changes.iter().map(|v| v.change.op_id.as_str()));
        }
        for (tenant, ids) in ids_by_tenant {
            for e in tx.find_ops(tenant, &ids).await? {
                logged.insert((e.tenant_id.clone(), e.op_id.clone()), e);
            }
        }
    }

    // Load the current state of every row the group touches, per tenant.
    let mut rows = Rows::new();
    let mut sizes = HashMap::new();
    let mut by_tenant: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for p in group {
        let keys = by_tenant.entry(p.tenant.as_str()).or_default();
        for v in &p.changes {
            if !logged.contains_key(&(p.tenant.clone(), v.change.op_id.clone())) {
                keys.push((v.change.model.as_str(), v.change.pk.as_str()));
            }
        }
    }
    for (tenant, mut keys) in by_tenant {
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            continue;
        }
        for r in tx.read_snapshots(tenant, &keys).await? {
            let state = state_of(&r.value, &r.clocks).ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "snapshot {}/{}/{} does not parse",
                    r.tenant_id, r.model, r.id
                ))
            })?;
            let key = (r.tenant_id, r.model, r.id);
            sizes.insert(key.clone(), r.value.len() + r.clocks.len());
            rows.insert(key, (state, None));
        }
    }

    let (outcomes, entries, seq) = merge(group, &mut rows, &mut logged, head);
    let snapshots: Vec<SnapshotRecord> = rows
        .iter()
        .filter_map(|(key, (state, dirty))| dirty.map(|seq| snapshot_record(key, state, seq)))
        .inspect(|r| {
            let key = (r.tenant_id.clone(), r.model.clone(), r.id.clone());
            sizes.insert(key, r.value.len() + r.clocks.len());
        })
        .collect();
    let materialized = materialize(storage, tables, &snapshots);
    if look_up {
        if !entries.is_empty() {
            tx.insert_changes(&entries).await?;
            tx.write_snapshots(&snapshots).await?;
            tx.execute(&materialized).await?;
        }
        tx.commit(seq).await?;
    } else {
        let skipped = if materialized.is_empty() {
            tx.commit_new_changes(&entries, &snapshots, seq).await?
        } else {
            crate::storage::commit_new_in_steps(tx, &entries, &snapshots, &materialized, seq)
                .await?
        };
        if skipped > 0 {
            // Nothing was committed.
            return Ok(None);
        }
    }
    // Rows the group touched but did not find are new and empty.
    known.committed(seq, with_sizes(rows, &sizes));
    Ok(Some(Committed {
        path: if look_up {
            CommitPath::LookUpFirst
        } else {
            CommitPath::Optimistic
        },
        outcomes,
        head: seq,
        entries,
    }))
}

/// The statements that write these snapshots into the application's tables
/// of materialized models (none without any, or for a storage without SQL).
fn materialize<'a>(
    storage: &dyn Storage,
    tables: &Materializers,
    rows: impl IntoIterator<Item = &'a SnapshotRecord>,
) -> Vec<::sea_orm::Statement> {
    match storage.database_backend() {
        Some(backend) if !tables.is_empty() => tables.statements(backend, rows),
        _ => Vec::new(),
    }
}
