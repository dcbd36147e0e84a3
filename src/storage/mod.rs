//! Storage: the operation log and row snapshots behind the engine.
//!
//! [`Storage`] mirrors the seed's `createOrmAdapter` (`withTransaction`,
//! `insertChanges`, `selectChangesSince`, `readSnapshot`, `writeSnapshot`),
//! shaped for Rust: a write transaction is a [`StorageTx`] value opened by
//! [`Storage::begin`] rather than a callback, and every call works on batches
//! so that a 100-change push is a handful of statements in one transaction.
//!
//! # The no-skip rule
//!
//! [`Storage::begin`] must serialize write transactions on one lock held until
//! commit (the `sync_counter` row in [`SeaOrmStorage`]), and sequence numbers
//! are assigned under it. Commit order then equals sequence order, so a reader
//! that reads the committed head `H` ([`Storage::head`]) and then every change
//! `<= H` never misses a change that commits late. An implementation that
//! hands out sequence numbers from an autoincrement column outside such a lock
//! breaks pull.

mod retention;
mod sea_orm;

pub use self::retention::{LogFilter, Retention, SpaceUsed, Step};
pub use self::sea_orm::SeaOrmStorage;
#[cfg(test)]
pub(crate) use self::sea_orm::shape_page_query as shape_page_query_for_tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_trait::async_trait;
use tokio::sync::Notify;

use better_sync_core::protocol::Op;

/// Failure of the storage layer. Nothing of the failed transaction is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] ::sea_orm::DbErr),
    /// The tables are missing or do not hold what the engine wrote.
    #[error("storage is not in the expected state: {0}")]
    Corrupt(String),
}

/// One row of `op_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Server sequence number, the cursor position.
    pub seq: i64,
    /// Idempotency key, unique within the tenant.
    pub op_id: String,
    /// Tenant from the verified request context.
    pub tenant_id: String,
    /// Model name.
    pub model: String,
    /// Primary key of the row.
    pub pk: String,
    /// Insert, update or delete.
    pub op: Op,
    /// Replica that made the change.
    pub actor: String,
    /// Canonical hybrid logical clock.
    pub updated_at: String,
    /// The payload as JSON text.
    pub payload: String,
}

impl LogEntry {
    /// The entry as clients pull it, its payload parsed from JSON text.
    pub fn into_pulled(
        self,
    ) -> Result<better_sync_core::protocol::PulledChange, serde_json::Error> {
        Ok(better_sync_core::protocol::PulledChange {
            payload: serde_json::from_str(&self.payload)?,
            seq: self.seq,
            op_id: self.op_id,
            model: self.model,
            pk: self.pk,
            op: self.op,
            updated_at: self.updated_at,
            actor: self.actor,
        })
    }
}

/// One row of `snapshots`: the current state of a synced row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Tenant.
    pub tenant_id: String,
    /// Model name.
    pub model: String,
    /// Primary key.
    pub id: String,
    /// The row's live fields as JSON text.
    pub value: String,
    /// Conflict-resolution stamps as JSON text (see [`better_sync_core::conflict::RowState::clocks_json`]).
    pub clocks: String,
    /// Whether the row is deleted (a tombstone kept for ordering).
    pub deleted: bool,
    /// Sequence number of the last change that touched the row.
    pub seq: i64,
}

/// What one commit writes, for [`Storage::commit_if_head`].
#[derive(Debug, Clone, Copy)]
pub struct Writes<'a> {
    /// Log entries to append, their `seq` numbered on from the head.
    pub entries: &'a [LogEntry],
    /// Snapshots of rows taken for new: the commit is refused if one exists.
    pub created: &'a [SnapshotRecord],
    /// Snapshots to insert or replace.
    pub updated: &'a [SnapshotRecord],
    /// The head after the commit.
    pub last_seq: i64,
    /// Statements writing the application's own tables (materialized
    /// models) that commit in the same transaction, after the snapshots.
    pub materialized: &'a [::sea_orm::Statement],
}

/// A condition on `snapshots` rows as SQL text for the storage's backend
/// (`$n` placeholders on Postgres, `?` elsewhere) with its bound values: a
/// shape's filter (the outer row's JSON is `snapshots.value`).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlCondition {
    /// The SQL, without `WHERE`.
    pub sql: String,
    /// The values its placeholders stand for, in order.
    pub values: Vec<::sea_orm::Value>,
}

/// The storage the engine runs on.
///
/// Reads outside a transaction only ever see committed data.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Open a write transaction holding the log lock (see the module docs).
    async fn begin(&self) -> Result<Box<dyn StorageTx>, StorageError>;

    /// The last committed sequence number (0 for an empty log).
    async fn head(&self) -> Result<i64, StorageError>;

    /// Whether every way the storage reaches its database answers: the
    /// readiness probe (`B/health`). The default reads the head; a
    /// storage with connections of more than one kind checks each.
    async fn check_ready(&self) -> Result<(), StorageError> {
        self.head().await.map(|_| ())
    }

    /// Commit without reading first, if nothing moved: only when the head is
    /// still `expected_head`, no entry's op id is logged and no row of
    /// `writes.created` has a snapshot. Then make the [`Writes`] and return
    /// `true`; otherwise write nothing and return `false`.
    ///
    /// The engine's writer calls this when it holds the current state of
    /// every row a group touches (it keeps the states it committed, valid
    /// while no one else commits): a commit then needs no read before its
    /// writes. The default does it in steps over [`Storage::begin`]; a
    /// storage that can send it as one statement list overrides it.
    async fn commit_if_head(
        &self,
        expected_head: i64,
        writes: Writes<'_>,
    ) -> Result<bool, StorageError> {
        commit_if_head_in_steps(self, expected_head, writes).await
    }

    /// Changes of `tenant_id` with `after < seq <= upto`, by `seq`, at most `limit`.
    async fn select_changes_since(
        &self,
        tenant_id: &str,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError>;

    /// The latest changes of `tenant_id` with `seq < before` (any, without
    /// `before`), newest first, at most `limit`; only those of one row when
    /// `row` is `(model, pk)`. For the inspector, not the sync paths: a row
    /// filter scans the tenant's log.
    ///
    /// The default reads the log forward in pages and keeps the last ones;
    /// a storage that can read backwards overrides it.
    async fn recent_changes(
        &self,
        tenant_id: &str,
        before: Option<i64>,
        row: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let upto = match before {
            Some(b) => b - 1,
            None => self.head().await?,
        };
        let mut kept = std::collections::VecDeque::new();
        let mut after = 0;
        loop {
            let page = self
                .select_changes_since(tenant_id, after, upto, 1000)
                .await?;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            for e in page {
                if row.is_none_or(|(m, pk)| e.model == m && e.pk == pk) {
                    kept.push_back(e);
                    if kept.len() as u64 > limit {
                        kept.pop_front();
                    }
                }
            }
            after = last;
        }
        Ok(kept.into_iter().rev().collect())
    }

    /// Changes of every tenant with `after < seq <= upto`, by `seq`, at most
    /// `limit`: what the live fan-out reads once for all subscribers.
    async fn select_all_since(
        &self,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError>;

    /// Tell `signal` whenever another process may have committed
    /// ([`CommitSignal::committed`] with the new head when known, else
    /// [`CommitSignal::wake`]), until the connection fails (then return the
    /// error; the engine retries). Storages that cannot be told return `Ok(false)` at
    /// once and the engine polls [`Storage::head`] instead.
    async fn listen_commits(&self, signal: Arc<CommitSignal>) -> Result<bool, StorageError> {
        let _ = signal;
        Ok(false)
    }

    /// The snapshot of one row.
    async fn read_snapshot(
        &self,
        tenant_id: &str,
        model: &str,
        id: &str,
    ) -> Result<Option<SnapshotRecord>, StorageError>;

    /// Snapshots of these `(model, id)` rows of one tenant (committed data).
    async fn read_snapshots(
        &self,
        tenant_id: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<SnapshotRecord>, StorageError>;

    /// Snapshots of `model` with `id > after`, by id, at most `limit`.
    async fn snapshot_page(
        &self,
        tenant_id: &str,
        model: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError>;

    /// Snapshots of every model of the tenant after the key `(model, id)`,
    /// by model then id, at most `limit` (what erasing a tenant walks).
    async fn tenant_snapshot_page(
        &self,
        tenant_id: &str,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError>;

    /// A page of `model`'s live rows (no tombstones) that `condition` holds
    /// for, ordered by id, after `after`: a shape's bootstrap. The default
    /// refuses: a storage without SQL cannot evaluate shapes.
    async fn snapshot_page_where(
        &self,
        tenant_id: &str,
        model: &str,
        condition: &SqlCondition,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        let _ = (tenant_id, model, condition, after, limit);
        Err(StorageError::Corrupt(
            "this storage cannot evaluate shapes".into(),
        ))
    }

    /// The SQL dialect of the database, for statements built outside the
    /// storage (materialized models); `None` when the storage cannot run
    /// them ([`StorageTx::execute`]).
    fn database_backend(&self) -> Option<::sea_orm::DbBackend> {
        None
    }

    /// Compaction and erasure, if this storage supports them. A storage
    /// without them keeps its whole log (no horizon: no cursor is ever
    /// stale).
    fn retention(&self) -> Option<&dyn Retention> {
        None
    }
}

/// How a storage's commit listener ([`Storage::listen_commits`]) wakes the
/// engine's live fan-out.
///
/// A listener that knows the sequence number a commit reached says so with
/// [`CommitSignal::committed`]: the fan-out then skips announcements of
/// commits it has already published (on Postgres every instance also hears
/// its own commits). Without one, [`CommitSignal::wake`] makes it read the
/// head.
#[derive(Debug)]
pub struct CommitSignal {
    notify: Notify,
    /// Highest sequence number announced since the fan-out last looked.
    announced: AtomicI64,
    /// A wake-up without a sequence number came since then.
    unknown: AtomicBool,
    /// The listener is connected and listening (for health checks).
    listening: AtomicBool,
}

impl Default for CommitSignal {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            announced: AtomicI64::new(i64::MIN),
            unknown: AtomicBool::new(false),
            listening: AtomicBool::new(false),
        }
    }
}

impl CommitSignal {
    /// The listener is connected and listening (`true`), or lost its
    /// connection (`false`): what `B/health` reports. A listener calls this
    /// with `true` once it listens; the engine sets `false` when
    /// [`Storage::listen_commits`] returns an error.
    pub fn listening(&self, yes: bool) {
        self.listening.store(yes, Ordering::SeqCst);
    }

    /// Whether the listener said it is listening.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Another process may have committed: the fan-out reads the head.
    pub fn wake(&self) {
        self.unknown.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// A commit made `last_seq` the head (or a later one did).
    pub fn committed(&self, last_seq: i64) {
        self.announced.fetch_max(last_seq, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Wait for the next wake-up.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Whether the wake-ups since the last call may announce anything
    /// beyond `published`.
    pub(crate) fn beyond(&self, published: Option<i64>) -> bool {
        let unknown = self.unknown.swap(false, Ordering::SeqCst);
        let announced = self.announced.swap(i64::MIN, Ordering::SeqCst);
        unknown || published.is_none_or(|p| announced > p)
    }
}

/// A write transaction: dropped without [`StorageTx::commit`], it rolls back.
#[async_trait]
pub trait StorageTx: Send {
    /// The sequence number of the last committed change, read under the lock.
    fn last_seq(&self) -> i64;

    /// Log entries of `tenant_id` with any of these op ids (replay detection).
    /// Op ids are unique per tenant, so one tenant can neither collide with
    /// nor probe another's.
    async fn find_ops(
        &mut self,
        tenant_id: &str,
        op_ids: &[&str],
    ) -> Result<Vec<LogEntry>, StorageError>;

    /// Snapshots of these `(model, id)` rows of one tenant.
    async fn read_snapshots(
        &mut self,
        tenant_id: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<SnapshotRecord>, StorageError>;

    /// Append entries to the log (their `seq` already assigned above `last_seq`).
    async fn insert_changes(&mut self, rows: &[LogEntry]) -> Result<(), StorageError>;

    /// Append entries whose op ids the caller did not look up, skipping any
    /// whose `(tenant_id, op_id)` is already logged; the number skipped.
    /// When it is not 0 the caller drops the transaction (the entries' `seq`
    /// were assigned as if none would be skipped) and starts over with
    /// [`StorageTx::find_ops`].
    ///
    /// The default looks the op ids up first; a storage with an atomic
    /// "insert unless present" saves that statement.
    async fn insert_new_changes(&mut self, rows: &[LogEntry]) -> Result<usize, StorageError> {
        look_up_then_insert(self, rows).await
    }

    /// Insert or replace snapshots.
    async fn write_snapshots(&mut self, rows: &[SnapshotRecord]) -> Result<(), StorageError>;

    /// The end of an optimistic commit: [`StorageTx::insert_new_changes`],
    /// then (if nothing was skipped) [`StorageTx::write_snapshots`] and
    /// [`StorageTx::commit`] with `last_seq`. Returns how many entries were
    /// skipped; when that is not 0 nothing was committed (the transaction
    /// is dropped) and the caller starts over with [`StorageTx::find_ops`].
    ///
    /// The default makes those calls in turn; a storage that can send them
    /// in fewer round trips overrides it.
    async fn commit_new_changes(
        self: Box<Self>,
        rows: &[LogEntry],
        snapshots: &[SnapshotRecord],
        last_seq: i64,
    ) -> Result<usize, StorageError> {
        commit_new_in_steps(self, rows, snapshots, &[], last_seq).await
    }

    /// Run statements built for [`Storage::database_backend`] (the
    /// application's own tables of materialized models) in this transaction.
    ///
    /// The default refuses: a storage that has no SQL dialect cannot run them.
    async fn execute(&mut self, statements: &[::sea_orm::Statement]) -> Result<(), StorageError> {
        if statements.is_empty() {
            return Ok(());
        }
        Err(StorageError::Corrupt(
            "this storage cannot write materialized tables".into(),
        ))
    }

    /// Record `last_seq` as the new head and commit everything.
    async fn commit(self: Box<Self>, last_seq: i64) -> Result<(), StorageError>;
}

/// [`Storage::commit_if_head`] one call at a time, over [`Storage::begin`].
pub(crate) async fn commit_if_head_in_steps<S: Storage + ?Sized>(
    storage: &S,
    expected_head: i64,
    Writes {
        entries,
        created,
        updated,
        last_seq,
        materialized,
    }: Writes<'_>,
) -> Result<bool, StorageError> {
    let mut tx = storage.begin().await?;
    if tx.last_seq() != expected_head {
        return Ok(false);
    }
    if tx.insert_new_changes(entries).await? > 0 {
        return Ok(false);
    }
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<(&str, &str)>> = Default::default();
    for r in created {
        by_tenant
            .entry(&r.tenant_id)
            .or_default()
            .push((&r.model, &r.id));
    }
    for (tenant, keys) in by_tenant {
        if !tx.read_snapshots(tenant, &keys).await?.is_empty() {
            return Ok(false);
        }
    }
    tx.write_snapshots(created).await?;
    tx.write_snapshots(updated).await?;
    tx.execute(materialized).await?;
    tx.commit(last_seq).await?;
    Ok(true)
}

/// [`StorageTx::commit_new_changes`] one call at a time, with the statements
/// of materialized models (see [`Writes::materialized`]) after the snapshots.
pub(crate) async fn commit_new_in_steps<T: StorageTx + ?Sized>(
    mut tx: Box<T>,
    rows: &[LogEntry],
    snapshots: &[SnapshotRecord],
    materialized: &[::sea_orm::Statement],
    last_seq: i64,
) -> Result<usize, StorageError> {
    let skipped = tx.insert_new_changes(rows).await?;
    if skipped > 0 {
        return Ok(skipped);
    }
    tx.write_snapshots(snapshots).await?;
    tx.execute(materialized).await?;
    tx.commit(last_seq).await?;
    Ok(0)
}

/// [`StorageTx::insert_new_changes`] by [`StorageTx::find_ops`] and then
/// [`StorageTx::insert_changes`] if none is logged.
pub(crate) async fn look_up_then_insert<T: StorageTx + ?Sized>(
    tx: &mut T,
    rows: &[LogEntry],
) -> Result<usize, StorageError> {
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for r in rows {
        by_tenant.entry(&r.tenant_id).or_default().push(&r.op_id);
    }
    let mut logged = 0;
    for (tenant, ids) in by_tenant {
        logged += tx.find_ops(tenant, &ids).await?.len();
    }
    if logged == 0 {
        tx.insert_changes(rows).await?;
    }
    Ok(logged)
}

#[cfg(test)]
mod tests {
    use super::CommitSignal;

    #[test]
    fn commit_signal_tells_what_is_beyond_the_published_head() {
        let s = CommitSignal::default();
        assert!(!s.beyond(Some(5)), "nothing announced");
        assert!(s.beyond(None), "nothing published yet: read");
        s.committed(5);
        assert!(!s.beyond(Some(5)), "an own commit, already published");
        s.committed(7);
        s.committed(6);
        assert!(s.beyond(Some(6)), "the highest announcement counts");
        assert!(!s.beyond(Some(6)), "and is used up");
        s.wake();
        assert!(s.beyond(Some(100)), "a wake-up without a number: read");
        assert!(!s.beyond(Some(100)));
    }
}
