//! Local storage: where a client keeps its rows, outbox, cursor and clock.
//!
//! The client holds its state in memory and writes every change through to
//! the store in one transaction before it counts as done; [`Storage::sqlite`]
//! makes that durable (WAL, `synchronous=FULL`), [`Storage::memory`] keeps
//! nothing across restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use better_sync_core::RowState;
use better_sync_core::protocol::Change as WireChange;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value as DbValue,
};
use serde_json::Value;

use crate::error::ClientError;

/// Where the client stores its data.
///
/// ```
/// use better_sync_client::Storage;
/// let durable = Storage::sqlite("app-sync.db");
/// let scratch = Storage::memory();
/// # drop((durable, scratch));
/// ```
#[derive(Debug, Clone)]
pub struct Storage(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Memory,
    Sqlite(PathBuf),
    Connection(DatabaseConnection),
}

impl Storage {
    /// Nothing persists: rows, outbox and cursor live as long as the client.
    pub fn memory() -> Self {
        Self(Kind::Memory)
    }

    /// A SQLite file (created when missing), in WAL mode with
    /// `synchronous=FULL`: a change `apply_change` returned for survives a
    /// crash or power loss.
    pub fn sqlite(path: impl AsRef<Path>) -> Self {
        Self(Kind::Sqlite(path.as_ref().to_owned()))
    }

    /// An open SQLite connection of the app's own (the client creates its
    /// `better_sync_*` tables in it).
    pub fn sqlite_connection(db: DatabaseConnection) -> Self {
        Self(Kind::Connection(db))
    }

    pub(crate) async fn open(self) -> Result<Store, ClientError> {
        let db = match self.0 {
            Kind::Memory => return Ok(Store::Memory),
            Kind::Connection(db) => db,
            Kind::Sqlite(path) => {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let mut opts = sea_orm::ConnectOptions::new(url);
                opts.sqlx_logging(false)
                    // One writer at a time is all the client needs; a single
                    // connection also keeps an in-process lock out of the way.
                    .max_connections(1)
                    .min_connections(1);
                opts.map_sqlx_sqlite_opts(|o| {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Full)
                        .busy_timeout(std::time::Duration::from_secs(10))
                });
                sea_orm::Database::connect(opts).await?
            }
        };
        if db.get_database_backend() != DbBackend::Sqlite {
            return Err(ClientError::config(
                "the client's local store must be SQLite",
            ));
        }
        for sql in SCHEMA {
            db.execute_unprepared(sql).await?;
        }
        Ok(Store::Sqlite(db))
    }
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS better_sync_rows (
        model TEXT NOT NULL,
        id TEXT NOT NULL,
        value TEXT NOT NULL,
        clocks TEXT NOT NULL,
        PRIMARY KEY (model, id)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS better_sync_outbox (
        key INTEGER PRIMARY KEY,
        change TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS better_sync_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID",
    // Which shape subscription holds which row: a retraction drops a row
    // only when no other subscription holds it.
    "CREATE TABLE IF NOT EXISTS better_sync_shape_rows (
        shape TEXT NOT NULL,
        model TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (shape, id)
    ) WITHOUT ROWID",
];

/// A queued local change.
#[derive(Debug, Clone)]
pub(crate) struct OutboxEntry {
    pub(crate) key: i64,
    pub(crate) change: WireChange,
    /// The change's JSON text: what is stored, and its length is what the
    /// change weighs in a push batch.
    pub(crate) text: String,
}

impl OutboxEntry {
    pub(crate) fn new(key: i64, change: WireChange) -> Result<Self, ClientError> {
        let text = serde_json::to_string(&change).map_err(ClientError::storage)?;
        Ok(Self { key, change, text })
    }
}

/// Everything a store holds, read at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) rows: Vec<(String, String, RowState)>,
    pub(crate) outbox: Vec<OutboxEntry>,
    pub(crate) meta: HashMap<String, Value>,
    /// `(shape key, model, id)`: the rows each shape subscription holds.
    pub(crate) shape_rows: Vec<(String, String, String)>,
}

/// One atomic write.
#[derive(Debug, Default)]
pub(crate) struct Write {
    /// Delete every row first.
    pub(crate) clear_rows: bool,
    pub(crate) rows: Vec<(String, String, RowState)>,
    /// `(model, id)` of rows dropped locally (retracted, not deleted).
    pub(crate) rows_delete: Vec<(String, String)>,
    /// Shape keys whose held rows are forgotten first.
    pub(crate) shape_clear: Vec<String>,
    /// `(shape key, model, id)` held from now on.
    pub(crate) shape_hold: Vec<(String, String, String)>,
    /// `(shape key, id)` no longer held.
    pub(crate) shape_release: Vec<(String, String)>,
    pub(crate) outbox_add: Vec<OutboxEntry>,
    pub(crate) outbox_remove: Vec<i64>,
    /// `Value::Null` deletes the key.
    pub(crate) meta: Vec<(&'static str, Value)>,
}

impl Write {
    pub(crate) fn is_empty(&self) -> bool {
        !self.clear_rows
            && self.rows.is_empty()
            && self.rows_delete.is_empty()
            && self.shape_clear.is_empty()
            && self.shape_hold.is_empty()
            && self.shape_release.is_empty()
            && self.outbox_add.is_empty()
            && self.outbox_remove.is_empty()
            && self.meta.is_empty()
    }
}

/// An opened [`Storage`].
#[derive(Debug)]
pub(crate) enum Store {
    Memory,
    Sqlite(DatabaseConnection),
}

fn stmt(sql: &str, values: Vec<DbValue>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

impl Store {
    pub(crate) async fn load(&self) -> Result<Loaded, ClientError> {
        let Store::Sqlite(db) = self else {
            return Ok(Loaded::default());
        };
        let mut loaded = Loaded::default();
        for row in db
            .query_all_raw(stmt(
                "SELECT model, id, value, clocks FROM better_sync_rows",
                vec![],
            ))
            .await?
        {
            let model: String = row.try_get("", "model")?;
            let id: String = row.try_get("", "id")?;
            let value: String = row.try_get("", "value")?;
            let clocks: String = row.try_get("", "clocks")?;
            let state = serde_json::from_str::<Value>(&value)
                .ok()
                .zip(serde_json::from_str::<Value>(&clocks).ok())
                .and_then(|(v, c)| RowState::from_parts(&v, &c))
                .ok_or_else(|| {
                    ClientError::storage(format!("stored row {model}/{id} does not parse"))
                })?;
            loaded.rows.push((model, id, state));
        }
        for row in db
            .query_all_raw(stmt(
                "SELECT key, change FROM better_sync_outbox ORDER BY key",
                vec![],
            ))
            .await?
        {
            let key: i64 = row.try_get("", "key")?;
            let text: String = row.try_get("", "change")?;
            let change: WireChange = serde_json::from_str(&text).map_err(|e| {
                ClientError::storage(format!("stored outbox entry {key} does not parse: {e}"))
            })?;
            loaded.outbox.push(OutboxEntry { key, change, text });
        }
        for row in db
            .query_all_raw(stmt(
                "SELECT shape, model, id FROM better_sync_shape_rows",
                vec![],
            ))
            .await?
        {
            loaded.shape_rows.push((
                row.try_get("", "shape")?,
                row.try_get("", "model")?,
                row.try_get("", "id")?,
            ));
        }
        for row in db
            .query_all_raw(stmt("SELECT key, value FROM better_sync_meta", vec![]))
            .await?
        {
            let key: String = row.try_get("", "key")?;
            let text: String = row.try_get("", "value")?;
            let value = serde_json::from_str(&text).map_err(|e| {
                ClientError::storage(format!("stored meta {key} does not parse: {e}"))
            })?;
            loaded.meta.insert(key, value);
        }
        Ok(loaded)
    }

    /// Apply `w` in one transaction: all of it or nothing.
    pub(crate) async fn write(&self, w: &Write) -> Result<(), ClientError> {
        let Store::Sqlite(db) = self else {
            return Ok(());
        };
        if w.is_empty() {
            return Ok(());
        }
        let tx = db.begin().await?;
        if w.clear_rows {
            tx.execute_raw(stmt("DELETE FROM better_sync_rows", vec![]))
                .await?;
        }
        for (model, id, state) in &w.rows {
            tx.execute_raw(stmt(
                "INSERT INTO better_sync_rows (model, id, value, clocks) VALUES (?, ?, ?, ?)
                 ON CONFLICT (model, id) DO UPDATE SET value = excluded.value, clocks = excluded.clocks",
                vec![
                    model.clone().into(),
                    id.clone().into(),
                    state.value_text().into(),
                    state.clocks_text().into(),
                ],
            ))
            .await?;
        }
        for (model, id) in &w.rows_delete {
            tx.execute_raw(stmt(
                "DELETE FROM better_sync_rows WHERE model = ? AND id = ?",
                vec![model.clone().into(), id.clone().into()],
            ))
            .await?;
        }
        for shape in &w.shape_clear {
            tx.execute_raw(stmt(
                "DELETE FROM better_sync_shape_rows WHERE shape = ?",
                vec![shape.clone().into()],
            ))
            .await?;
        }
        for (shape, id) in &w.shape_release {
            tx.execute_raw(stmt(
                "DELETE FROM better_sync_shape_rows WHERE shape = ? AND id = ?",
                vec![shape.clone().into(), id.clone().into()],
            ))
            .await?;
        }
        for (shape, model, id) in &w.shape_hold {
            tx.execute_raw(stmt(
                "INSERT INTO better_sync_shape_rows (shape, model, id) VALUES (?, ?, ?)
                 ON CONFLICT (shape, id) DO NOTHING",
                vec![
                    shape.clone().into(),
                    model.clone().into(),
                    id.clone().into(),
                ],
            ))
            .await?;
        }
        for entry in &w.outbox_add {
            tx.execute_raw(stmt(
                "INSERT INTO better_sync_outbox (key, change) VALUES (?, ?)",
                vec![entry.key.into(), entry.text.clone().into()],
            ))
            .await?;
        }
        for chunk in w.outbox_remove.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            tx.execute_raw(stmt(
                &format!("DELETE FROM better_sync_outbox WHERE key IN ({marks})"),
                chunk.iter().map(|k| (*k).into()).collect(),
            ))
            .await?;
        }
        for (key, value) in &w.meta {
            if value.is_null() {
                tx.execute_raw(stmt(
                    "DELETE FROM better_sync_meta WHERE key = ?",
                    vec![(*key).into()],
                ))
                .await?;
            } else {
                tx.execute_raw(stmt(
                    "INSERT INTO better_sync_meta (key, value) VALUES (?, ?)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    vec![(*key).into(), value.to_string().into()],
                ))
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        if let Store::Sqlite(db) = self {
            let _ = db.clone().close().await;
        }
    }
}
