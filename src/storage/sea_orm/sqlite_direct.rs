//! SQLite without sqlx's worker hop: the hot statements on connections this
//! storage owns, each on a thread of its own.
//!
//! sqlx runs every SQLite connection on a worker thread and hands each row
//! of an answer back through a channel: reading the log cost 7-9x what
//! SQLite itself takes (docs/PERFORMANCE.md, B2 against the physical
//! ceiling). Here a read is one job sent to a reader thread, which steps
//! the prepared statement and sends the whole page back at once; a commit is
//! one job on the writer thread. Everything else (transactions of the
//! optimistic path, retention, materialized models, the app's own queries)
//! stays on the SeaORM pool: both write to one WAL file, SQLite orders them,
//! and the counter check of [`Storage::commit_if_head`] holds across them.
//!
//! Only a file database in WAL mode goes direct (what
//! [`SeaOrmStorage::connect`] opens): an in-memory database lives inside
//! sqlx's connection, and without WAL readers would block the writer.
//!
//! [`Storage::commit_if_head`]: crate::storage::Storage::commit_if_head
//! [`SeaOrmStorage::connect`]: super::SeaOrmStorage::connect

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};

use better_sync_core::protocol::Op;
use better_sync_migration::schema::{
    OP_LOG, OP_LOG_COLUMNS as LOG_COLUMNS, SNAPSHOT_COLUMNS, SNAPSHOTS, SYNC_COUNTER as COUNTER,
    SYNC_HORIZONS, col,
};
use rusqlite::{Connection, OpenFlags, Row, params_from_iter};

use super::corrupt;
use super::sqlite::{SQLITE_SNAPSHOT_UPSERT, sqlite_insert};
use crate::storage::{LogEntry, SnapshotRecord, StorageError, Writes};

/// Reader threads: reads are short and SQLite's WAL lets them run beside
/// the writer; more than the cores would only queue in the kernel.
fn reader_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// The hot statements of a SQLite file database, on threads this storage owns.
pub(super) struct SqliteDirect {
    writer: Worker,
    readers: Worker,
}

impl std::fmt::Debug for SqliteDirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDirect").finish_non_exhaustive()
    }
}

/// What the SeaORM pool says of its database, to decide whether to go direct.
pub(super) struct PoolFacts {
    /// The main database's file ("" for an in-memory or temporary one).
    pub file: String,
    /// `PRAGMA journal_mode`.
    pub journal_mode: String,
    /// `PRAGMA synchronous` (0 off, 1 normal, 2 full, 3 extra).
    pub synchronous: i64,
    /// `PRAGMA busy_timeout`, in milliseconds.
    pub busy_timeout_ms: i64,
    /// `PRAGMA locking_mode`: an `exclusive` pool keeps the file to itself.
    pub locking_mode: String,
    /// The readers' `PRAGMA mmap_size` (not the pool's: its setting).
    pub read_mmap_bytes: u64,
}

impl SqliteDirect {
    /// Open the writer's and the readers' connections to the pool's file,
    /// with its durability and busy timeout; `None` when the database
    /// cannot be shared this way (in memory, not WAL).
    pub(super) fn open(facts: &PoolFacts) -> Result<Option<Self>, StorageError> {
        if facts.file.is_empty()
            || !facts.journal_mode.eq_ignore_ascii_case("wal")
            || !facts.locking_mode.eq_ignore_ascii_case("normal")
        {
            return Ok(None);
        }
        let path = PathBuf::from(&facts.file);
        let setup = |c: &Connection, reader: bool| -> rusqlite::Result<()> {
            c.busy_timeout(std::time::Duration::from_millis(
                facts.busy_timeout_ms.max(0) as u64,
            ))?;
            c.pragma_update(None, "synchronous", facts.synchronous)?;
            if reader {
                // A reader never writes; say so to SQLite as well.
                c.pragma_update(None, "query_only", true)?;
                // Pages read in place, not copied out of the page cache
                // (SQLite remaps when the file shrinks under it).
                c.pragma_update(
                    None,
                    "mmap_size",
                    i64::try_from(facts.read_mmap_bytes).unwrap_or(i64::MAX),
                )?;
            }
            Ok(())
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = |reader: bool| -> Result<Connection, StorageError> {
            let c = Connection::open_with_flags(&path, flags).map_err(sqlite_err)?;
            setup(&c, reader).map_err(sqlite_err)?;
            Ok(c)
        };
        let writer = Worker::start("bsync-sqlite-w", vec![open(false)?]);
        let readers = Worker::start(
            "bsync-sqlite-r",
            (0..reader_count())
                .map(|_| open(true))
                .collect::<Result<_, _>>()?,
        );
        Ok(Some(Self { writer, readers }))
    }

    /// [`Storage::commit_if_head`](crate::storage::Storage::commit_if_head)
    /// on the writer thread: one transaction, refused (nothing written,
    /// `false`) when the counter is not at `expected_head` or an op id or
    /// created row exists.
    pub(super) async fn commit_if_head(
        &self,
        expected_head: i64,
        writes: Writes<'_>,
    ) -> Result<bool, StorageError> {
        // The thread outlives this call's borrow: the rows go over as owned
        // values (a copy of the payload text, cheaper than the thread hops
        // this saves).
        let entries = writes.entries.to_vec();
        let created = writes.created.to_vec();
        let updated = writes.updated.to_vec();
        let last_seq = writes.last_seq;
        self.writer
            .run(move |c| commit_if_head(c, expected_head, &entries, &created, &updated, last_seq))
            .await
    }

    /// The committed head.
    pub(super) async fn head(&self) -> Result<i64, StorageError> {
        self.readers.run(read_head).await
    }

    /// The tenant's horizon (0 when compaction never raised it), read on
    /// every pull page: on a reader, not through the pool's worker.
    pub(super) async fn horizon(&self, tenant_id: &str) -> Result<i64, StorageError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT \"{}\" FROM \"{SYNC_HORIZONS}\" WHERE \"{}\" = ?1",
                col::HORIZON,
                col::TENANT_ID
            )
        });
        let tenant_id = tenant_id.to_owned();
        self.readers
            .run(move |c| {
                let mut s = c.prepare_cached(&SQL).map_err(sqlite_err)?;
                let mut rows = s.query([&tenant_id]).map_err(sqlite_err)?;
                match rows.next().map_err(sqlite_err)? {
                    Some(row) => row.get(0).map_err(sqlite_err),
                    None => Ok(0),
                }
            })
            .await
    }

    /// Log entries `after < seq <= upto` of one tenant, or of all tenants
    /// when `tenant_id` is `None`, by seq, at most `limit`.
    pub(super) async fn changes_since(
        &self,
        tenant_id: Option<&str>,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let tenant_id = tenant_id.map(str::to_owned);
        self.readers
            .run(move |c| {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                match &tenant_id {
                    Some(t) => {
                        let mut s = c.prepare_cached(&SELECT_TENANT_LOG).map_err(sqlite_err)?;
                        let mut rows = s.query((t, after, upto, limit)).map_err(sqlite_err)?;
                        let mut out = Vec::with_capacity(limit.clamp(0, 1024) as usize);
                        while let Some(row) = rows.next().map_err(sqlite_err)? {
                            out.push(log_entry_of_tenant(row, t.clone())?);
                        }
                        Ok(out)
                    }
                    None => {
                        let mut s = c.prepare_cached(&SELECT_ALL_LOG).map_err(sqlite_err)?;
                        collect(s.query((after, upto, limit)), log_entry)
                    }
                }
            })
            .await
    }

    /// Snapshots of these `(model, id)` rows of one tenant.
    pub(super) async fn read_snapshots(
        &self,
        tenant_id: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        let mut by_model: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (model, id) in keys {
            by_model
                .entry((*model).to_owned())
                .or_default()
                .push((*id).to_owned());
        }
        let tenant_id = tenant_id.to_owned();
        self.readers
            .run(move |c| {
                let mut out = Vec::new();
                for (model, ids) in &by_model {
                    for chunk in ids.chunks(super::CHUNK) {
                        let sql = select_snapshots_by_id(chunk.len());
                        let mut s = c.prepare_cached(&sql).map_err(sqlite_err)?;
                        let values = [tenant_id.as_str(), model.as_str()]
                            .into_iter()
                            .chain(chunk.iter().map(String::as_str));
                        out.extend(collect(s.query(params_from_iter(values)), snapshot_record)?);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Snapshots of `model` with `id > after`, by id, at most `limit`.
    pub(super) async fn snapshot_page(
        &self,
        tenant_id: &str,
        model: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        let (tenant_id, model) = (tenant_id.to_owned(), model.to_owned());
        let after = after.map(str::to_owned);
        self.readers
            .run(move |c| {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let mut s = c
                    .prepare_cached(&SELECT_SNAPSHOT_PAGE)
                    .map_err(sqlite_err)?;
                // `id > ''` holds for every id (ids are never empty).
                let after = after.as_deref().unwrap_or("");
                collect(s.query((&tenant_id, &model, after, limit)), snapshot_record)
            })
            .await
    }
}

/// A set of threads, each owning one connection, taking jobs from one queue.
struct Worker {
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

impl Worker {
    /// One thread per connection, named `name` (Linux keeps 15 bytes of
    /// a thread's name: these fit). The threads end when the storage (the
    /// last sender) is dropped, closing their connections.
    fn start(name: &str, connections: Vec<Connection>) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for mut conn in connections {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for a job, so
                        // idle threads queue for the next one.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking job fails its own call only (its
                        // answer is dropped); the thread and its
                        // connection go on serving.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(&mut conn);
                        }));
                        // A job leaves no transaction open, whatever became
                        // of it (a rollback that failed in a drop): an open
                        // one would hold the file's write lock.
                        if !conn.is_autocommit() {
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                    }
                });
            if let Err(e) = spawned {
                // Fewer threads only means less parallelism; none at all is
                // seen by the first job (its answer never comes).
                tracing::warn!(error = %e, "could not start a SQLite thread");
            }
        }
        Self { jobs }
    }

    /// Run `f` on one of the threads and wait for its answer. A job whose
    /// caller stopped waiting before it started is skipped; one that has
    /// started runs to its end (a commit still commits; the writer then
    /// finds the head moved and reads before its next commit).
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |c| {
                if answer.is_closed() {
                    return;
                }
                let _ = answer.send(f(c));
            }))
            .map_err(|_| corrupt("the SQLite threads have stopped"))?;
        answered
            .await
            .map_err(|_| corrupt("a SQLite thread stopped during a statement"))?
    }
}

/// A rusqlite error as SeaORM reports a driver's.
fn sqlite_err(e: rusqlite::Error) -> StorageError {
    StorageError::Db(sea_orm::DbErr::Query(sea_orm::RuntimeErr::Internal(
        format!("sqlite: {e}"),
    )))
}

/// Every row of a query, decoded.
fn collect<T>(
    rows: rusqlite::Result<rusqlite::Rows<'_>>,
    decode: fn(&Row<'_>) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let mut rows = rows.map_err(sqlite_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_err)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn column_list(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

static SELECT_TENANT_LOG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM \"{OP_LOG}\" WHERE \"{}\" = ?1 AND \"{seq}\" > ?2 AND \"{seq}\" <= ?3 \
         ORDER BY \"{seq}\" LIMIT ?4",
        column_list(&LOG_COLUMNS),
        col::TENANT_ID,
        seq = col::SEQ,
    )
});

static SELECT_ALL_LOG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM \"{OP_LOG}\" WHERE \"{seq}\" > ?1 AND \"{seq}\" <= ?2 \
         ORDER BY \"{seq}\" LIMIT ?3",
        column_list(&LOG_COLUMNS),
        seq = col::SEQ,
    )
});

static SELECT_SNAPSHOT_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM \"{SNAPSHOTS}\" WHERE \"{}\" = ?1 AND \"{}\" = ?2 AND \"{id}\" > ?3 \
         ORDER BY \"{id}\" LIMIT ?4",
        column_list(&SNAPSHOT_COLUMNS),
        col::TENANT_ID,
        col::MODEL,
        id = col::ID,
    )
});

/// `tenant_id = ? AND model = ? AND id IN (?, ..)`: a range of the primary
/// key (an OR of pairs is not, on SQLite).
fn select_snapshots_by_id(ids: usize) -> String {
    format!(
        "SELECT {} FROM \"{SNAPSHOTS}\" WHERE \"{}\" = ? AND \"{}\" = ? AND \"{}\" IN ({})",
        column_list(&SNAPSHOT_COLUMNS),
        col::TENANT_ID,
        col::MODEL,
        col::ID,
        vec!["?"; ids].join(", ")
    )
}

// Decoders by position: the statements above select the columns in the
// schema's order.
fn log_entry(row: &Row<'_>) -> Result<LogEntry, StorageError> {
    let get = |i| row.get::<_, String>(i).map_err(sqlite_err);
    Ok(LogEntry {
        tenant_id: get(2)?,
        ..log_entry_of_tenant(row, String::new())?
    })
}

/// A log row of a query for one tenant, whose id the caller has: every
/// pulled change would otherwise copy the same column out of SQLite.
fn log_entry_of_tenant(row: &Row<'_>, tenant_id: String) -> Result<LogEntry, StorageError> {
    let get = |i| row.get::<_, String>(i).map_err(sqlite_err);
    // Read in place: the op is only looked at.
    let op = row.get_ref(5).map_err(sqlite_err)?;
    let op = op
        .as_str()
        .map_err(|e| corrupt(format!("op_log op: {e}")))?;
    Ok(LogEntry {
        seq: row.get(0).map_err(sqlite_err)?,
        op_id: get(1)?,
        tenant_id,
        model: get(3)?,
        pk: get(4)?,
        op: Op::parse(op).ok_or_else(|| corrupt(format!("op_log holds unknown op {op:?}")))?,
        actor: get(6)?,
        updated_at: get(7)?,
        payload: get(8)?,
    })
}

fn snapshot_record(row: &Row<'_>) -> Result<SnapshotRecord, StorageError> {
    let get = |i| row.get::<_, String>(i).map_err(sqlite_err);
    Ok(SnapshotRecord {
        tenant_id: get(0)?,
        model: get(1)?,
        id: get(2)?,
        value: get(3)?,
        clocks: get(4)?,
        deleted: row.get(5).map_err(sqlite_err)?,
        seq: row.get(6).map_err(sqlite_err)?,
    })
}

fn read_head(c: &mut Connection) -> Result<i64, StorageError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT \"{}\" FROM \"{COUNTER}\" WHERE \"{}\" = 1",
            col::LAST_SEQ,
            col::ID
        )
    });
    let mut s = c.prepare_cached(&SQL).map_err(sqlite_err)?;
    let mut rows = s.query([]).map_err(sqlite_err)?;
    match rows.next().map_err(sqlite_err)? {
        Some(row) => row.get(0).map_err(sqlite_err),
        None => Err(corrupt(
            "sync_counter has no row: run the migration crate (`up`)",
        )),
    }
}

/// The commit of [`SqliteDirect::commit_if_head`]: the counter moves only
/// from `expected_head` (an update of no row means another writer moved
/// it), plain inserts meet the unique op id and the primary keys of
/// created rows. Any refusal rolls the transaction back.
static INSERT_LOG: LazyLock<String> = LazyLock::new(|| {
    let mut sql = String::new();
    sqlite_insert(&mut sql, OP_LOG, &LOG_COLUMNS, 1);
    sql
});

static INSERT_SNAPSHOT: LazyLock<String> = LazyLock::new(|| {
    let mut sql = String::new();
    sqlite_insert(&mut sql, SNAPSHOTS, &SNAPSHOT_COLUMNS, 1);
    sql
});

static UPSERT_SNAPSHOT: LazyLock<String> =
    LazyLock::new(|| format!("{}{}", *INSERT_SNAPSHOT, *SQLITE_SNAPSHOT_UPSERT));

fn commit_if_head(
    c: &mut Connection,
    expected_head: i64,
    entries: &[LogEntry],
    created: &[SnapshotRecord],
    updated: &[SnapshotRecord],
    last_seq: i64,
) -> Result<bool, StorageError> {
    static MOVE_COUNTER: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE \"{COUNTER}\" SET \"{last}\" = ?2 WHERE \"{id}\" = 1 AND \"{last}\" = ?1",
            last = col::LAST_SEQ,
            id = col::ID
        )
    });
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite_err)?;
    let moved = tx
        .prepare_cached(&MOVE_COUNTER)
        .and_then(|mut s| s.execute((expected_head, last_seq)))
        .map_err(sqlite_err)?;
    if moved != 1 {
        // Dropping the transaction rolls it back.
        return Ok(false);
    }
    let written = (|| -> rusqlite::Result<()> {
        // One prepared row statement each, stepped per row: what SQLite does
        // fastest (a multi-row VALUES list would be prepared anew for every
        // length).
        let mut log = tx.prepare_cached(&INSERT_LOG)?;
        for e in entries {
            log.execute((
                e.seq,
                &e.op_id,
                &e.tenant_id,
                &e.model,
                &e.pk,
                e.op.as_str(),
                &e.actor,
                &e.updated_at,
                &e.payload,
            ))?;
        }
        for (rows, sql) in [(created, &*INSERT_SNAPSHOT), (updated, &*UPSERT_SNAPSHOT)] {
            if rows.is_empty() {
                continue;
            }
            let mut s = tx.prepare_cached(sql)?;
            for r in rows {
                s.execute((
                    &r.tenant_id,
                    &r.model,
                    &r.id,
                    &r.value,
                    &r.clocks,
                    r.deleted,
                    r.seq,
                ))?;
            }
        }
        Ok(())
    })();
    match written {
        Ok(()) => {
            tx.commit().map_err(sqlite_err)?;
            Ok(true)
        }
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(sqlite_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Worker {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("create");
        Worker::start("bsync-test", vec![conn])
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_call_only() {
        let w = worker();
        let failed = w
            .run(|_| -> Result<(), StorageError> { panic!("a job's bug") })
            .await;
        assert!(failed.is_err());
        // The thread and its connection still serve.
        let n = w
            .run(|c| {
                c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))
                    .map_err(sqlite_err)
            })
            .await
            .expect("the next job runs");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_job_leaves_no_transaction_open() {
        let w = worker();
        w.run(|c| {
            c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
                .map_err(sqlite_err)
        })
        .await
        .expect("begin");
        let (autocommit, n) = w
            .run(|c| {
                let n = c
                    .query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))
                    .map_err(sqlite_err)?;
                Ok((c.is_autocommit(), n))
            })
            .await
            .expect("read");
        assert!(autocommit, "the transaction was closed after its job");
        assert_eq!(n, 0, "and rolled back");
    }
}
