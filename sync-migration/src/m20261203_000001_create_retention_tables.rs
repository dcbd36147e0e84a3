//! The tables log retention needs: each tenant's horizon, the head at points
//! in time (retention by age) and the compactor's lease.
//!
//! A horizon is raised, and committed, before any log entry under it is
//! deleted; readers look at it after they read. A reader therefore either
//! sees every entry above its cursor or learns that its cursor is stale.

use sea_orm_migration::prelude::*;

use crate::m20261125_000001_create_sync_tables::{key_collation, string};
use crate::schema::{SYNC_HORIZONS, SYNC_LEASES, SYNC_MARKS, col, len};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_create_retention_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let k = key_collation(manager).await?;
        manager
            .create_table(
                Table::create()
                    .table(SYNC_HORIZONS)
                    .col(string(col::TENANT_ID, len::TENANT_ID, k).primary_key())
                    .col(ColumnDef::new(col::HORIZON).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SYNC_MARKS)
                    .col(
                        ColumnDef::new(col::AT_MS)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(col::HEAD).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SYNC_LEASES)
                    .col(string(col::NAME, len::LEASE, k).primary_key())
                    .col(string(col::HOLDER, len::LEASE, k))
                    .col(ColumnDef::new(col::EXPIRES_MS).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [SYNC_LEASES, SYNC_MARKS, SYNC_HORIZONS] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
