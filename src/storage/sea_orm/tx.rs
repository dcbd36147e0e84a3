//! The write transaction of [`super::SeaOrmStorage`].

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction};

use super::*;
use crate::storage::{LogEntry, SnapshotRecord, StorageError, StorageTx};

pub(super) struct SeaOrmTx {
    pub(super) txn: DatabaseTransaction,
    pub(super) last_seq: i64,
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
            q.and_where(Expr::col(col::TENANT_ID).eq(tenant_id))
                .and_where(Expr::col(col::OP_ID).is_in(chunk.iter().copied()));
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
            return crate::storage::look_up_then_insert(self, rows).await;
        }
        // The unique (tenant_id, op_id) index decides, whatever the planner
        // would have made of a lookup.
        let mut skipped = 0;
        for chunk in rows.chunks(CHUNK) {
            let mut q = insert_log(chunk)?;
            q.on_conflict(
                OnConflict::columns([col::TENANT_ID, col::OP_ID])
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
            return crate::storage::commit_new_in_steps(self, rows, snapshots, &[], last_seq).await;
        }
        // sqlx runs each SQLite connection on a worker thread, and every
        // statement is a round trip to it: send the three writes as one
        // statement list (sqlx binds the parameters across them in order).
        let (sql, values) = super::sqlite::sqlite_writes(rows, snapshots, last_seq);
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
                OnConflict::columns([col::TENANT_ID, col::MODEL, col::ID])
                    .update_columns([col::VALUE, col::CLOCKS, col::DELETED, col::SEQ])
                    .to_owned(),
            );
            self.txn.execute(&q).await?;
        }
        Ok(())
    }

    async fn execute(&mut self, statements: &[sea_orm::Statement]) -> Result<(), StorageError> {
        for s in statements {
            self.txn.execute_raw(s.clone()).await?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>, last_seq: i64) -> Result<(), StorageError> {
        if last_seq != self.last_seq {
            let mut q = Query::update();
            q.table(COUNTER)
                .value(col::LAST_SEQ, last_seq)
                .and_where(Expr::col(col::ID).eq(1));
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
