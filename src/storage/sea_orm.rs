//! [`Storage`] over a SeaORM `DatabaseConnection` (SQLite, Postgres, MySQL/MariaDB).
//!
//! Tables are created by the `migration` crate, never at runtime.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::sea_query::{
    Expr, ExprTrait, InsertStatement, OnConflict, Order, Query, SelectStatement,
};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr, QueryResult,
    TransactionTrait,
};

use super::{CommitSignal, LogEntry, SnapshotRecord, Storage, StorageError, StorageTx, Writes};
use crate::protocol::Op;

const OP_LOG: &str = "op_log";
const SNAPSHOTS: &str = "snapshots";
const COUNTER: &str = "sync_counter";
const LOG_COLUMNS: [&str; 9] = [
    "seq",
    "op_id",
    "tenant_id",
    "model",
    "pk",
    "op",
    "actor",
    "updated_at",
    "payload",
];
const SNAPSHOT_COLUMNS: [&str; 7] = [
    "tenant_id",
    "model",
    "id",
    "value",
    "clocks",
    "deleted",
    "seq",
];
/// Postgres channel on which commits are announced to other instances.
const NOTIFY_CHANNEL: &str = "better_sync_commits";
/// Rows per multi-row statement: far below every backend's bind-parameter limit.
const CHUNK: usize = 400;

// On Postgres, snapshot lookups are one primary-key probe per key (a LATERAL
// subquery with equality on the whole key). `id IN (...)` is costed from
// statistics, and statistics taken before a tenant grew (a new tenant, a
// fresh table) make the planner scan the tenant's rows and filter: seen at
// 5-16 ms per lookup after 40,000 rows, until the next autoanalyze. Equality
// on a unique key is one row whatever the statistics say. `OFFSET 0` keeps
// the planner from flattening the subquery back into a join costed from
// those statistics. (The same shape does not help the op id lookup: there the
// planner can still pick the `(tenant_id, seq)` index at an equal cost.)
const PG_SNAPSHOTS_BY_ID: &str = "SELECT s.tenant_id, s.model, s.id, s.value, s.clocks, s.deleted, s.seq \
     FROM json_array_elements_text($3::json) AS k(id) \
     CROSS JOIN LATERAL (SELECT * FROM snapshots x \
       WHERE x.tenant_id = $1 AND x.model = $2 AND x.id = k.id OFFSET 0) s";

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
}

impl SeaOrmStorage {
    /// Storage over an open connection pool. The tables must exist (run the
    /// `migration` crate first). The first write transaction logs a warning
    /// for each setting that differs from what [`SeaOrmStorage::connect`]
    /// sets (see [`SeaOrmStorage::check_settings`]).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            checked: Arc::default(),
        }
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
    /// acknowledged push survives power loss) and a busy timeout. On
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
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            opts.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
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

    /// The underlying connection.
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
    let op: String = row.try_get("", "op")?;
    Ok(LogEntry {
        seq: row.try_get("", "seq")?,
        op_id: row.try_get("", "op_id")?,
        tenant_id: row.try_get("", "tenant_id")?,
        model: row.try_get("", "model")?,
        pk: row.try_get("", "pk")?,
        op: Op::parse(&op).ok_or_else(|| corrupt(format!("op_log holds unknown op {op:?}")))?,
        actor: row.try_get("", "actor")?,
        updated_at: row.try_get("", "updated_at")?,
        payload: row.try_get("", "payload")?,
    })
}

fn snapshot_record(row: &QueryResult) -> Result<SnapshotRecord, StorageError> {
    Ok(SnapshotRecord {
        tenant_id: row.try_get("", "tenant_id")?,
        model: row.try_get("", "model")?,
        id: row.try_get("", "id")?,
        value: row.try_get("", "value")?,
        clocks: row.try_get("", "clocks")?,
        deleted: row.try_get("", "deleted")?,
        seq: row.try_get("", "seq")?,
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
        .and_where(Expr::col("tenant_id").eq(tenant_id));
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
                PG_SNAPSHOTS_BY_ID,
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
            q.and_where(Expr::col("model").eq(model))
                .and_where(Expr::col("id").is_in(chunk.iter().copied()));
            for row in conn.query_all(&q).await? {
                out.push(snapshot_record(&row)?);
            }
        }
    }
    Ok(out)
}

/// Appends `INSERT INTO "table" (columns) VALUES (?, ..), ..` for `rows`
/// rows to a SQLite statement list.
fn sqlite_insert(sql: &mut String, table: &str, columns: &[&str], rows: usize) {
    use std::fmt::Write;
    let _ = write!(sql, "INSERT INTO \"{table}\" (");
    for (i, c) in columns.iter().enumerate() {
        let _ = write!(sql, "{}\"{c}\"", if i == 0 { "" } else { ", " });
    }
    sql.push_str(") VALUES ");
    let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
    sql.push_str(&vec![tuple; rows].join(", "));
}

/// The conflict clause of a snapshot upsert.
const SQLITE_SNAPSHOT_UPSERT: &str = " ON CONFLICT (\"tenant_id\", \"model\", \"id\") DO UPDATE SET \
     \"value\" = \"excluded\".\"value\", \"clocks\" = \"excluded\".\"clocks\", \
     \"deleted\" = \"excluded\".\"deleted\", \"seq\" = \"excluded\".\"seq\"";

/// SQLite: the log insert (skipping logged op ids), the snapshot upsert and
/// the counter update of a commit, as one statement list and its values.
fn sqlite_writes(
    rows: &[LogEntry],
    snapshots: &[SnapshotRecord],
    last_seq: i64,
) -> (String, Vec<sea_orm::Value>) {
    let mut sql = String::new();
    sqlite_insert(&mut sql, OP_LOG, &LOG_COLUMNS, rows.len());
    sql.push_str(" ON CONFLICT (\"tenant_id\", \"op_id\") DO NOTHING;");
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(
        rows.len() * LOG_COLUMNS.len() + snapshots.len() * SNAPSHOT_COLUMNS.len() + 1,
    );
    for r in rows {
        values.extend(log_values(r));
    }
    if !snapshots.is_empty() {
        sql.push(' ');
        sqlite_insert(&mut sql, SNAPSHOTS, &SNAPSHOT_COLUMNS, snapshots.len());
        sql.push_str(SQLITE_SNAPSHOT_UPSERT);
        sql.push(';');
        for r in snapshots {
            values.extend(snapshot_values(r));
        }
    }
    sql.push_str(&format!(
        " UPDATE \"{COUNTER}\" SET \"last_seq\" = ? WHERE \"id\" = 1"
    ));
    values.push(last_seq.into());
    (sql, values)
}

/// SQLite: [`Storage::commit_if_head`] as one statement list, one round
/// trip to the connection's worker thread (sqlx runs each SQLite connection
/// on a thread of its own, and on a virtual machine every hand-over between
/// threads costs more than the statements): the default's steps took five.
///
/// The checks are constraint errors that stop the list before its `COMMIT`:
/// the counter update sets `NULL` (refused by `NOT NULL`) unless the head is
/// `expected_head`, and plain inserts meet the unique op id and primary
/// keys; on a schema whose counter allows `NULL`, the log's `seq` key still
/// refuses a commit after someone else's (whose entries took those
/// numbers). After any error the transaction is rolled back here; a
/// connection whose state is unknown is closed rather than returned to the
/// pool.
///
/// The writer calls this only after a commit of its own found the counter
/// row, which the list cannot check (an update of no row is no error).
/// sqlx calls statement lists on SQLite deprecated (launchbadge/sqlx#3108);
/// the storage tests fail at once if a version stops running them.
#[cfg(feature = "sqlite")]
async fn sqlite_commit_if_head(
    pool: &sea_orm::sqlx::SqlitePool,
    expected_head: i64,
    Writes {
        entries,
        created,
        updated,
        last_seq,
    }: Writes<'_>,
) -> Result<bool, StorageError> {
    use sea_orm::sqlx;
    use sea_orm::sqlx::error::ErrorKind;

    let mut sql = format!(
        "BEGIN IMMEDIATE; UPDATE \"{COUNTER}\" SET \"last_seq\" = \
         CASE WHEN \"last_seq\" = ? THEN ? END WHERE \"id\" = 1;"
    );
    for chunk in entries.chunks(CHUNK) {
        sql.push(' ');
        sqlite_insert(&mut sql, OP_LOG, &LOG_COLUMNS, chunk.len());
        sql.push(';');
    }
    for (rows, upsert) in [(created, false), (updated, true)] {
        for chunk in rows.chunks(CHUNK) {
            sql.push(' ');
            sqlite_insert(&mut sql, SNAPSHOTS, &SNAPSHOT_COLUMNS, chunk.len());
            if upsert {
                sql.push_str(SQLITE_SNAPSHOT_UPSERT);
            }
            sql.push(';');
        }
    }
    sql.push_str(" COMMIT");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(expected_head)
        .bind(last_seq);
    for e in entries {
        query = query
            .bind(e.seq)
            .bind(e.op_id.as_str())
            .bind(e.tenant_id.as_str())
            .bind(e.model.as_str())
            .bind(e.pk.as_str())
            .bind(e.op.as_str())
            .bind(e.actor.as_str())
            .bind(e.updated_at.as_str())
            .bind(e.payload.as_str());
    }
    for r in created.iter().chain(updated) {
        query = query
            .bind(r.tenant_id.as_str())
            .bind(r.model.as_str())
            .bind(r.id.as_str())
            .bind(r.value.as_str())
            .bind(r.clocks.as_str())
            .bind(r.deleted)
            .bind(r.seq);
    }

    let mut conn = ClosedUnlessReturned(Some(pool.acquire().await.map_err(sqlx_err)?));
    let Some(c) = conn.0.as_mut() else {
        return Err(corrupt("no connection"));
    };
    match query.execute(&mut **c).await {
        Ok(_) => {
            conn.give_back();
            Ok(true)
        }
        Err(e) => {
            let refused = matches!(&e, sqlx::Error::Database(d)
                if matches!(d.kind(), ErrorKind::UniqueViolation | ErrorKind::NotNullViolation));
            // The list stopped inside its transaction, or before it began
            // (then there is nothing to roll back). If the connection's
            // state is still unclear, the guard closes it, which rolls back
            // whatever is open (and would empty a `sqlite::memory:`
            // database, whose pool is that one connection).
            match sqlx::query("ROLLBACK").execute(&mut **c).await {
                Ok(_) => conn.give_back(),
                Err(sqlx::Error::Database(d))
                    if d.message().contains("no transaction is active") =>
                {
                    conn.give_back()
                }
                Err(_) => {}
            }
            if refused { Ok(false) } else { Err(sqlx_err(e)) }
        }
    }
}

/// Postgres: [`Storage::commit_if_head`] as one statement in its own
/// transaction, one round trip where the default's steps take eight. The
/// counter update sets `NULL` (refused by `NOT NULL`) unless the head is
/// `expected_head`; the inserts read the counter update's row, so that it
/// runs first and a commit waits on the counter lock before it holds any
/// index entry another writer could wait on (which would deadlock).
#[cfg(feature = "postgres")]
const PG_COMMIT_IF_HEAD: &str = "WITH head AS (\
       UPDATE sync_counter SET last_seq = CASE WHEN last_seq = $1 THEN $2 END \
       WHERE id = 1 RETURNING last_seq), \
     log AS (\
       INSERT INTO op_log (seq, op_id, tenant_id, model, pk, op, actor, updated_at, payload) \
       SELECT e.* FROM head, unnest($3::bigint[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) AS e RETURNING 1), \
     created AS (\
       INSERT INTO snapshots (tenant_id, model, id, value, clocks, deleted, seq) \
       SELECT r.* FROM head, unnest($12::text[], $13::text[], $14::text[], $15::text[], \
         $16::text[], $17::bool[], $18::bigint[]) AS r RETURNING 1), \
     updated AS (\
       INSERT INTO snapshots (tenant_id, model, id, value, clocks, deleted, seq) \
       SELECT r.* FROM head, unnest($19::text[], $20::text[], $21::text[], $22::text[], \
         $23::text[], $24::bool[], $25::bigint[]) AS r \
       ON CONFLICT (tenant_id, model, id) DO UPDATE SET value = excluded.value, \
         clocks = excluded.clocks, deleted = excluded.deleted, seq = excluded.seq RETURNING 1), \
     notice AS (SELECT pg_notify($26, $2::text) FROM head) \
     SELECT (SELECT count(*) FROM head) AS head, (SELECT count(*) FROM notice) AS notice";

#[cfg(feature = "postgres")]
async fn postgres_commit_if_head(
    pool: &sea_orm::sqlx::PgPool,
    expected_head: i64,
    Writes {
        entries,
        created,
        updated,
        last_seq,
    }: Writes<'_>,
) -> Result<bool, StorageError> {
    use sea_orm::sqlx;
    use sea_orm::sqlx::error::ErrorKind;
    fn column<'a, T, R>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let mut query = sqlx::query(PG_COMMIT_IF_HEAD)
        .bind(expected_head)
        .bind(last_seq)
        .bind(column(entries, |e| e.seq))
        .bind(column(entries, |e| e.op_id.as_str()))
        .bind(column(entries, |e| e.tenant_id.as_str()))
        .bind(column(entries, |e| e.model.as_str()))
        .bind(column(entries, |e| e.pk.as_str()))
        .bind(column(entries, |e| e.op.as_str()))
        .bind(column(entries, |e| e.actor.as_str()))
        .bind(column(entries, |e| e.updated_at.as_str()))
        .bind(column(entries, |e| e.payload.as_str()));
    for rows in [created, updated] {
        query = query
            .bind(column(rows, |r| r.tenant_id.as_str()))
            .bind(column(rows, |r| r.model.as_str()))
            .bind(column(rows, |r| r.id.as_str()))
            .bind(column(rows, |r| r.value.as_str()))
            .bind(column(rows, |r| r.clocks.as_str()))
            .bind(column(rows, |r| r.deleted))
            .bind(column(rows, |r| r.seq));
    }
    let query = query.bind(NOTIFY_CHANNEL);
    match query.fetch_one(pool).await {
        // Without the counter row the inserts (which read it) wrote nothing.
        Ok(row) => match sqlx::Row::try_get::<i64, _>(&row, "head") {
            Ok(1) => Ok(true),
            Ok(_) => Err(corrupt(
                "sync_counter has no row: run the migration crate (`up`)",
            )),
            Err(e) => Err(sqlx_err(e)),
        },
        Err(sqlx::Error::Database(d))
            if matches!(
                d.kind(),
                ErrorKind::UniqueViolation | ErrorKind::NotNullViolation
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(sqlx_err(e)),
    }
}

/// A pooled SQLite connection that goes back to the pool only when
/// [`ClosedUnlessReturned::give_back`] says its transaction is over; dropped
/// otherwise (an error, a cancelled future), it is closed.
#[cfg(feature = "sqlite")]
struct ClosedUnlessReturned(Option<sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Sqlite>>);

#[cfg(feature = "sqlite")]
impl ClosedUnlessReturned {
    fn give_back(&mut self) {
        self.0 = None;
    }
}

#[cfg(feature = "sqlite")]
impl Drop for ClosedUnlessReturned {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            c.close_on_drop();
        }
    }
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

async fn settings_problems(conn: &impl ConnectionTrait) -> Result<Vec<String>, StorageError> {
    let backend = conn.get_database_backend();
    let text = |sql: &str| {
        let stmt = sea_orm::Statement::from_string(backend, sql);
        async move {
            let row = conn.query_one_raw(stmt).await?;
            Ok::<_, StorageError>(match row {
                Some(r) => r
                    .try_get_by_index::<String>(0)
                    .or_else(|_| r.try_get_by_index::<i64>(0).map(|n| n.to_string()))?,
                None => String::new(),
            })
        }
    };
    let mut problems = Vec::new();
    match backend {
        DatabaseBackend::Sqlite => {
            let journal = text("PRAGMA journal_mode").await?;
            if !journal.eq_ignore_ascii_case("wal") && !journal.eq_ignore_ascii_case("memory") {
                problems.push(format!(
                    "SQLite journal_mode is {journal:?}, not WAL: readers block the writer \
                     (open the pool with SeaOrmStorage::connect, or set journal_mode=WAL)"
                ));
            }
            // 2 = FULL, 3 = EXTRA.
            let sync = text("PRAGMA synchronous").await?;
            if sync.parse::<i64>().is_ok_and(|n| n < 2) {
                problems.push(format!(
                    "SQLite synchronous is {sync} (below FULL): an acknowledged push can be \
                     lost on power failure (open the pool with SeaOrmStorage::connect, or set \
                     synchronous=FULL)"
                ));
            }
        }
        DatabaseBackend::Postgres => {
            let mode = text("SHOW plan_cache_mode").await?;
            if mode != "force_custom_plan" {
                problems.push(format!(
                    "Postgres plan_cache_mode is {mode:?}: prepared statements may keep a \
                     generic plan made while the tables were small and slow down as they grow \
                     (open the pool with SeaOrmStorage::connect, or set \
                     plan_cache_mode=force_custom_plan)"
                ));
            }
        }
        _ => {}
    }
    Ok(problems)
}

async fn read_head(conn: &impl ConnectionTrait, lock: bool) -> Result<i64, StorageError> {
    let mut q = Query::select();
    q.column("last_seq")
        .from(COUNTER)
        .and_where(Expr::col("id").eq(1));
    if lock {
        q.lock_exclusive();
    }
    let row = conn
        .query_one(&q)
        .await?
        .ok_or_else(|| corrupt("sync_counter has no row: run the migration crate (`up`)"))?;
    Ok(row.try_get("", "last_seq")?)
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
                    "UPDATE sync_counter SET last_seq = last_seq WHERE id = 1 RETURNING last_seq",
                );
                let row = txn.query_one_raw(stmt).await?.ok_or_else(|| {
                    corrupt("sync_counter has no row: run the migration crate (`up`)")
                })?;
                row.try_get("", "last_seq")?
            }
        };
        Ok(Box::new(SeaOrmTx { txn, last_seq }))
    }

    async fn head(&self) -> Result<i64, StorageError> {
        read_head(&self.db, false).await
    }

    async fn commit_if_head(
        &self,
        expected_head: i64,
        writes: Writes<'_>,
    ) -> Result<bool, StorageError> {
        #[cfg(feature = "sqlite")]
        if self.db.get_database_backend() == DatabaseBackend::Sqlite {
            let pool = self.db.get_sqlite_connection_pool();
            return sqlite_commit_if_head(pool, expected_head, writes).await;
        }
        #[cfg(feature = "postgres")]
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
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
        let mut q = select_log();
        q.and_where(Expr::col("tenant_id").eq(tenant_id))
            .and_where(Expr::col("seq").gt(after))
            .and_where(Expr::col("seq").lte(upto))
            .order_by("seq", Order::Asc)
            .limit(limit);
        self.db.query_all(&q).await?.iter().map(log_entry).collect()
    }

    async fn select_all_since(
        &self,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let mut q = select_log();
        q.and_where(Expr::col("seq").gt(after))
            .and_where(Expr::col("seq").lte(upto))
            .order_by("seq", Order::Asc)
            .limit(limit);
        self.db.query_all(&q).await?.iter().map(log_entry).collect()
    }

    async fn listen_commits(&self, signal: Arc<CommitSignal>) -> Result<bool, StorageError> {
        #[cfg(feature = "postgres")]
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            use sea_orm::sqlx::postgres::PgListener;
            let map = |e: sea_orm::sqlx::Error| StorageError::Db(DbErr::Custom(e.to_string()));
            let mut listener = PgListener::connect_with(self.db.get_postgres_connection_pool())
                .await
                .map_err(map)?;
            listener.listen(NOTIFY_CHANNEL).await.map_err(map)?;
            // Anything committed while we were connecting is found by the
            // engine's first head read after this wake-up.
            signal.wake();
            loop {
                match listener.try_recv().await.map_err(map)? {
                    // The payload is the new head (see `commit`).
                    Some(n) => match n.payload().parse() {
                        Ok(last_seq) => signal.committed(last_seq),
                        Err(_) => signal.wake(),
                    },
                    // The connection dropped and was re-established;
                    // notifications may have been lost meanwhile.
                    None => signal.wake(),
                }
            }
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
        let mut q = select_snapshots(tenant_id);
        q.and_where(Expr::col("model").eq(model))
            .and_where(Expr::col("id").eq(id));
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
        read_snapshots(&self.db, tenant_id, keys).await
    }

    async fn snapshot_page(
        &self,
        tenant_id: &str,
        model: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        let mut q = select_snapshots(tenant_id);
        q.and_where(Expr::col("model").eq(model));
        if let Some(after) = after {
            q.and_where(Expr::col("id").gt(after));
        }
        q.order_by("id", Order::Asc).limit(limit);
        self.db
            .query_all(&q)
            .await?
            .iter()
            .map(snapshot_record)
            .collect()
    }
}

struct SeaOrmTx {
    txn: DatabaseTransaction,
    last_seq: i64,
}

#[async_trait]
impl StorageTx for SeaOrmTx {
    fn last_seq(&self) -> i64 {
        self.last_seq
    }

    async fn find_ops(
        &mut self,
        tenant_id: &str,
        op_ids: &[&str],
    ) -> Result<Vec<LogEntry>, StorageError> {
        let mut out = Vec::new();
        for chunk in op_ids.chunks(CHUNK) {
            let mut q = select_log();
            q.and_where(Expr::col("tenant_id").eq(tenant_id))
                .and_where(Expr::col("op_id").is_in(chunk.iter().copied()));
            for row in self.txn.query_all(&q).await? {
                out.push(log_entry(&row)?);
            }
        }
        Ok(out)
    }

    async fn read_snapshots(
        &mut self,
        tenant_id: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        read_snapshots(&self.txn, tenant_id, keys).await
    }

    async fn insert_changes(&mut self, rows: &[LogEntry]) -> Result<(), StorageError> {
        for chunk in rows.chunks(CHUNK) {
            self.txn.execute(&insert_log(chunk)?).await?;
        }
        Ok(())
    }

    async fn insert_new_changes(&mut self, rows: &[LogEntry]) -> Result<usize, StorageError> {
        if self.txn.get_database_backend() == DatabaseBackend::MySql {
            // MySQL's "insert unless present" (`INSERT IGNORE`) would also
            // turn other errors into warnings: look the op ids up instead.
            return super::look_up_then_insert(self, rows).await;
        }
        // The unique (tenant_id, op_id) index decides, whatever the planner
        // would have made of a lookup.
        let mut skipped = 0;
        for chunk in rows.chunks(CHUNK) {
            let mut q = insert_log(chunk)?;
            q.on_conflict(
                OnConflict::columns(["tenant_id", "op_id"])
                    .do_nothing()
                    .to_owned(),
            );
            let inserted = self.txn.execute(&q).await?.rows_affected();
            skipped += chunk.len().saturating_sub(inserted as usize);
            if skipped > 0 {
                break;
            }
        }
        Ok(skipped)
    }

    async fn commit_new_changes(
        self: Box<Self>,
        rows: &[LogEntry],
        snapshots: &[SnapshotRecord],
        last_seq: i64,
    ) -> Result<usize, StorageError> {
        let one_list = self.txn.get_database_backend() == DatabaseBackend::Sqlite
            && !rows.is_empty()
            && rows.len() <= CHUNK
            && snapshots.len() <= CHUNK;
        if !one_list {
            return super::commit_new_in_steps(self, rows, snapshots, last_seq).await;
        }
        // sqlx runs each SQLite connection on a worker thread, and every
        // statement is a round trip to it: send the three writes as one
        // statement list (sqlx binds the parameters across them in order).
        let (sql, values) = sqlite_writes(rows, snapshots, last_seq);
        let changed = self
            .txn
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                sql,
                values,
            ))
            .await?
            .rows_affected() as usize;
        // The count adds up the three statements: each upserted snapshot
        // and the counter are one change, an inserted log row is one, a
        // skipped one none.
        let inserted = changed.saturating_sub(snapshots.len() + 1);
        let skipped = rows.len().saturating_sub(inserted);
        if skipped > 0 {
            // Dropping the transaction rolls it back.
            return Ok(skipped);
        }
        self.txn.commit().await?;
        Ok(0)
    }

    async fn write_snapshots(&mut self, rows: &[SnapshotRecord]) -> Result<(), StorageError> {
        for chunk in rows.chunks(CHUNK) {
            let mut q = Query::insert();
            q.into_table(SNAPSHOTS).columns(SNAPSHOT_COLUMNS);
            for r in chunk {
                q.values(snapshot_values(r).map(Expr::val))
                    .map_err(|e| corrupt(e.to_string()))?;
            }
            q.on_conflict(
                OnConflict::columns(["tenant_id", "model", "id"])
                    .update_columns(["value", "clocks", "deleted", "seq"])
                    .to_owned(),
            );
            self.txn.execute(&q).await?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>, last_seq: i64) -> Result<(), StorageError> {
        if last_seq != self.last_seq {
            let mut q = Query::update();
            q.table(COUNTER)
                .value("last_seq", last_seq)
                .and_where(Expr::col("id").eq(1));
            self.txn.execute(&q).await?;
            if self.txn.get_database_backend() == DatabaseBackend::Postgres {
                // Delivered at commit to every instance listening.
                let stmt = sea_orm::Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [NOTIFY_CHANNEL.into(), last_seq.to_string().into()],
                );
                self.txn.execute_raw(stmt).await?;
            }
        }
        self.txn.commit().await?;
        Ok(())
    }
}
