//! Commits that fail: before writing, or after writing with the answer
//! lost (a connection dropped during `COMMIT`). Either way the push gets a
//! retryable `SYNC:UNAVAILABLE`, the writer trusts nothing it assumed
//! about that commit, and the client's retry of the same op ids is applied
//! exactly once, on both commit paths (without reads and with reads), on
//! every backend. A storage call that panics fails its group with a 500 and
//! the writer goes on.

use crate::common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use better_sync::protocol::{Change, ChangeResult, Op, PushRequest};
use better_sync::storage::{CommitSignal, LogEntry, SnapshotRecord, StorageTx, Writes};
use better_sync::{BetterSync, Ctx, ErrorCode, SeaOrmStorage, Storage, StorageError};
use common::{Backend, TestDb, builder};
use serde_json::{Value, json};

/// How the next commit fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// It fails before anything is written.
    Refused,
    /// It is written, then reported as failed.
    LostAnswer,
    /// The storage call panics before writing anything.
    Panic,
}

/// Which commit fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// [`Storage::commit_if_head`]: the writer held every row.
    WithoutReads,
    /// The end of a transaction from [`Storage::begin`].
    WithReads,
}

type Plan = Arc<Mutex<Option<(Path, Fault)>>>;

fn take(plan: &Plan, path: Path) -> Option<Fault> {
    let mut plan = plan.lock().expect("plan");
    match *plan {
        Some((p, fault)) if p == path => {
            *plan = None;
            Some(fault)
        }
        _ => None,
    }
}

fn injected() -> StorageError {
    StorageError::Corrupt("injected fault: connection lost".into())
}

/// The real SeaORM storage, with one commit failing as planned.
struct Flaky {
    inner: SeaOrmStorage,
    plan: Plan,
}

struct FlakyTx {
    inner: Box<dyn StorageTx>,
    plan: Plan,
}

#[async_trait]
impl Storage for Flaky {
    async fn begin(&self) -> Result<Box<dyn StorageTx>, StorageError> {
        Ok(Box::new(FlakyTx {
            inner: self.inner.begin().await?,
            plan: self.plan.clone(),
        }))
    }

    async fn head(&self) -> Result<i64, StorageError> {
        self.inner.head().await
    }

    async fn commit_if_head(
        &self,
        expected_head: i64,
        writes: Writes<'_>,
    ) -> Result<bool, StorageError> {
        match take(&self.plan, Path::WithoutReads) {
            None => self.inner.commit_if_head(expected_head, writes).await,
            Some(Fault::Refused) => Err(injected()),
            Some(Fault::Panic) => panic!("injected panic in commit_if_head"),
            Some(Fault::LostAnswer) => {
                assert!(
                    self.inner.commit_if_head(expected_head, writes).await?,
                    "the commit whose answer is lost must have been made"
                );
                Err(injected())
            }
        }
    }

    async fn select_changes_since(
        &self,
        tenant_id: &str,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        self.inner
            .select_changes_since(tenant_id, after, upto, limit)
            .await
    }

    async fn select_all_since(
        &self,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        self.inner.select_all_since(after, upto, limit).await
    }

    async fn listen_commits(&self, signal: Arc<CommitSignal>) -> Result<bool, StorageError> {
        self.inner.listen_commits(signal).await
    }

    async fn read_snapshot(
        &self,
        tenant_id: &str,
        model: &str,
        id: &str,
    ) -> Result<Option<SnapshotRecord>, StorageError> {
        self.inner.read_snapshot(tenant_id, model, id).await
    }

    async fn read_snapshots(
        &self,
        tenant_id: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        self.inner.read_snapshots(tenant_id, keys).await
    }

    async fn snapshot_page(
        &self,
        tenant_id: &str,
        model: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        self.inner
            .snapshot_page(tenant_id, model, after, limit)
            .await
    }
    async fn tenant_snapshot_page(
        &self,
        tenant_id: &str,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        self.inner
            .tenant_snapshot_page(tenant_id, after, limit)
            .await
    }
}

#[async_trait]
impl StorageTx for FlakyTx {
    fn last_seq(&self) -> i64 {
        self.inner.last_seq()
    }

    async fn find_ops(
        &mut self,
        tenant_id: &str,
        op_ids: &[&str],
    ) -> Result<Vec<LogEntry>, StorageError> {
        self.inner.find_ops(tenant_id, op_ids).await
    }

    async fn read_snapshots(
        &mut self,
        tenant_id: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        self.inner.read_snapshots(tenant_id, keys).await
    }

    async fn insert_changes(&mut self, rows: &[LogEntry]) -> Result<(), StorageError> {
        self.inner.insert_changes(rows).await
    }

    async fn insert_new_changes(&mut self, rows: &[LogEntry]) -> Result<usize, StorageError> {
        self.inner.insert_new_changes(rows).await
    }

    async fn write_snapshots(&mut self, rows: &[SnapshotRecord]) -> Result<(), StorageError> {
        self.inner.write_snapshots(rows).await
    }

    async fn commit_new_changes(
        self: Box<Self>,
        rows: &[LogEntry],
        snapshots: &[SnapshotRecord],
        last_seq: i64,
    ) -> Result<usize, StorageError> {
        let FlakyTx { inner, plan } = *self;
        match take(&plan, Path::WithReads) {
            None => inner.commit_new_changes(rows, snapshots, last_seq).await,
            // Dropped: rolled back.
            Some(Fault::Refused) => Err(injected()),
            Some(Fault::Panic) => panic!("injected panic in commit_new_changes"),
            Some(Fault::LostAnswer) => {
                assert_eq!(
                    inner.commit_new_changes(rows, snapshots, last_seq).await?,
                    0,
                    "the commit whose answer is lost must have been made"
                );
                Err(injected())
            }
        }
    }

    async fn commit(self: Box<Self>, last_seq: i64) -> Result<(), StorageError> {
        let FlakyTx { inner, plan } = *self;
        match take(&plan, Path::WithReads) {
            None => inner.commit(last_seq).await,
            Some(Fault::Refused) => Err(injected()),
            Some(Fault::Panic) => panic!("injected panic in commit"),
            Some(Fault::LostAnswer) => {
                inner.commit(last_seq).await?;
                Err(injected())
            }
        }
    }
}

fn ctx() -> Ctx {
    Ctx::new("alice", "acme")
}

fn update(op_id: &str, field: &str, value: i64, at: u32) -> Change {
    Change {
        op_id: op_id.into(),
        model: "todo".into(),
        pk: "r".into(),
        op: Op::Update,
        payload: json!({ field: value }),
        updated_at: format!("2026-11-25T10:00:{at:02}.000Z"),
        actor: "device".into(),
    }
}

async fn push(sync: &BetterSync, changes: Vec<Change>) -> Result<Vec<ChangeResult>, ErrorCode> {
    sync.push(
        &ctx(),
        PushRequest {
            client_id: "device".into(),
            changes,
        },
    )
    .await
    .map(|r| r.results)
    .map_err(|e| e.code())
}

async fn value(sync: &BetterSync) -> Value {
    sync.get(&ctx(), "todo", "r")
        .await
        .expect("get")
        .expect("row r")
}

/// A commit fails on each path in turn; the client then re-sends both
/// pushes, as its outbox does after an error.
async fn failed_commits_are_retried_exactly_once(backend: Backend, fault: Fault) {
    let db = TestDb::new(backend).await;
    let plan = Plan::default();
    let sync = builder(&db.db)
        .storage(Flaky {
            inner: SeaOrmStorage::new(db.db.clone()),
            plan: plan.clone(),
        })
        .build()
        .expect("build");
    let insert = Change {
        op_id: "o1".into(),
        model: "todo".into(),
        pk: "r".into(),
        op: Op::Insert,
        payload: json!({"id": "r", "a": 1, "b": 1}),
        updated_at: "2026-11-25T10:00:01.000Z".into(),
        actor: "device".into(),
    };
    push(&sync, vec![insert]).await.expect("insert");

    // The writer holds `r` now: this commit goes without reads.
    *plan.lock().expect("plan") = Some((Path::WithoutReads, fault));
    // A storage failure is retryable; a panic is a bug: 500 for that push.
    let code = if fault == Fault::Panic {
        ErrorCode::Internal
    } else {
        ErrorCode::Unavailable
    };
    let first = push(&sync, vec![update("o2", "a", 2, 2)]).await;
    assert_eq!(first.err(), Some(code), "{fault:?}");
    assert!(
        plan.lock().expect("plan").is_none(),
        "the fault was reached"
    );

    // After a failure the writer holds nothing: this one reads.
    *plan.lock().expect("plan") = Some((Path::WithReads, fault));
    let second = push(&sync, vec![update("o3", "b", 3, 3)]).await;
    assert_eq!(second.err(), Some(code), "{fault:?}");
    assert!(
        plan.lock().expect("plan").is_none(),
        "the fault was reached"
    );

    let written = fault == Fault::LostAnswer;
    assert_eq!(
        db.counts().await,
        if written { (3, 1, 3) } else { (1, 1, 1) },
        "log entries, snapshots, head after the failures ({fault:?})"
    );

    // The client re-sends what it had queued, in one push.
    let results = push(
        &sync,
        vec![update("o2", "a", 2, 2), update("o3", "b", 3, 3)],
    )
    .await
    .expect("retry");
    let seqs: Vec<i64> = results.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [2, 3], "{fault:?}");
    assert!(
        results.iter().all(|r| r.duplicate == written),
        "{fault:?}: {results:?}"
    );
    assert_eq!(db.counts().await, (3, 1, 3), "{fault:?}");
    assert_eq!(value(&sync).await, json!({"id": "r", "a": 2, "b": 3}));

    // And the engine goes on: a later write of a field keeps the others.
    push(&sync, vec![update("o4", "a", 4, 4)])
        .await
        .expect("later push");
    assert_eq!(value(&sync).await, json!({"id": "r", "a": 4, "b": 3}));
    let page = sync
        .pull(&ctx(), None, Some(100))
        .await
        .expect("pull")
        .changes;
    let pulled: Vec<(i64, &str)> = page.iter().map(|c| (c.seq, c.op_id.as_str())).collect();
    assert_eq!(pulled, [(1, "o1"), (2, "o2"), (3, "o3"), (4, "o4")]);
}

async fn commits_refused_before_writing(backend: Backend) {
    failed_commits_are_retried_exactly_once(backend, Fault::Refused).await;
}

async fn commits_whose_answer_was_lost(backend: Backend) {
    failed_commits_are_retried_exactly_once(backend, Fault::LostAnswer).await;
}

/// A panic inside a storage call fails that group with a 500; the writer
/// survives it and later pushes commit.
async fn commits_that_panic(backend: Backend) {
    failed_commits_are_retried_exactly_once(backend, Fault::Panic).await;
}

per_backend!(
    commits_refused_before_writing,
    commits_whose_answer_was_lost,
    commits_that_panic
);
