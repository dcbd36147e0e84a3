//! Postgres: commits as one statement, snapshot lookups by key, and the
//! commit listener (`LISTEN/NOTIFY`).

use std::sync::LazyLock;

#[cfg(feature = "postgres")]
use better_sync_migration::schema::{OP_LOG, OP_LOG_COLUMNS, SYNC_COUNTER};
use better_sync_migration::schema::{SNAPSHOT_COLUMNS, SNAPSHOTS, col};
#[cfg(feature = "postgres")]
use sea_orm::DbErr;

#[cfg(feature = "postgres")]
use super::{NOTIFY_CHANNEL, corrupt, sqlx_err};
#[cfg(feature = "postgres")]
use crate::storage::{CommitSignal, StorageError, Writes};

// On Postgres, snapshot lookups are one primary-key probe per key (a LATERAL
// subquery with equality on the whole key). `id IN (...)` is costed from
// statistics, and statistics taken before a tenant grew (a new tenant, a
// fresh table) make the planner scan the tenant's rows and filter: seen at
// 5-16 ms per lookup after 40,000 rows, until the next autoanalyze. Equality
// on a unique key is one row whatever the statistics say. `OFFSET 0` keeps
// the planner from flattening the subquery back into a join costed from
// those statistics. (The same shape does not help the op id lookup: there the
// planner can still pick the `(tenant_id, seq)` index at an equal cost.)
pub(super) static PG_SNAPSHOTS_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {columns} FROM json_array_elements_text($3::json) AS k(key) \
         CROSS JOIN LATERAL (SELECT * FROM {SNAPSHOTS} x \
           WHERE x.{tenant} = $1 AND x.{model} = $2 AND x.{id} = k.key OFFSET 0) s",
        columns = prefixed("s.", &SNAPSHOT_COLUMNS),
        tenant = col::TENANT_ID,
        model = col::MODEL,
        id = col::ID,
    )
});

/// `columns`, each after `prefix`, comma-separated.
fn prefixed(prefix: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Postgres: [`Storage::commit_if_head`] as one statement in its own
/// transaction, one round trip where the default's steps take eight. The
/// counter update sets `NULL` (refused by `NOT NULL`) unless the head is
/// `expected_head`; the inserts read the counter update's row, so that it
/// runs first and a commit waits on the counter lock before it holds any
/// index entry another writer could wait on (which would deadlock).
#[cfg(feature = "postgres")]
pub(super) static PG_COMMIT_IF_HEAD: LazyLock<String> = LazyLock::new(|| {
    let snapshot_columns = SNAPSHOT_COLUMNS.join(", ");
    let updates = SNAPSHOT_COLUMNS
        .iter()
        .filter(|c| ![col::TENANT_ID, col::MODEL, col::ID].contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH head AS (\
           UPDATE {SYNC_COUNTER} SET {last} = CASE WHEN {last} = $1 THEN $2 END \
           WHERE {id} = 1 RETURNING {last}), \
         log AS (\
           INSERT INTO {OP_LOG} ({log_columns}) \
           SELECT e.* FROM head, unnest($3::bigint[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) AS e RETURNING 1), \
         created AS (\
           INSERT INTO {SNAPSHOTS} ({snapshot_columns}) \
           SELECT r.* FROM head, unnest($12::text[], $13::text[], $14::text[], $15::text[], \
             $16::text[], $17::bool[], $18::bigint[]) AS r RETURNING 1), \
         updated AS (\
           INSERT INTO {SNAPSHOTS} ({snapshot_columns}) \
           SELECT r.* FROM head, unnest($19::text[], $20::text[], $21::text[], $22::text[], \
             $23::text[], $24::bool[], $25::bigint[]) AS r \
           ON CONFLICT ({tenant}, {model}, {id}) DO UPDATE SET {updates} RETURNING 1), \
         notice AS (SELECT pg_notify($26, $2::text) FROM head) \
         SELECT (SELECT count(*) FROM head) AS head, (SELECT count(*) FROM notice) AS notice",
        last = col::LAST_SEQ,
        id = col::ID,
        tenant = col::TENANT_ID,
        model = col::MODEL,
        log_columns = OP_LOG_COLUMNS.join(", "),
    )
});

#[cfg(feature = "postgres")]
pub(super) async fn postgres_commit_if_head(
    pool: &sea_orm::sqlx::PgPool,
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
    fn column<'a, T, R>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(PG_COMMIT_IF_HEAD.as_str()))
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

#[cfg(feature = "postgres")]
/// Wake `signal` on every commit announced on [`NOTIFY_CHANNEL`], until the
/// connection fails.
pub(super) async fn listen(
    pool: &sea_orm::sqlx::PgPool,
    signal: std::sync::Arc<CommitSignal>,
) -> Result<bool, StorageError> {
    use sea_orm::sqlx::postgres::PgListener;
    let map = |e: sea_orm::sqlx::Error| StorageError::Db(DbErr::Custom(e.to_string()));
    let mut listener = PgListener::connect_with(pool).await.map_err(map)?;
    listener.listen(NOTIFY_CHANNEL).await.map_err(map)?;
    signal.listening(true);
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
