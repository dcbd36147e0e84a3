//! Group commit: concurrent pushes share one storage transaction.
//!
//! Every push sends its validated batch to the engine's writer task, which
//! takes everything that queued up while the previous commit ran and commits
//! it in one transaction (one lock wait, one fsync), answering each batch
//! separately. The transaction runs in that task, so a client hanging up
//! cannot cancel a commit other clients are waiting on.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;

use tokio::sync::{mpsc, oneshot};

use crate::conflict::{RowState, Stamp};
use crate::engine::state_of;
use crate::error::{ErrorCode, SyncError};
use crate::fanout::Handoff;
use crate::hlc::Hlc;
use crate::protocol::{Change, ChangeResult, Op};
use crate::storage::{LogEntry, SnapshotRecord, Storage, StorageError, Writes};

/// A change that passed validation, with its clock parsed.
#[derive(Debug, Clone)]
pub(crate) struct ValidChange {
    pub(crate) change: Change,
    pub(crate) clock: Hlc,
    /// Canonical text of `clock`.
    pub(crate) updated_at: String,
    pub(crate) payload_text: String,
}

type BatchResult = Result<(Vec<ChangeResult>, i64), SyncError>;

struct Pending {
    tenant: String,
    changes: Vec<ValidChange>,
    reply: oneshot::Sender<BatchResult>,
}

/// Most changes one group commit takes; the rest wait for the next one.
const MAX_GROUP_CHANGES: usize = 5000;

/// The engine's single writer: a task that takes every batch queued while
/// the previous commit ran and commits them together.
pub(crate) struct Writer {
    tx: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// Where committed entries go for the live fan-out.
    handoff: Arc<Handoff>,
}

impl Writer {
    pub(crate) fn new(handoff: Arc<Handoff>) -> Self {
        Self {
            tx: OnceLock::new(),
            handoff,
        }
    }

    /// Commit `changes` for `tenant`: the per-change results and the log head
    /// after the commit.
    pub(crate) async fn submit(
        &self,
        storage: Arc<dyn Storage>,
        tenant: String,
        changes: Vec<ValidChange>,
    ) -> BatchResult {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // Started on first use, on the caller's runtime; it ends when the
            // engine (and with it the sender) is dropped.
            tokio::spawn(run(storage, rx, self.handoff.clone()));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(Pending {
            tenant,
            changes,
            reply,
        })
        .map_err(|_| SyncError::internal("the writer stopped"))?;
        answer.await.unwrap_or_else(|_| {
            Err(SyncError::internal(
                "the server failed while committing this push; it may or may not have been \
                 written, and re-sending the same op ids is safe",
            ))
        })
    }
}

async fn run(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    handoff: Arc<Handoff>,
) {
    let mut carry: Option<Pending> = None;
    let mut known = Known::default();
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut size = first.changes.len();
        let mut group = vec![first];
        while size < MAX_GROUP_CHANGES {
            match rx.try_recv() {
                Ok(p) if size + p.changes.len() > MAX_GROUP_CHANGES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    size += p.changes.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        // Callers that hung up need no answer and get no write.
        group.retain(|p| !p.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        // A panic in a storage call (or a hook the commit runs) fails this
        // group only: its callers' reply channels are dropped during the
        // unwind, which answers them with an internal error, and the writer
        // goes on with the next group.
        let committed =
            AssertUnwindSafe(commit_group(storage.as_ref(), &handoff, &mut known, group))
                .catch_unwind()
                .await;
        if let Err(panic) = committed {
            // What it holds may be half updated, and whether the commit
            // reached the database is unknown.
            known.forget();
            tracing::error!(
                panic = %panic_message(panic.as_ref()),
                "the writer panicked while committing a group; that group failed"
            );
        }
    }
}

/// Whether a logged entry is this change sent again. It compares what the
/// change would store with what was stored: the canonical clock and payload
/// texts, both written by the same serializer from the parsed change, so a
/// retry is recognised whatever its representation (key order, escapes,
/// exponent form), and a parse of the stored text never stands in for it.
fn same_change(e: &LogEntry, v: &ValidChange) -> bool {
    let c = &v.change;
    e.model == c.model
        && e.pk == c.pk
        && e.op == c.op
        && e.actor == c.actor
        && e.updated_at == v.updated_at
        && e.payload == v.payload_text
}

/// The text of a panic's payload, when it is a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// A row: tenant, model, primary key.
type RowKey = (String, String, String);

mod known;
use known::Known;

async fn commit_group(
    storage: &dyn Storage,
    handoff: &Handoff,
    known: &mut Known,
    group: Vec<Pending>,
) {
    let committed = try_commit(storage, known, &group).await;
    if committed.is_err() {
        // Whether it reached the database is unknown.
        known.forget();
    }
    match committed {
        Ok(Committed {
            outcomes,
            head,
            entries,
        }) => {
            // Subscribers may hear of the commit before its pushers do.
            handoff.offer(entries);
            for (p, outcome) in group.into_iter().zip(outcomes) {
                let _ = p.reply.send(outcome.map(|r| (r, head)));
            }
        }
        Err(e) => {
            let err = SyncError::from(e);
            for p in group {
                let _ = p.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Per batch of a group: its results, or why it was refused.
type Outcomes = Vec<Result<Vec<ChangeResult>, SyncError>>;

/// What a group's commit did.
struct Committed {
    /// Per batch: its results, or why it was refused.
    outcomes: Outcomes,
    /// The log head after the commit.
    head: i64,
    /// The entries it appended, in sequence order.
    entries: Vec<LogEntry>,
}

/// Commit a group: without reads when the writer knows every row it
/// touches; else optimistically, as if no op id had been logged before (the
/// common case: one statement less, and on Postgres no op id lookup for the
/// planner to get wrong); if the log turns out to hold one (a client
/// re-sending a push whose answer it lost), that attempt is rolled back and
/// the group is committed again with op ids looked up first.
async fn try_commit(
    storage: &dyn Storage,
    known: &mut Known,
    group: &[Pending],
) -> Result<Committed, StorageError> {
    if let Some(done) = commit_known(storage, known, group).await? {
        return Ok(done);
    }
    if let Some(done) = attempt(storage, known, group, false).await? {
        return Ok(done);
    }
    attempt(storage, known, group, true)
        .await?
        .ok_or_else(|| StorageError::Corrupt("op ids logged while the log was locked".into()))
}

/// The state of each row a group touches, and the sequence number of the
/// last change that moved it (`None`: unchanged).
type Rows = HashMap<RowKey, (RowState, Option<i64>)>;

/// A commit from what the writer knows, with no read; `None` when some row
/// is not known (and not an insert's), or the storage found that something
/// moved (another writer committed, an op id is logged, a row taken for new
/// exists): nothing was written then.
async fn commit_known(
    storage: &dyn Storage,
    known: &mut Known,
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
    if !storage
        .commit_if_head(
            head,
            Writes {
                entries: &entries,
                created: &new,
                updated: &changed,
                last_seq: seq,
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
        outcomes,
        head: seq,
        entries,
    }))
}

/// The rows of a commit with the length of their texts, for [`Known`].
fn with_sizes(
    rows: Rows,
    sizes: &HashMap<RowKey, usize>,
) -> impl Iterator<Item = (RowKey, RowState, usize)> + '_ {
    rows.into_iter().map(|(key, (state, _))| {
        let bytes = sizes.get(&key).copied().unwrap_or(0);
        (key, state, bytes)
    })
}

fn snapshot_record((tenant_id, model, id): &RowKey, state: &RowState, seq: i64) -> SnapshotRecord {
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
fn merge(
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

/// One commit attempt that reads what it needs under the lock; `None` when
/// `look_up` was off and an op id of the group turned out to be logged
/// already (nothing was committed).
async fn attempt(
    storage: &dyn Storage,
    known: &mut Known,
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
    if look_up {
        if !entries.is_empty() {
            tx.insert_changes(&entries).await?;
            tx.write_snapshots(&snapshots).await?;
        }
        tx.commit(seq).await?;
    } else if tx.commit_new_changes(&entries, &snapshots, seq).await? > 0 {
        // Nothing was committed.
        return Ok(None);
    }
    // Rows the group touched but did not find are new and empty.
    known.committed(seq, with_sizes(rows, &sizes));
    Ok(Some(Committed {
        outcomes,
        head: seq,
        entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's two paths on a real SQLite database: what it holds and
    /// what it must read.
    mod paths {
        use super::*;
        use crate::storage::SeaOrmStorage;
        use migration::{Migrator, MigratorTrait};
        use serde_json::{Value, json};

        async fn storage(dir: &tempfile::TempDir) -> SeaOrmStorage {
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
            let db = SeaOrmStorage::connect(&url).await.expect("connect");
            Migrator::up(&db, None).await.expect("migrate");
            SeaOrmStorage::new(db)
        }

        /// One batch; the receivers are dropped, which `try_commit` does not
        /// look at (the writer's loop does).
        fn batch(changes: &[(&str, &str, Op, Value, u32)]) -> Pending {
            let changes = changes
                .iter()
                .map(|(op_id, pk, op, payload, at)| {
                    let updated_at = format!("2026-11-25T10:00:{at:02}.000Z-0000");
                    ValidChange {
                        change: Change {
                            op_id: (*op_id).into(),
                            model: "todo".into(),
                            pk: (*pk).into(),
                            op: *op,
                            payload: payload.clone(),
                            updated_at: updated_at.clone(),
                            actor: "a".into(),
                        },
                        clock: updated_at.parse().expect("clock"),
                        updated_at,
                        payload_text: payload.to_string(),
                    }
                })
                .collect();
            Pending {
                tenant: "t".into(),
                changes,
                reply: oneshot::channel().0,
            }
        }

        async fn value(storage: &SeaOrmStorage, pk: &str) -> Value {
            let r = storage
                .read_snapshot("t", "todo", pk)
                .await
                .expect("read")
                .expect("row");
            serde_json::from_str(&r.value).expect("json")
        }

        #[tokio::test]
        async fn held_rows_commit_without_reads_and_refusals_fall_back() {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = storage(&dir).await;
            let mut known = Known::default();
            let group = [batch(&[("o1", "r", Op::Insert, json!({"a": 1}), 1)])];
            assert!(
                commit_known(&storage, &mut known, &group)
                    .await
                    .expect("commit")
                    .is_none(),
                "nothing known yet"
            );
            try_commit(&storage, &mut known, &group)
                .await
                .expect("commit");
            // The row it committed, and a row it has not seen, go without reads.
            let group = [batch(&[
                ("o2", "r", Op::Update, json!({"b": 2}), 2),
                ("o3", "s", Op::Insert, json!({"c": 3}), 2),
            ])];
            let done = commit_known(&storage, &mut known, &group)
                .await
                .expect("commit");
            assert_eq!(done.map(|d| d.head), Some(3));
            assert_eq!(value(&storage, "r").await, json!({"a": 1, "b": 2}));
            // A replay is refused there and answered by the path that reads.
            let group = [batch(&[("o3", "s", Op::Insert, json!({"c": 3}), 2)])];
            assert!(
                commit_known(&storage, &mut known, &group)
                    .await
                    .expect("commit")
                    .is_none()
            );
            assert!(!known.fast);
            let done = try_commit(&storage, &mut known, &group)
                .await
                .expect("commit");
            let results = done
                .outcomes
                .into_iter()
                .next()
                .expect("batch")
                .expect("ok");
            assert!(results[0].duplicate);
            assert!(known.fast, "the head had not moved");
        }

        /// A row taken for new whose only change was refused must not be
        /// held as empty: it exists, and a later update would be merged
        /// into nothing.
        #[tokio::test]
        async fn a_row_whose_only_change_was_refused_is_not_held() {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = storage(&dir).await;
            let mut known = Known::default();
            let group = [batch(&[(
                "o1",
                "r",
                Op::Insert,
                json!({"a": 1, "b": 1}),
                1,
            )])];
            try_commit(&storage, &mut known, &group)
                .await
                .expect("commit");
            known
                .recent
                .remove(&("t".into(), "todo".into(), "r".into()));
            // Batch 2 reuses batch 1's op id for a change of `r`: refused.
            let group = [
                batch(&[("x", "s", Op::Insert, json!({}), 2)]),
                batch(&[("x", "r", Op::Insert, json!({"a": 9}), 2)]),
            ];
            let done = commit_known(&storage, &mut known, &group)
                .await
                .expect("commit")
                .expect("without reads");
            assert!(matches!(&done.outcomes[1], Err(e) if e.code() == ErrorCode::OpIdConflict));
            assert!(
                known
                    .get(&("t".into(), "todo".into(), "r".into()))
                    .is_none()
            );
            let group = [batch(&[("o3", "r", Op::Update, json!({"a": 3}), 3)])];
            try_commit(&storage, &mut known, &group)
                .await
                .expect("commit");
            assert_eq!(value(&storage, "r").await, json!({"a": 3, "b": 1}));
        }
    }
}
