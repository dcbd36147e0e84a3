//! Group commit: concurrent pushes share one storage transaction.
//!
//! Every push sends its validated batch to the engine's writer task, which
//! takes everything that queued up while the previous commit ran and commits
//! it in one transaction (one lock wait, one fsync), answering each batch
//! separately. The transaction runs in that task, so a client hanging up
//! cannot cancel a commit other clients are waiting on.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::conflict::{RowState, Stamp};
use crate::engine::state_of;
use crate::error::{ErrorCode, SyncError};
use crate::fanout::Handoff;
use crate::hlc::Hlc;
use crate::protocol::{Change, ChangeResult};
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
            commit_group(storage.as_ref(), &handoff, group).await;
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

async fn commit_group(storage: &dyn Storage, handoff: &Handoff, group: Vec<Pending>) {
    match try_commit(storage, &group).await {
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

/// What a group's commit did.
struct Committed {
    /// Per batch: its results, or why it was refused.
    outcomes: Vec<Result<Vec<ChangeResult>, SyncError>>,
    /// The log head after the commit.
    head: i64,
    /// The entries it appended, in sequence order.
    entries: Vec<LogEntry>,
}

/// Commit a group. First optimistically, as if no op id had been logged
/// before (the common case: one statement less, and on Postgres no op id
/// lookup for the planner to get wrong); if the log turns out to hold one
/// (a client re-sending a push whose answer it lost), that attempt is rolled
/// back and the group is committed again with op ids looked up first.
async fn try_commit(storage: &dyn Storage, group: &[Pending]) -> Result<Committed, StorageError> {
    match attempt(storage, group, false).await? {
        Some(done) => Ok(done),
        None => attempt(storage, group, true)
            .await?
            .ok_or_else(|| StorageError::Corrupt("op ids logged while the log was locked".into())),
    }
}

/// One commit attempt; `None` when `look_up` was off and an op id of the
/// group turned out to be logged already (nothing was committed).
async fn attempt(
    storage: &dyn Storage,
    group: &[Pending],
    look_up: bool,
) -> Result<Option<Committed>, StorageError> {
    let mut tx = storage.begin().await?;
    let mut seq = tx.last_seq();

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
    let op_key = |tenant: &str, v: &ValidChange| (tenant.to_owned(), v.change.op_id.clone());

    // Load the current state of every row the group touches, per tenant.
    let mut rows: HashMap<RowKey, (RowState, Option<i64>)> = HashMap::new();
    let mut by_tenant: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for p in group {
        let keys = by_tenant.entry(p.tenant.as_str()).or_default();
        for v in &p.changes {
            if !logged.contains_key(&op_key(&p.tenant, v)) {
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

    let mut entries = Vec::new();
    let mut outcomes = Vec::with_capacity(group.len());
    'batch: for p in group {
        // A reused op id with other content fails its whole batch before
        // anything of the batch is applied.
        for (index, v) in p.changes.iter().enumerate() {
            if let Some(e) = logged.get(&op_key(&p.tenant, v))
                && !same_change(e, v)
            {
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

    let snapshots: Vec<SnapshotRecord> = rows
        .into_iter()
        .filter_map(|(key, (state, dirty))| dirty.map(|seq| (key, state, seq)))
        .map(|((tenant_id, model, id), state, seq)| SnapshotRecord {
            tenant_id,
            model,
            id,
            value: state.value().to_string(),
            clocks: state.clocks_json().to_string(),
            deleted: !state.is_live(),
            seq,
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
    Ok(Some(Committed {
        outcomes,
        head: seq,
        entries,
    }))
}
