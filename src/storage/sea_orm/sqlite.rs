//! SQLite: commits as one statement list on a connection of the pool.

use std::sync::LazyLock;

#[cfg(feature = "sqlite")]
use super::{CHUNK, corrupt, sqlx_err};
use super::{
    COUNTER, LOG_COLUMNS, OP_LOG, SNAPSHOT_COLUMNS, SNAPSHOTS, col, log_values, snapshot_values,
};
use crate::storage::{LogEntry, SnapshotRecord};
#[cfg(feature = "sqlite")]
use crate::storage::{StorageError, Writes};

/// Appends `INSERT INTO "table" (columns) VALUES (?, ..), ..` for `rows`
/// rows to a SQLite statement list.
pub(super) fn sqlite_insert(sql: &mut String, table: &str, columns: &[&str], rows: usize) {
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
pub(super) static SQLITE_SNAPSHOT_UPSERT: LazyLock<String> = LazyLock::new(|| {
    let updates = SNAPSHOT_COLUMNS
        .iter()
        .filter(|c| ![col::TENANT_ID, col::MODEL, col::ID].contains(c))
        .map(|c| format!("\"{c}\" = \"excluded\".\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        " ON CONFLICT (\"{}\", \"{}\", \"{}\") DO UPDATE SET {updates}",
        col::TENANT_ID,
        col::MODEL,
        col::ID
    )
});

/// SQLite: the log insert (skipping logged op ids), the snapshot upsert and
/// the counter update of a commit, as one statement list and its values.
pub(super) fn sqlite_writes(
    rows: &[LogEntry],
    snapshots: &[SnapshotRecord],
    last_seq: i64,
) -> (String, Vec<sea_orm::Value>) {
    let mut sql = String::new();
    sqlite_insert(&mut sql, OP_LOG, &LOG_COLUMNS, rows.len());
    sql.push_str(&format!(
        " ON CONFLICT (\"{}\", \"{}\") DO NOTHING;",
        col::TENANT_ID,
        col::OP_ID
    ));
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(
        rows.len() * LOG_COLUMNS.len() + snapshots.len() * SNAPSHOT_COLUMNS.len() + 1,
    );
    for r in rows {
        values.extend(log_values(r));
    }
    if !snapshots.is_empty() {
        sql.push(' ');
        sqlite_insert(&mut sql, SNAPSHOTS, &SNAPSHOT_COLUMNS, snapshots.len());
        sql.push_str(&SQLITE_SNAPSHOT_UPSERT);
        sql.push(';');
        for r in snapshots {
            values.extend(snapshot_values(r));
        }
    }
    sql.push_str(&format!(
        " UPDATE \"{COUNTER}\" SET \"{}\" = ? WHERE \"{}\" = 1",
        col::LAST_SEQ,
        col::ID
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
pub(super) async fn sqlite_commit_if_head(
    pool: &sea_orm::sqlx::SqlitePool,
    expected_head: i64,
    Writes {
        entries,
        created,
        updated,
        last_seq,
        materialized: _,
    }: Writes<'_>,
) -> Result<bool, StorageError> {
    use sea_orm::sqlx;
    use sea_orm::sqlx::error::ErrorKind;

    let mut sql = format!(
        "BEGIN IMMEDIATE; UPDATE \"{COUNTER}\" SET \"{last}\" = \
         CASE WHEN \"{last}\" = ? THEN ? END WHERE \"{id}\" = 1;",
        last = col::LAST_SEQ,
        id = col::ID
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
                sql.push_str(&SQLITE_SNAPSHOT_UPSERT);
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

/// A pooled SQLite connection that goes back to the pool only when
/// [`ClosedUnlessReturned::give_back`] says its transaction is over; dropped
/// otherwise (an error, a cancelled future), it is closed.
#[cfg(feature = "sqlite")]
pub(super) struct ClosedUnlessReturned(
    Option<sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Sqlite>>,
);

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
