//! [`Storage`] over a SeaORM `DatabaseConnection` (SQLite, Postgres, MySQL/MariaDB).
//!
//! Tables are created by the `migration` crate, never at runtime. This file
//! holds what every backend shares (statements built with sea-query, row
//! decoding, the [`Storage`] impl that picks a backend's fast path); each
//! backend's own statements live in a file of its own, as SeaORM lays out
//! its drivers: `sqlite.rs`, `postgres.rs`; MySQL/MariaDB takes the shared
//! statements. `settings.rs` checks a pool's settings, `tx.rs` is the write
//! transaction.

mod postgres;
mod retention;
mod settings;
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_direct;
mod tx;

use self::postgres::PG_SNAPSHOTS_BY_ID;
#[cfg(feature = "postgres")]
use self::postgres::postgres_commit_if_head;
use self::settings::settings_problems;
#[cfg(feature = "sqlite")]
use self::sqlite::sqlite_commit_if_head;
#[cfg(feature = "sqlite")]
use self::sqlite_direct::SqliteDirect;
use self::tx::SeaOrmTx;

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::sea_query::{
    Expr, ExprTrait, InsertStatement, OnConflict, Order, Query, SelectStatement,
};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, QueryResult, TransactionTrait,
};

use super::{
    CommitSignal, LogEntry, Retention, SnapshotRecord, Storage, StorageError, StorageTx, Writes,
};
use better_sync_core::protocol::Op;

use better_sync_migration::schema::{
    OP_LOG, OP_LOG_COLUMNS as LOG_COLUMNS, SNAPSHOT_COLUMNS, SNAPSHOTS, SYNC_COUNTER as COUNTER,
    col,
};

/// Postgres channel on which commits are announced to other instances.
const NOTIFY_CHANNEL: &str = "better_sync_commits";
/// Rows per multi-row statement: far below every backend's bind-parameter limit.
const CHUNK: usize = 400;

/// The default storage: SeaORM over SQLite, Postgres or MySQL/MariaDB.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use better_sync::SeaOrmStorage;
/// let db = sea_orm::Database::connect("sqlite://data.db?mode=rwc").await?;
/// let storage = SeaOrmStorage::new(db);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SeaOrmStorage {
    db: DatabaseConnection,
    /// Whether the connection settings were checked (on the first write).
    checked: Arc<std::sync::atomic::AtomicBool>,
    /// The SQLite file's own connections for the hot statements, opened on
    /// first use (`None` inside: the database cannot go direct).
    #[cfg(feature = "sqlite")]
    direct: Arc<tokio::sync::OnceCell<Option<SqliteDirect>>>,
    /// Whether SQLite may go direct ([`SeaOrmStorage::sqlite_direct`]).
    #[cfg(feature = "sqlite")]
    direct_allowed: bool,
    /// How much of the file the direct readers map ([`SeaOrmStorage::sqlite_read_mmap`]).
    #[cfg(feature = "sqlite")]
    read_mmap_bytes: u64,
}

/// The direct readers' default memory map: the whole file of most
/// applications' databases (address space, not memory: pages are the
/// kernel's page cache).
#[cfg(feature = "sqlite")]
const DEFAULT_READ_MMAP: u64 = 256 << 20;

impl SeaOrmStorage {
    /// Storage over an open connection pool. The tables must exist (run the
    /// `migration` crate first). The first write transaction logs a warning
    /// for each setting that differs from what [`SeaOrmStorage::connect`]
    /// sets (see [`SeaOrmStorage::check_settings`]).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            checked: Arc::default(),
            #[cfg(feature = "sqlite")]
            direct: Arc::default(),
            #[cfg(feature = "sqlite")]
            direct_allowed: true,
            #[cfg(feature = "sqlite")]
            read_mmap_bytes: DEFAULT_READ_MMAP,
        }
    }

    /// Whether a SQLite file database runs its hot statements (commits of
    /// the writer, log and snapshot reads) on connections of its own, each
    /// on a thread the storage owns, rather than through the SeaORM pool's
    /// sqlx connections (on by default; reads of the log are 4-7x faster,
    /// docs/PERFORMANCE.md). Only a file in WAL mode goes direct; the pool
    /// keeps everything else. The direct connections take the pool's
    /// `synchronous` and busy timeout. Off: every statement through the pool.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let storage = better_sync::SeaOrmStorage::open("sqlite://app.db?mode=rwc")
    ///     .await?
    ///     .sqlite_direct(false);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sqlite")]
    #[must_use]
    pub fn sqlite_direct(mut self, on: bool) -> Self {
        self.direct_allowed = on;
        self
    }

    /// How many bytes of a SQLite file the direct readers
    /// ([`SeaOrmStorage::sqlite_direct`]) read through a memory map rather
    /// than `read` calls (SQLite's `PRAGMA mmap_size`; default 256 MiB, 0
    /// turns it off). The map saves a copy of every page a pull or snapshot
    /// reads (catch-up about 10% faster, docs/PERFORMANCE.md). Mapped
    /// pages are the kernel's page cache, shared and reclaimable, but
    /// process monitors count the pages each reader has touched in its
    /// resident size (`RssFile` in `/proc/PID/status`), up to this many
    /// bytes a reader.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let storage = better_sync::SeaOrmStorage::open("sqlite://app.db?mode=rwc")
    ///     .await?
    ///     .sqlite_read_mmap(0);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sqlite")]
    #[must_use]
    pub fn sqlite_read_mmap(mut self, bytes: u64) -> Self {
        self.read_mmap_bytes = bytes;
        self
    }

    /// Whether this storage runs SQLite's hot statements on connections of
    /// its own ([`SeaOrmStorage::sqlite_direct`]): a SQLite file database in
    /// WAL mode, not turned off. Opens them if they are not open yet.
    #[cfg(feature = "sqlite")]
    pub async fn is_sqlite_direct(&self) -> Result<bool, StorageError> {
        Ok(self.direct().await?.is_some())
    }

    /// The direct SQLite connections, opened on the first call; `None` on
    /// other backends, when turned off, for a database that cannot be
    /// shared (in memory, not WAL, locked exclusively by the pool), or
    /// when they could not be opened.
    #[cfg(feature = "sqlite")]
    async fn direct(&self) -> Result<Option<&SqliteDirect>, StorageError> {
        if !self.direct_allowed || self.db.get_database_backend() != DatabaseBackend::Sqlite {
            return Ok(None);
        }
        let direct = self
            .direct
            .get_or_try_init(|| async {
                let pragma = |name: &'static str| async move {
                    let stmt = sea_orm::Statement::from_string(
                        DatabaseBackend::Sqlite,
                        format!("PRAGMA {name}"),
                    );
                    self.db
                        .query_one_raw(stmt)
                        .await?
                        .ok_or_else(|| corrupt(format!("PRAGMA {name} answered nothing")))
                };
                let file: String = {
                    let stmt = sea_orm::Statement::from_string(
                        DatabaseBackend::Sqlite,
                        "SELECT file FROM pragma_database_list WHERE name = 'main'",
                    );
                    match self.db.query_one_raw(stmt).await? {
                        Some(row) => row.try_get_by_index(0)?,
                        None => String::new(),
                    }
                };
                let facts = self::sqlite_direct::PoolFacts {
                    file,
                    journal_mode: pragma("journal_mode").await?.try_get_by_index(0)?,
                    synchronous: pragma("synchronous").await?.try_get_by_index(0)?,
                    busy_timeout_ms: pragma("busy_timeout").await?.try_get_by_index(0)?,
                    locking_mode: pragma("locking_mode").await?.try_get_by_index(0)?,
                    read_mmap_bytes: self.read_mmap_bytes,
                };
                // Connections that cannot be opened leave the pool to do
                // everything, as before there were any: slower, not broken.
                Ok::<_, StorageError>(SqliteDirect::open(&facts).unwrap_or_else(|e| {
                    tracing::warn!(
                        error = %e,
                        "could not open SQLite connections of the storage's own; using the pool"
                    );
                    None
                }))
            })
            .await?;
        Ok(direct.as_ref())
    }

    /// The pool's settings that differ from what the engine needs for
    /// durability and speed, one sentence each (empty when all is well):
    /// on SQLite, WAL journal and `synchronous=FULL`; on Postgres,
    /// `plan_cache_mode=force_custom_plan`. A pool opened with
    /// [`SeaOrmStorage::connect`] has them all.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use better_sync::SeaOrmStorage;
    /// let db = sea_orm::Database::connect("sqlite://data.db?mode=rwc").await?;
    /// for problem in SeaOrmStorage::new(db).check_settings().await? {
    ///     eprintln!("{problem}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_settings(&self) -> Result<Vec<String>, StorageError> {
        settings_problems(&self.db).await
    }

    /// Open a pool for `url` with settings suited to the engine: on SQLite,
    /// WAL journal (readers never block the writer), `synchronous=FULL` (an
    /// acknowledged push survives power loss), a busy timeout, and on a new
    /// file incremental auto-vacuum (compaction gives space back). On
    /// Postgres, `plan_cache_mode=force_custom_plan`: a statement prepared
    /// while the tables were still small would otherwise keep a cached
    /// generic plan with sequential scans as they grow (seen: pushes 8x
    /// slower after a few tens of thousands of rows, until an autoanalyze).
    /// On every backend, pooled connections are pinged only after 30 s idle
    /// rather than on every checkout. Give your own pool the same settings
    /// if you build one.
    pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
        let mut opts = sea_orm::ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false);
        // A ping on every checkout is one more round trip per transaction
        // and per read (on SQLite, to the connection's worker thread): ping
        // only connections idle long enough to have been dropped. One that
        // died sooner (a failover) fails one transaction, which clients
        // retry; op ids make the retry safe.
        opts.test_before_acquire_if_idle_for(std::time::Duration::from_secs(30));
        #[cfg(feature = "sqlite")]
        if url.starts_with("sqlite:") {
            use sea_orm::sqlx::sqlite::{SqliteAutoVacuum, SqliteJournalMode, SqliteSynchronous};
            opts.map_sqlx_sqlite_opts(|o| {
                // Incremental: compaction's freed pages go back to the file
                // system (`PRAGMA incremental_vacuum`) without a blocking
                // `VACUUM`. Takes effect on a new file only.
                o.auto_vacuum(SqliteAutoVacuum::Incremental)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(std::time::Duration::from_secs(10))
            });
        }
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            opts.map_sqlx_postgres_opts(|o| o.options([("plan_cache_mode", "force_custom_plan")]));
        }
        sea_orm::Database::connect(opts).await
    }

    /// Open a pool for `url` with the settings of [`SeaOrmStorage::connect`]
    /// and make the storage over it: the one-line constructor.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let storage = better_sync::SeaOrmStorage::open("sqlite://app.db?mode=rwc").await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        Ok(Self::new(Self::connect(url).await?))
    }

    /// The underlying connection (run the migrations on it, or share it
    /// with the app's own queries).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

/// An error of a statement sent through sqlx directly, as SeaORM reports one.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sqlx_err(e: sea_orm::sqlx::Error) -> StorageError {
    StorageError::Db(DbErr::Exec(sea_orm::RuntimeErr::SqlxError(Arc::new(e))))
}

fn corrupt(what: impl Into<String>) -> StorageError {
    StorageError::Corrupt(what.into())
}

fn log_entry(row: &QueryResult) -> Result<LogEntry, StorageError> {
    let op: String = row.try_get("", col::OP)?;
    Ok(LogEntry {
        seq: row.try_get("", col::SEQ)?,
        op_id: row.try_get("", col::OP_ID)?,
        tenant_id: row.try_get("", col::TENANT_ID)?,
        model: row.try_get("", col::MODEL)?,
        pk: row.try_get("", col::PK)?,
        op: Op::parse(&op).ok_or_else(|| corrupt(format!("op_log holds unknown op {op:?}")))?,
        actor: row.try_get("", col::ACTOR)?,
        updated_at: row.try_get("", col::UPDATED_AT)?,
        payload: row.try_get("", col::PAYLOAD)?,
    })
}

fn snapshot_record(row: &QueryResult) -> Result<SnapshotRecord, StorageError> {
    Ok(SnapshotRecord {
        tenant_id: row.try_get("", col::TENANT_ID)?,
        model: row.try_get("", col::MODEL)?,
        id: row.try_get("", col::ID)?,
        value: row.try_get("", col::VALUE)?,
        clocks: row.try_get("", col::CLOCKS)?,
        deleted: row.try_get("", col::DELETED)?,
        seq: row.try_get("", col::SEQ)?,
    })
}

fn select_log() -> SelectStatement {
    let mut q = Query::select();
    q.columns(LOG_COLUMNS).from(OP_LOG);
    q
}

fn select_snapshots(tenant_id: &str) -> SelectStatement {
    let mut q = Query::select();
    q.columns(SNAPSHOT_COLUMNS)
        .from(SNAPSHOTS)
        .and_where(Expr::col(col::TENANT_ID).eq(tenant_id));
    q
}

/// A page of `model`'s live rows that `condition` holds for (a shape's
/// bootstrap): the `(tenant_id, model, <field expression>, id)` index of
/// the shape room's `index_sql` serves it without reading other rows.
pub(crate) fn shape_page_query(
    tenant_id: &str,
    model: &str,
    condition: &crate::storage::SqlCondition,
    after: Option<&str>,
    limit: u64,
) -> SelectStatement {
    let mut q = select_snapshots(tenant_id);
    q.and_where(Expr::col((SNAPSHOTS, col::MODEL)).eq(model))
        .and_where(Expr::col((SNAPSHOTS, col::DELETED)).eq(false))
        .and_where(Expr::cust_with_values(
            condition.sql.clone(),
            condition.values.iter().cloned(),
        ));
    if let Some(after) = after {
        q.and_where(Expr::col((SNAPSHOTS, col::ID)).gt(after));
    }
    q.order_by((SNAPSHOTS, col::ID), Order::Asc).limit(limit);
    q
}

/// Snapshots of several rows of one tenant: per model,
/// `tenant_id = ? AND model = ? AND id IN (...)`, a range of the primary key
/// on every backend (an OR of `(model, id)` pairs is not, on SQLite).
async fn read_snapshots(
    conn: &impl ConnectionTrait,
    tenant_id: &str,
    keys: &[(&str, &str)],
) -> Result<Vec<SnapshotRecord>, StorageError> {
    let mut by_model: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (model, id) in keys {
        by_model.entry(model).or_default().push(id);
    }
    let mut out = Vec::new();
    let postgres = conn.get_database_backend() == DatabaseBackend::Postgres;
    for (model, ids) in by_model {
        if postgres {
            let stmt = sea_orm::Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                PG_SNAPSHOTS_BY_ID.as_str(),
                [
                    tenant_id.into(),
                    model.into(),
                    serde_json::to_string(&ids)
                        .map_err(|e| corrupt(e.to_string()))?
                        .into(),
                ],
            );
            for row in conn.query_all_raw(stmt).await? {
                out.push(snapshot_record(&row)?);
            }
            continue;
        }
        for chunk in ids.chunks(CHUNK) {
            let mut q = select_snapshots(tenant_id);
            q.and_where(Expr::col(col::MODEL).eq(model))
                .and_where(Expr::col(col::ID).is_in(chunk.iter().copied()));
            for row in conn.query_all(&q).await? {
                out.push(snapshot_record(&row)?);
            }
        }
    }
    Ok(out)
}

/// `INSERT INTO op_log` of these entries.
fn insert_log(rows: &[LogEntry]) -> Result<InsertStatement, StorageError> {
    let mut q = Query::insert();
    q.into_table(OP_LOG).columns(LOG_COLUMNS);
    for r in rows {
        q.values(log_values(r).map(Expr::val))
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(q)
}

/// The values of a log row, in `LOG_COLUMNS` order.
fn log_values(r: &LogEntry) -> [sea_orm::Value; LOG_COLUMNS.len()] {
    [
        r.seq.into(),
        r.op_id.as_str().into(),
        r.tenant_id.as_str().into(),
        r.model.as_str().into(),
        r.pk.as_str().into(),
        r.op.as_str().into(),
        r.actor.as_str().into(),
        r.updated_at.as_str().into(),
        r.payload.as_str().into(),
    ]
}

/// The values of a snapshot row, in `SNAPSHOT_COLUMNS` order.
fn snapshot_values(r: &SnapshotRecord) -> [sea_orm::Value; SNAPSHOT_COLUMNS.len()] {
    [
        r.tenant_id.as_str().into(),
        r.model.as_str().into(),
        r.id.as_str().into(),
        r.value.as_str().into(),
        r.clocks.as_str().into(),
        r.deleted.into(),
        r.seq.into(),
    ]
}

async fn read_head(conn: &impl ConnectionTrait, lock: bool) -> Result<i64, StorageError> {
    let mut q = Query::select();
    q.column(col::LAST_SEQ)
        .from(COUNTER)
        .and_where(Expr::col(col::ID).eq(1));
    if lock {
        q.lock_exclusive();
    }
    let row = conn
        .query_one(&q)
        .await?
        .ok_or_else(|| corrupt("sync_counter has no row: run the migration crate (`up`)"))?;
    Ok(row.try_get("", col::LAST_SEQ)?)
}

#[async_trait]
impl Storage for SeaOrmStorage {
    async fn begin(&self) -> Result<Box<dyn StorageTx>, StorageError> {
        if !self
            .checked
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            // Advice only: a database that cannot answer (an older Postgres
            // without plan_cache_mode, a proxy) must not fail the write.
            match settings_problems(&self.db).await {
                Ok(problems) => {
                    for problem in problems {
                        tracing::warn!("{problem}");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not check connection settings"),
            }
        }
        let txn = self.db.begin().await?;
        // Every writer queues on the counter row until the previous one
        // commits, which makes sequence order equal commit order. SQLite and
        // Postgres take the lock and read the head in one statement (on
        // SQLite this also takes the write lock now: upgrading a read
        // transaction later can fail with SQLITE_BUSY instead of waiting).
        // MySQL has no UPDATE .. RETURNING: SELECT .. FOR UPDATE there.
        let last_seq = match txn.get_database_backend() {
            DatabaseBackend::MySql => read_head(&txn, true).await?,
            backend => {
                let stmt = sea_orm::Statement::from_string(
                    backend,
                    format!(
                        "UPDATE {COUNTER} SET {last} = {last} WHERE {id} = 1 RETURNING {last}",
                        last = col::LAST_SEQ,
                        id = col::ID
                    ),
                );
                let row = txn.query_one_raw(stmt).await?.ok_or_else(|| {
                    corrupt("sync_counter has no row: run the migration crate (`up`)")
                })?;
                row.try_get("", col::LAST_SEQ)?
            }
        };
        Ok(Box::new(SeaOrmTx { txn, last_seq }))
    }

    async fn head(&self) -> Result<i64, StorageError> {
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            return direct.head().await;
        }
        read_head(&self.db, false).await
    }

    /// The pool (transactions, retention) and, on a SQLite file, the
    /// storage's own connections (commits, reads) each read the head.
    async fn check_ready(&self) -> Result<(), StorageError> {
        read_head(&self.db, false).await?;
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            direct.head().await?;
        }
        Ok(())
    }

    async fn commit_if_head(
        &self,
        expected_head: i64,
        writes: Writes<'_>,
    ) -> Result<bool, StorageError> {
        // The one-statement paths write the engine's tables only.
        let fast = writes.materialized.is_empty();
        #[cfg(feature = "sqlite")]
        if fast && let Some(direct) = self.direct().await? {
            return direct.commit_if_head(expected_head, writes).await;
        }
        #[cfg(feature = "sqlite")]
        if fast && self.db.get_database_backend() == DatabaseBackend::Sqlite {
            let pool = self.db.get_sqlite_connection_pool();
            return sqlite_commit_if_head(pool, expected_head, writes).await;
        }
        #[cfg(feature = "postgres")]
        if fast && self.db.get_database_backend() == DatabaseBackend::Postgres {
            let pool = self.db.get_postgres_connection_pool();
            return postgres_commit_if_head(pool, expected_head, writes).await;
        }
        super::commit_if_head_in_steps(self, expected_head, writes).await
    }

    async fn select_changes_since(
        &self,
        tenant_id: &str,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            return direct
                .changes_since(Some(tenant_id), after, upto, limit)
                .await;
        }
        let mut q = select_log();
        q.and_where(Expr::col(col::TENANT_ID).eq(tenant_id))
            .and_where(Expr::col(col::SEQ).gt(after))
            .and_where(Expr::col(col::SEQ).lte(upto))
            .order_by(col::SEQ, Order::Asc)
            .limit(limit);
        self.db.query_all(&q).await?.iter().map(log_entry).collect()
    }

    async fn recent_changes(
        &self,
        tenant_id: &str,
        before: Option<i64>,
        row: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let mut q = select_log();
        q.and_where(Expr::col(col::TENANT_ID).eq(tenant_id));
        if let Some(before) = before {
            q.and_where(Expr::col(col::SEQ).lt(before));
        }
        if let Some((model, pk)) = row {
            q.and_where(Expr::col(col::MODEL).eq(model))
                .and_where(Expr::col(col::PK).eq(pk));
        }
        q.order_by(col::SEQ, Order::Desc).limit(limit);
        self.db.query_all(&q).await?.iter().map(log_entry).collect()
    }

    async fn select_all_since(
        &self,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            return direct.changes_since(None, after, upto, limit).await;
        }
        let mut q = select_log();
        q.and_where(Expr::col(col::SEQ).gt(after))
            .and_where(Expr::col(col::SEQ).lte(upto))
            .order_by(col::SEQ, Order::Asc)
            .limit(limit);
        self.db.query_all(&q).await?.iter().map(log_entry).collect()
    }

    async fn listen_commits(&self, signal: Arc<CommitSignal>) -> Result<bool, StorageError> {
        #[cfg(feature = "postgres")]
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            return postgres::listen(self.db.get_postgres_connection_pool(), signal).await;
        }
        let _ = signal;
        Ok(false)
    }

    async fn read_snapshot(
        &self,
        tenant_id: &str,
        model: &str,
        id: &str,
    ) -> Result<Option<SnapshotRecord>, StorageError> {
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            let mut rows = direct.read_snapshots(tenant_id, &[(model, id)]).await?;
            return Ok(rows.pop());
        }
        let mut q = select_snapshots(tenant_id);
        q.and_where(Expr::col(col::MODEL).eq(model))
            .and_where(Expr::col(col::ID).eq(id));
        self.db
            .query_one(&q)
            .await?
            .as_ref()
            .map(snapshot_record)
            .transpose()
    }

    async fn read_snapshots(
        &self,
        tenant_id: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            return direct.read_snapshots(tenant_id, keys).await;
        }
        read_snapshots(&self.db, tenant_id, keys).await
    }

    async fn snapshot_page(
        &self,
        tenant_id: &str,
        model: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            return direct.snapshot_page(tenant_id, model, after, limit).await;
        }
        let mut q = select_snapshots(tenant_id);
        q.and_where(Expr::col(col::MODEL).eq(model));
        if let Some(after) = after {
            q.and_where(Expr::col(col::ID).gt(after));
        }
        q.order_by(col::ID, Order::Asc).limit(limit);
        self.db
            .query_all(&q)
            .await?
            .iter()
            .map(snapshot_record)
            .collect()
    }

    async fn snapshot_page_where(
        &self,
        tenant_id: &str,
        model: &str,
        condition: &crate::storage::SqlCondition,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        let q = shape_page_query(tenant_id, model, condition, after, limit);
        self.db
            .query_all(&q)
            .await?
            .iter()
            .map(snapshot_record)
            .collect()
    }

    async fn tenant_snapshot_page(
        &self,
        tenant_id: &str,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        self.tenant_snapshots(tenant_id, after, limit).await
    }

    fn database_backend(&self) -> Option<DatabaseBackend> {
        Some(self.db.get_database_backend())
    }

    fn retention(&self) -> Option<&dyn Retention> {
        Some(self)
    }
}
