//! [`Retention`] over SeaORM: horizons, head marks, chunked deletions and
//! the compactor's lease, on SQLite, Postgres and MySQL/MariaDB.
//!
//! Deletions go range by range of the `(tenant_id, seq)` index (the bound of
//! a chunk is read first, then a plain ranged `DELETE`), which every backend
//! runs the same way and none has to scan the table for. On MySQL/MariaDB
//! they run at READ COMMITTED so that InnoDB takes no gap locks that a
//! concurrent push's insert would wait on.

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, IsolationLevel, Statement, TransactionTrait, Value,
};

use super::{SeaOrmStorage, snapshot_record};
use crate::storage::{LogFilter, Retention, SnapshotRecord, SpaceUsed, Step, StorageError};
use better_sync_migration::schema::{
    OP_LOG, SNAPSHOTS, SYNC_HORIZONS, SYNC_LEASES, SYNC_MARKS, col,
};

impl SeaOrmStorage {
    fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// A statement written with `?` placeholders, numbered for Postgres.
    fn raw(&self, sql: &str, values: Vec<Value>) -> Statement {
        let backend = self.backend();
        if backend != DatabaseBackend::Postgres {
            return Statement::from_sql_and_values(backend, sql, values);
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for ch in sql.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
        Statement::from_sql_and_values(backend, out, values)
    }

    /// `INSERT` of one row that does nothing when `key` is taken.
    fn insert_unless_present(&self, table: &str, columns: &[&str], key: &str) -> String {
        let marks = vec!["?"; columns.len()].join(", ");
        let columns = columns.join(", ");
        if self.backend() == DatabaseBackend::MySql {
            format!("INSERT IGNORE INTO {table} ({columns}) VALUES ({marks})")
        } else {
            format!(
                "INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT ({key}) DO NOTHING"
            )
        }
    }

    async fn one_i64(&self, sql: &str, values: Vec<Value>) -> Result<Option<i64>, StorageError> {
        let row = self.db.query_one_raw(self.raw(sql, values)).await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<i64>>("", "v")?,
            None => None,
        })
    }

    async fn one_string(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<String>, StorageError> {
        let row = self.db.query_one_raw(self.raw(sql, values)).await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>>("", "v")?,
            None => None,
        })
    }

    /// Run `stmt` in a transaction at READ COMMITTED on MySQL (no gap locks),
    /// plainly elsewhere; the rows it affected.
    async fn delete(&self, stmt: Statement) -> Result<u64, StorageError> {
        if self.backend() == DatabaseBackend::MySql {
            let txn = self
                .db
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await?;
            let n = txn.execute_raw(stmt).await?.rows_affected();
            txn.commit().await?;
            return Ok(n);
        }
        Ok(self.db.execute_raw(stmt).await?.rows_affected())
    }

    pub(super) async fn tenant_snapshots(
        &self,
        tenant_id: &str,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StorageError> {
        let mut q = super::select_snapshots(tenant_id);
        if let Some((model, id)) = after {
            // Spelled out rather than a row-value comparison, which MariaDB
            // does not turn into a range of the primary key.
            q.and_where(
                Expr::col(col::MODEL).gt(model).or(Expr::col(col::MODEL)
                    .eq(model)
                    .and(Expr::col(col::ID).gt(id))),
            );
        }
        q.order_by(col::MODEL, Order::Asc)
            .order_by(col::ID, Order::Asc)
            .limit(limit);
        self.db
            .query_all(&q)
            .await?
            .iter()
            .map(snapshot_record)
            .collect()
    }
}

#[async_trait]
impl Retention for SeaOrmStorage {
    async fn horizon(&self, tenant_id: &str) -> Result<i64, StorageError> {
        #[cfg(feature = "sqlite")]
        if let Some(direct) = self.direct().await? {
            return direct.horizon(tenant_id).await;
        }
        let sql = format!(
            "SELECT {h} AS v FROM {SYNC_HORIZONS} WHERE {t} = ?",
            h = col::HORIZON,
            t = col::TENANT_ID
        );
        Ok(self
            .one_i64(&sql, vec![tenant_id.into()])
            .await?
            .unwrap_or(0))
    }

    async fn raise_horizon(&self, tenant_id: &str, seq: i64) -> Result<(), StorageError> {
        let (t, h) = (col::TENANT_ID, col::HORIZON);
        let sql = match self.backend() {
            DatabaseBackend::MySql => format!(
                "INSERT INTO {SYNC_HORIZONS} ({t}, {h}) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE {h} = GREATEST({h}, VALUES({h}))"
            ),
            DatabaseBackend::Postgres => format!(
                "INSERT INTO {SYNC_HORIZONS} ({t}, {h}) VALUES (?, ?) \
                 ON CONFLICT ({t}) DO UPDATE SET {h} = GREATEST({SYNC_HORIZONS}.{h}, excluded.{h})"
            ),
            _ => format!(
                "INSERT INTO {SYNC_HORIZONS} ({t}, {h}) VALUES (?, ?) \
                 ON CONFLICT ({t}) DO UPDATE SET {h} = MAX({h}, excluded.{h})"
            ),
        };
        self.db
            .execute_raw(self.raw(&sql, vec![tenant_id.into(), seq.into()]))
            .await?;
        Ok(())
    }

    async fn next_tenant(&self, after: Option<&str>) -> Result<Option<String>, StorageError> {
        // MIN() over the leading column of an index is one seek per table.
        let mut next: Option<String> = None;
        for table in [OP_LOG, SNAPSHOTS] {
            let t = col::TENANT_ID;
            let found = match after {
                Some(a) => {
                    let sql = format!("SELECT MIN({t}) AS v FROM {table} WHERE {t} > ?");
                    self.one_string(&sql, vec![a.into()]).await?
                }
                None => {
                    let sql = format!("SELECT MIN({t}) AS v FROM {table}");
                    self.one_string(&sql, vec![]).await?
                }
            };
            if let Some(f) = found {
                next = Some(match next {
                    Some(n) if n <= f => n,
                    _ => f,
                });
            }
        }
        Ok(next)
    }

    async fn nth_newest_seq(&self, tenant_id: &str, n: u64) -> Result<Option<i64>, StorageError> {
        if n == 0 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {s} AS v FROM {OP_LOG} WHERE {t} = ? ORDER BY {s} DESC LIMIT 1 OFFSET {off}",
            s = col::SEQ,
            t = col::TENANT_ID,
            off = n - 1
        );
        self.one_i64(&sql, vec![tenant_id.into()]).await
    }

    async fn mark_head(&self, at_ms: i64, head: i64) -> Result<(), StorageError> {
        let sql = self.insert_unless_present(SYNC_MARKS, &[col::AT_MS, col::HEAD], col::AT_MS);
        self.db
            .execute_raw(self.raw(&sql, vec![at_ms.into(), head.into()]))
            .await?;
        Ok(())
    }

    async fn head_at(&self, at_ms: i64) -> Result<Option<i64>, StorageError> {
        let sql = format!(
            "SELECT {h} AS v FROM {SYNC_MARKS} WHERE {a} <= ? ORDER BY {a} DESC LIMIT 1",
            h = col::HEAD,
            a = col::AT_MS
        );
        self.one_i64(&sql, vec![at_ms.into()]).await
    }

    async fn prune_marks(&self, before_ms: i64) -> Result<u64, StorageError> {
        let a = col::AT_MS;
        let newest_before = self
            .one_i64(
                &format!("SELECT MAX({a}) AS v FROM {SYNC_MARKS} WHERE {a} < ?"),
                vec![before_ms.into()],
            )
            .await?;
        let Some(keep) = newest_before else {
            return Ok(0);
        };
        let sql = format!("DELETE FROM {SYNC_MARKS} WHERE {a} < ?");
        Ok(self
            .db
            .execute_raw(self.raw(&sql, vec![keep.into()]))
            .await?
            .rows_affected())
    }

    async fn delete_log(
        &self,
        tenant_id: &str,
        after: i64,
        upto: i64,
        filter: LogFilter<'_>,
        limit: u64,
    ) -> Result<Step<i64>, StorageError> {
        if after >= upto {
            return Ok(Step {
                deleted: 0,
                next: None,
            });
        }
        let (s, t) = (col::SEQ, col::TENANT_ID);
        // The chunk's last seq, read through the index; then one ranged
        // delete up to it.
        let bound = self
            .one_i64(
                &format!(
                    "SELECT {s} AS v FROM {OP_LOG} WHERE {t} = ? AND {s} > ? AND {s} <= ? \
                     ORDER BY {s} LIMIT 1 OFFSET {off}",
                    off = Ord::max(limit, 1) - 1
                ),
                vec![tenant_id.into(), after.into(), upto.into()],
            )
            .await?;
        let end = bound.unwrap_or(upto);
        let mut sql = format!("DELETE FROM {OP_LOG} WHERE {t} = ? AND {s} > ? AND {s} <= ?");
        let mut values: Vec<Value> = vec![tenant_id.into(), after.into(), end.into()];
        if let Some((model, pk)) = filter.row {
            sql.push_str(&format!(" AND {} = ? AND {} = ?", col::MODEL, col::PK));
            values.push(model.into());
            values.push(pk.into());
        }
        if let Some(actor) = filter.keep_actor {
            sql.push_str(&format!(" AND {} <> ?", col::ACTOR));
            values.push(actor.into());
        }
        let deleted = self.delete(self.raw(&sql, values)).await?;
        Ok(Step {
            deleted,
            next: (end < upto).then_some(end),
        })
    }

    async fn purge_tombstones(
        &self,
        tenant_id: &str,
        upto: i64,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Step<(String, String)>, StorageError> {
        let page = self.tenant_snapshots(tenant_id, after, limit).await?;
        let Some(last) = page.last() else {
            return Ok(Step {
                deleted: 0,
                next: None,
            });
        };
        let next = (page.len() as u64 >= limit).then(|| (last.model.clone(), last.id.clone()));
        let doomed: Vec<&SnapshotRecord> =
            page.iter().filter(|r| r.deleted && r.seq <= upto).collect();
        let mut deleted = 0;
        let mut by_model: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for r in &doomed {
            by_model.entry(&r.model).or_default().push(&r.id);
        }
        for (model, ids) in by_model {
            for chunk in ids.chunks(super::CHUNK) {
                let mut q = Query::delete();
                q.from_table(SNAPSHOTS)
                    .and_where(Expr::col(col::TENANT_ID).eq(tenant_id))
                    .and_where(Expr::col(col::MODEL).eq(model))
                    .and_where(Expr::col(col::ID).is_in(chunk.iter().copied()))
                    // A row written again since the page was read stays.
                    .and_where(Expr::col(col::DELETED).eq(true))
                    .and_where(Expr::col(col::SEQ).lte(upto));
                let stmt = self.backend().build(&q);
                deleted += self.delete(stmt).await?;
            }
        }
        Ok(Step { deleted, next })
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StorageError> {
        let until = now_ms.saturating_add(ttl_ms);
        let insert = self.insert_unless_present(
            SYNC_LEASES,
            &[col::NAME, col::HOLDER, col::EXPIRES_MS],
            col::NAME,
        );
        let values: Vec<Value> = vec![name.into(), holder.into(), until.into()];
        if self
            .db
            .execute_raw(self.raw(&insert, values))
            .await?
            .rows_affected()
            == 1
        {
            return Ok(true);
        }
        let sql = format!(
            "UPDATE {SYNC_LEASES} SET {h} = ?, {e} = ? WHERE {n} = ? AND ({h} = ? OR {e} < ?)",
            h = col::HOLDER,
            e = col::EXPIRES_MS,
            n = col::NAME
        );
        let values: Vec<Value> = vec![
            holder.into(),
            until.into(),
            name.into(),
            holder.into(),
            now_ms.into(),
        ];
        Ok(self
            .db
            .execute_raw(self.raw(&sql, values))
            .await?
            .rows_affected()
            == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StorageError> {
        let mut q = Query::delete();
        q.from_table(SYNC_LEASES)
            .and_where(Expr::col(col::NAME).eq(name))
            .and_where(Expr::col(col::HOLDER).eq(holder));
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn reclaim_space(&self) -> Result<(), StorageError> {
        if self.backend() == DatabaseBackend::Sqlite {
            // Frees every free page when the file is in incremental
            // auto-vacuum mode (what `connect` sets on a new file); a no-op
            // otherwise (`VACUUM` converts an older file, once, offline).
            self.db
                .execute_unprepared("PRAGMA incremental_vacuum")
                .await?;
        }
        Ok(())
    }

    async fn space_used(&self) -> Result<SpaceUsed, StorageError> {
        match self.backend() {
            DatabaseBackend::Sqlite => {
                let page = self.pragma("page_size").await?;
                let pages = self.pragma("page_count").await?;
                let free = self.pragma("freelist_count").await?;
                Ok(SpaceUsed {
                    bytes: (page * pages) as u64,
                    free_bytes: (page * free) as u64,
                })
            }
            DatabaseBackend::Postgres => {
                let sql = format!(
                    "SELECT (pg_total_relation_size('{OP_LOG}') + pg_total_relation_size('{SNAPSHOTS}'))::BIGINT AS v"
                );
                Ok(SpaceUsed {
                    bytes: self.one_i64(&sql, vec![]).await?.unwrap_or(0) as u64,
                    free_bytes: 0,
                })
            }
            _ => {
                let sql = format!(
                    "SELECT CAST(SUM(data_length + index_length) AS SIGNED) AS v, \
                     CAST(SUM(data_free) AS SIGNED) AS f FROM information_schema.TABLES \
                     WHERE table_schema = DATABASE() AND table_name IN ('{OP_LOG}', '{SNAPSHOTS}')"
                );
                let row = self.db.query_one_raw(self.raw(&sql, vec![])).await?;
                let get = |k: &str| -> Result<u64, StorageError> {
                    Ok(match &row {
                        Some(r) => r.try_get::<Option<i64>>("", k)?.unwrap_or(0) as u64,
                        None => 0,
                    })
                };
                Ok(SpaceUsed {
                    bytes: get("v")?,
                    free_bytes: get("f")?,
                })
            }
        }
    }
}

impl SeaOrmStorage {
    async fn pragma(&self, name: &str) -> Result<i64, StorageError> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Sqlite,
                format!("SELECT {name} AS v FROM pragma_{name}"),
            ))
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64>("", "v")?,
            None => 0,
        })
    }
}
