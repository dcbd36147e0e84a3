//! Checks of a connection pool's settings against what the engine needs.

use sea_orm::{ConnectionTrait, DatabaseBackend};

use crate::storage::StorageError;

pub(super) async fn settings_problems(
    conn: &impl ConnectionTrait,
) -> Result<Vec<String>, StorageError> {
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
            // 2 = INCREMENTAL. An in-memory database has no file to shrink.
            let vacuum = text("PRAGMA auto_vacuum").await?;
            if !journal.eq_ignore_ascii_case("memory") && vacuum != "2" {
                problems.push(format!(
                    "SQLite auto_vacuum is {vacuum}, not INCREMENTAL (2): space freed by log \
                     compaction stays in the file for reuse instead of going back to the file \
                     system (a file created by SeaOrmStorage::connect has it; run \
                     `better-sync-admin vacuum` once to convert an older one)"
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
