//! The operation log, row snapshots and the log-head counter.
//!
//! `op_log.seq` is not an autoincrement: the engine assigns it while holding
//! the `sync_counter` row lock, so that sequence order equals commit order and
//! a reader never skips a change that commits late (see `docs/PROTOCOL.md`).

use sea_orm_migration::prelude::*;

use crate::schema::{OP_LOG, SNAPSHOTS, SYNC_COUNTER, col, index, len};
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_create_sync_tables"
    }
}

/// JSON text column: TEXT on SQLite and Postgres, LONGTEXT on MySQL (whose
/// TEXT stops at 64 KiB).
pub(crate) fn json_text(manager: &SchemaManager, name: &'static str) -> ColumnDef {
    let mut col = ColumnDef::new(name);
    if manager.get_database_backend() == DatabaseBackend::MySql {
        col.custom("LONGTEXT");
    } else {
        col.text();
    }
    col.not_null();
    col
}

/// A key column. On MySQL/MariaDB it gets a binary, no-pad collation: the
/// default one is case-insensitive and ignores trailing spaces, which would
/// make distinct ids (`"a"`, `"A"`, `"a "`) collide.
pub(crate) fn string(name: &'static str, max: u32, collation: Option<&str>) -> ColumnDef {
    let mut col = ColumnDef::new(name);
    col.string_len(max).not_null();
    if let Some(c) = collation {
        col.extra(format!("COLLATE {c}"));
    }
    col
}

pub(crate) async fn key_collation(
    manager: &SchemaManager<'_>,
) -> Result<Option<&'static str>, DbErr> {
    if manager.get_database_backend() != DatabaseBackend::MySql {
        return Ok(None);
    }
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DatabaseBackend::MySql,
            "SELECT VERSION() AS v",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("SELECT VERSION() returned nothing".into()))?;
    let version: String = row.try_get("", "v")?;
    Ok(Some(if version.contains("MariaDB") {
        "utf8mb4_nopad_bin"
    } else {
        "utf8mb4_0900_bin"
    }))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let k = key_collation(manager).await?;
        manager
            .create_table(
                Table::create()
                    .table(OP_LOG)
                    .col(
                        ColumnDef::new(col::SEQ)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(string(col::OP_ID, len::OP_ID, k))
                    .col(string(col::TENANT_ID, len::TENANT_ID, k))
                    .col(string(col::MODEL, len::MODEL, k))
                    .col(string(col::PK, len::PK, k))
                    .col(string(col::OP, len::OP, k))
                    .col(string(col::ACTOR, len::ACTOR, k))
                    .col(string(col::UPDATED_AT, len::UPDATED_AT, k))
                    .col(json_text(manager, col::PAYLOAD))
                    .to_owned(),
            )
            .await?;
        // Idempotency: op ids are unique per tenant (a global namespace would
        // let tenants collide with, and probe for, each other's op ids).
        manager
            .create_index(
                Index::create()
                    .name(index::OP_LOG_TENANT_OP_ID)
                    .table(OP_LOG)
                    .col(col::TENANT_ID)
                    .col(col::OP_ID)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Pull: WHERE tenant_id = ? AND seq > ? ORDER BY seq, a range scan.
        manager
            .create_index(
                Index::create()
                    .name(index::OP_LOG_TENANT_SEQ)
                    .table(OP_LOG)
                    .col(col::TENANT_ID)
                    .col(col::SEQ)
                    .to_owned(),
            )
            .await?;
        // The primary key serves point reads and the snapshot bootstrap's
        // WHERE tenant_id = ? AND model = ? AND id > ? ORDER BY id.
        manager
            .create_table(
                Table::create()
                    .table(SNAPSHOTS)
                    .col(string(col::TENANT_ID, len::TENANT_ID, k))
                    .col(string(col::MODEL, len::MODEL, k))
                    .col(string(col::ID, len::PK, k))
                    .col(json_text(manager, col::VALUE))
                    .col(json_text(manager, col::CLOCKS))
                    .col(
                        ColumnDef::new(col::DELETED)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(col::SEQ).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .name(index::SNAPSHOTS_PKEY)
                            .col(col::TENANT_ID)
                            .col(col::MODEL)
                            .col(col::ID),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SYNC_COUNTER)
                    .col(ColumnDef::new(col::ID).integer().not_null().primary_key())
                    .col(ColumnDef::new(col::LAST_SEQ).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(SYNC_COUNTER)
                    .columns([col::ID, col::LAST_SEQ])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [SYNC_COUNTER, SNAPSHOTS, OP_LOG] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
