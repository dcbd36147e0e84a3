//! Group commit: concurrent pushes share one storage transaction.
//!
//! Every push sends its validated batch to the engine's writer task, which
//! takes everything that queued up while the previous commit ran and commits
//! it in one transaction (one lock wait, one fsync), answering each batch
//! separately. The transaction runs in that task, so a client hanging up
//! cannot cancel a commit other clients are waiting on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::conflict::{RowState, Stamp};
use crate::engine::state_of;
use crate::error::{ErrorCode, SyncError};
use crate::fanout::Handoff;
use crate::hlc::Hlc;
use crate::protocol::{Change, ChangeResult, Op};
use crate::storage::{LogEntry, SnapshotRecord, Storage, StorageError};

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
        answer
            .await
            .unwrap_or_else(|_| Err(SyncError::internal("commit was abandoned")))
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
        if !group.is_empty() {
            commit_group(storage.as_ref(), &handoff, &mut known, group).await;
        }
    }
}

fn same_change(e: &LogEntry, v: &ValidChange) -> bool {
    let c = &v.change;
    e.model == c.model
        && e.pk == c.pk
        && e.op == c.op
        && e.actor == c.actor
        && e.updated_at == v.updated_at
        && serde_json::from_str::<serde_json::Value>(&e.payload)
            .ok()
            .as_ref()
            == Some(&c.payload)
}

type RowKey = (String, String, String);

/// Rows whose state the writer holds at once.
const KNOWN_ROWS: usize = 16_384;

/// What the writer knows of the database between commits: the head after
/// its last commit, and the states of the rows that commit (and earlier
/// ones) touched. They stay true while no one else commits, which
/// [`Storage::commit_if_head`] checks as part of the next commit: a group
/// whose rows are all known (or new: inserts of rows it has not seen)
/// commits without reading anything first.
#[derive(Default)]
struct Known {
    head: Option<i64>,
    /// Two generations: rows found in `old` move to `recent`; when `recent`
    /// is full it becomes `old`, and what `old` held is forgotten.
    recent: HashMap<RowKey, RowState>,
    old: HashMap<RowKey, RowState>,
}

impl Known {
    fn get(&mut self, key: &RowKey) -> Option<RowState> {
        if let Some(s) = self.recent.get(key) {
            return Some(s.clone());
        }
        let (key, state) = self.old.remove_entry(key)?;
        self.put(key, state.clone());
        Some(state)
    }

    fn put(&mut self, key: RowKey, state: RowState) {
        if self.recent.capacity() == 0 {
            // Full size at once: growing rehashes every row held so far.
            self.recent.reserve(KNOWN_ROWS / 2);
        }
        if self.recent.len() >= KNOWN_ROWS / 2 && !self.recent.contains_key(&key) {
            // Keeps both tables' allocations: growing one from empty again
            // (rehashing on the way) was most of the cost of an insert-only
            // load.
            std::mem::swap(&mut self.old, &mut self.recent);
            self.recent.clear();
        }
        self.old.remove(&key);
        self.recent.insert(key, state);
    }

    /// After a commit at `head`, the rows it touched are as given.
    fn committed(&mut self, head: i64, rows: impl IntoIterator<Item = (RowKey, RowState)>) {
        self.head = Some(head);
        for (key, state) in rows {
            self.put(key, state);
        }
    }

    /// The head is `head` now: what was known still holds only if it was
    /// known at that head.
    fn at_head(&mut self, head: i64) {
        if self.head != Some(head) {
            self.forget();
            self.head = Some(head);
        }
    }

    fn forget(&mut self) {
        self.head = None;
        self.recent.clear();
        self.old.clear();
    }
}

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
    let Some(head) = known.head else {
        return Ok(None);
    };
    let mut rows = Rows::new();
    let mut created = HashSet::new();
    for p in group {
        for v in &p.changes {
            let c = &v.change;
            let key = (p.tenant.clone(), c.model.clone(), c.pk.clone());
            if rows.contains_key(&key) {
                continue;
            }
            let state = match known.get(&key) {
                Some(state) => state,
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
        if created.contains(key) {
            new.push(record);
        } else {
            changed.push(record);
        }
    }
    if !storage
        .commit_if_head(head, &entries, &new, &changed, seq)
        .await?
    {
        known.forget();
        return Ok(None);
    }
    known.committed(seq, rows.into_iter().map(|(k, (s, _))| (k, s)));
    Ok(Some(Committed {
        outcomes,
        head: seq,
        entries,
    }))
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
            rows.insert((r.tenant_id, r.model, r.id), (state, None));
        }
    }

    let (outcomes, entries, seq) = merge(group, &mut rows, &mut logged, head);
    let snapshots: Vec<SnapshotRecord> = rows
        .iter()
        .filter_map(|(key, (state, dirty))| dirty.map(|seq| snapshot_record(key, state, seq)))
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
    known.committed(seq, rows.into_iter().map(|(k, (s, _))| (k, s)));
    Ok(Some(Committed {
        outcomes,
        head: seq,
        entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> RowKey {
        ("t".into(), "todo".into(), format!("r{i}"))
    }

    #[test]
    fn known_rows_are_bounded_and_keep_the_recently_used() {
        let mut known = Known::default();
        known.committed(
            1,
            (0..KNOWN_ROWS * 2).map(|i| (key(i), RowState::default())),
        );
        assert!(known.recent.len() + known.old.len() <= KNOWN_ROWS);
        assert!(known.get(&key(KNOWN_ROWS * 2 - 1)).is_some(), "the latest");
        assert!(known.get(&key(0)).is_none(), "the first are forgotten");
        // A row found among the old ones survives the next turnover.
        let old = known.old.keys().next().cloned().expect("old rows");
        assert!(known.get(&old).is_some());
        known.committed(
            2,
            (0..KNOWN_ROWS / 2).map(|i| (key(10 * KNOWN_ROWS + i), RowState::default())),
        );
        assert!(known.get(&old).is_some(), "moved to the recent ones");
        assert!(known.recent.len() + known.old.len() <= KNOWN_ROWS);
    }

    #[test]
    fn known_rows_hold_only_at_their_head() {
        let mut known = Known::default();
        known.committed(5, [(key(1), RowState::default())]);
        known.at_head(5);
        assert!(known.get(&key(1)).is_some(), "nothing moved");
        known.at_head(6);
        assert_eq!(known.head, Some(6));
        assert!(known.get(&key(1)).is_none(), "someone else committed");
        known.committed(7, [(key(2), RowState::default())]);
        known.forget();
        assert_eq!(known.head, None);
        assert!(known.get(&key(2)).is_none());
    }
}
