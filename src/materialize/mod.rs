//! Materialization: every committed row of a model also written, as its
//! current state, into a table of the application's own (a SeaORM entity),
//! in the same transaction as the log and the snapshots.
//!
//! The engine's writer hands each commit's snapshot records of a
//! materialized model to [`Materializers::statements`]; the statements it
//! builds (an upsert per chunk of live rows, a delete or soft delete per
//! chunk of deleted ones) run in the commit's transaction, so the table and
//! the snapshots never disagree about a committed row.
//!
//! The application creates the table in its own migrations; better-sync
//! never creates or alters it.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::str::FromStr;

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ColumnType, Condition, DbBackend, EntityTrait, IdenStatic, IntoActiveModel,
    Iterable, PrimaryKeyToColumn, QueryFilter, QueryTrait, Statement,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::storage::SnapshotRecord;
use crate::telemetry;

/// Rows per statement: well under every backend's bound-parameter limit for
/// tables of a few dozen columns.
const ROWS_PER_STATEMENT: usize = 100;

/// How a model's rows are written into an application's entity table: see
/// [`crate::BetterSyncBuilder::materialize`].
///
/// The entity's `Model` is built from the row's current fields (by serde,
/// so its field names are the JSON fields), plus the tenant (with
/// [`Materialize::tenant_field`]), the row's key when its fields lack it,
/// and `false` for the soft-delete flag. A row whose fields do not make a
/// `Model` (e.g. an update that arrived before its row's insert) is not in
/// the table until they do.
///
/// ```
/// use better_sync::Materialize;
///
/// mod todo {
///     use sea_orm::entity::prelude::*;
///
///     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
///     #[sea_orm(table_name = "todos")]
///     pub struct Model {
///         #[sea_orm(primary_key, auto_increment = false)]
///         pub tenant_id: String,
///         #[sea_orm(primary_key, auto_increment = false)]
///         pub id: String,
///         pub title: String,
///         pub done: bool,
///     }
///
///     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
///     pub enum Relation {}
///
///     impl ActiveModelBehavior for ActiveModel {}
/// }
///
/// let into_todos = Materialize::<todo::Entity>::new().tenant_field("tenant_id");
/// ```
pub struct Materialize<E> {
    tenant_field: Option<String>,
    soft_delete: Option<String>,
    entity: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for Materialize<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materialize")
            .field("entity", &std::any::type_name::<E>())
            .field("tenant_field", &self.tenant_field)
            .field("soft_delete", &self.soft_delete)
            .finish()
    }
}

impl<E> Default for Materialize<E> {
    fn default() -> Self {
        Self {
            tenant_field: None,
            soft_delete: None,
            entity: PhantomData,
        }
    }
}

impl<E: EntityTrait> Materialize<E> {
    /// Rows written into `E`'s table, deletes deleting. Without
    /// [`Materialize::tenant_field`] the table holds one namespace of keys:
    /// only right for an app with one tenant.
    pub fn new() -> Self {
        Self::default()
    }

    /// The field (and column) that holds the row's tenant. Make it part of
    /// the table's primary key (or of a unique index with the key) so that
    /// two tenants' rows with the same key stay two rows.
    pub fn tenant_field(mut self, field: impl Into<String>) -> Self {
        self.tenant_field = Some(field.into());
        self
    }

    /// Deleting a row sets this boolean field to `true` (and writing it,
    /// `false`) instead of deleting it from the table.
    pub fn soft_delete(mut self, field: impl Into<String>) -> Self {
        self.soft_delete = Some(field.into());
        self
    }
}

/// A materialized model as the writer uses it, its entity type erased.
pub(crate) trait MaterializedModel: Send + Sync {
    /// The statements that bring the table to these rows' states.
    fn statements(&self, backend: DbBackend, rows: &[&SnapshotRecord], out: &mut Vec<Statement>);
}

/// The columns of one entity that materialization writes by name, checked
/// when the engine is built.
struct Columns<E: EntityTrait> {
    /// The column holding the row's key (the primary key column that is not
    /// the tenant's).
    key: E::Column,
    /// Whether the key column holds numbers (the row key is parsed).
    numeric_key: bool,
    tenant: Option<E::Column>,
    soft_delete: Option<E::Column>,
    /// The upsert's conflict target and updated columns.
    on_conflict: OnConflict,
}

struct Bound<E: EntityTrait> {
    options: Materialize<E>,
    columns: Columns<E>,
}

fn column<E: EntityTrait>(field: &str) -> Result<E::Column, String> {
    E::Column::from_str(field)
        .map_err(|_| format!("table {} has no column {field:?}", E::default().as_str()))
}

fn is_numeric(t: &ColumnType) -> bool {
    matches!(
        t,
        ColumnType::TinyInteger
            | ColumnType::SmallInteger
            | ColumnType::Integer
            | ColumnType::BigInteger
            | ColumnType::TinyUnsigned
            | ColumnType::SmallUnsigned
            | ColumnType::Unsigned
            | ColumnType::BigUnsigned
    )
}

impl<E: EntityTrait> Bound<E> {
    fn new(options: Materialize<E>) -> Result<Self, String> {
        let tenant = options
            .tenant_field
            .as_deref()
            .map(column::<E>)
            .transpose()?;
        let soft_delete = options
            .soft_delete
            .as_deref()
            .map(column::<E>)
            .transpose()?;
        let primary: Vec<E::Column> = E::PrimaryKey::iter().map(|k| k.into_column()).collect();
        let keys: Vec<E::Column> = primary
            .iter()
            .copied()
            .filter(|c| tenant.is_none_or(|t| t.as_str() != c.as_str()))
            .collect();
        let [key] = keys[..] else {
            return Err(format!(
                "table {}'s primary key must be one column for the row's key{}",
                E::default().as_str(),
                if tenant.is_some() {
                    ", beside the tenant's"
                } else {
                    ""
                }
            ));
        };
        let others: Vec<E::Column> = E::Column::iter()
            .filter(|c| !primary.iter().any(|p| p.as_str() == c.as_str()))
            .collect();
        let mut on_conflict = OnConflict::columns(primary.iter().copied());
        if others.is_empty() {
            on_conflict.do_nothing();
        } else {
            on_conflict.update_columns(others);
        }
        Ok(Self {
            columns: Columns {
                key,
                numeric_key: is_numeric(key.def().get_column_type()),
                tenant,
                soft_delete,
                on_conflict,
            },
            options,
        })
    }

    fn key_value(&self, pk: &str) -> Value {
        match pk.parse::<i64>() {
            Ok(n) if self.columns.numeric_key => Value::from(n),
            _ => Value::String(pk.to_owned()),
        }
    }

    /// `WHERE tenant = ? AND key = ?` for one row.
    fn row_condition(&self, r: &SnapshotRecord) -> Condition {
        let key = match self.key_value(&r.id) {
            Value::Number(n) => self.columns.key.eq(n.as_i64()),
            _ => self.columns.key.eq(r.id.as_str()),
        };
        let mut c = Condition::all().add(key);
        if let Some(t) = self.columns.tenant {
            c = c.add(t.eq(r.tenant_id.as_str()));
        }
        c
    }
}

impl<E> Bound<E>
where
    E: EntityTrait,
    E::Model: DeserializeOwned + IntoActiveModel<E::ActiveModel>,
{
    /// The row as the entity's model; `Err` says why its fields do not make one.
    fn model(&self, r: &SnapshotRecord) -> Result<E::Model, String> {
        let mut fields: Map<String, Value> =
            serde_json::from_str(&r.value).map_err(|e| e.to_string())?;
        if let Some(t) = &self.options.tenant_field {
            fields.insert(t.clone(), Value::String(r.tenant_id.clone()));
        }
        if let Some(f) = &self.options.soft_delete {
            fields.insert(f.clone(), Value::Bool(false));
        }
        fields
            .entry(self.columns.key.as_str())
            .or_insert_with(|| self.key_value(&r.id));
        serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())
    }
}

impl<E> MaterializedModel for Bound<E>
where
    E: EntityTrait,
    E::Model: DeserializeOwned + IntoActiveModel<E::ActiveModel>,
{
    fn statements(&self, backend: DbBackend, rows: &[&SnapshotRecord], out: &mut Vec<Statement>) {
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for r in rows {
            if r.deleted {
                gone.push(*r);
                continue;
            }
            match self.model(r) {
                Ok(m) => live.push(m.into_active_model()),
                Err(reason) => {
                    // Not a failure of the commit: the row is simply not
                    // whole yet; what was there of it goes.
                    tracing::warn!(
                        table = E::default().as_str(),
                        tenant = %r.tenant_id,
                        pk = %r.id,
                        %reason,
                        "row not materialized: its fields do not make the entity's model"
                    );
                    metrics::counter!(telemetry::MATERIALIZE_SKIPPED, "table" => E::default().as_str())
                        .increment(1);
                    gone.push(*r);
                }
            }
        }
        let mut live = live.into_iter().peekable();
        while live.peek().is_some() {
            let chunk: Vec<_> = live.by_ref().take(ROWS_PER_STATEMENT).collect();
            out.push(
                E::insert_many(chunk)
                    .on_conflict(self.columns.on_conflict.clone())
                    .build(backend),
            );
        }
        for chunk in gone.chunks(ROWS_PER_STATEMENT) {
            let which = chunk
                .iter()
                .fold(Condition::any(), |c, r| c.add(self.row_condition(r)));
            out.push(match self.columns.soft_delete {
                Some(flag) => E::update_many()
                    .col_expr(flag, Expr::value(true))
                    .filter(which)
                    .build(backend),
                None => E::delete_many().filter(which).build(backend),
            });
        }
    }
}

/// The materialized models of an engine, by model name.
#[derive(Default)]
pub(crate) struct Materializers(BTreeMap<String, Box<dyn MaterializedModel>>);

impl std::fmt::Debug for Materializers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Materializers {
    /// Bind `model` to `E`'s table; `Err` says why the entity cannot take it.
    pub(crate) fn bind<E>(&mut self, model: String, options: Materialize<E>) -> Result<(), String>
    where
        E: EntityTrait,
        E::Model: DeserializeOwned + IntoActiveModel<E::ActiveModel>,
    {
        self.0.insert(model, Box::new(Bound::new(options)?));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The statements that bring every materialized table to these rows'
    /// states (none when no row is of a materialized model).
    pub(crate) fn statements<'a>(
        &self,
        backend: DbBackend,
        rows: impl IntoIterator<Item = &'a SnapshotRecord>,
    ) -> Vec<Statement> {
        let mut out = Vec::new();
        if self.0.is_empty() {
            return out;
        }
        let mut by_model: BTreeMap<&str, Vec<&SnapshotRecord>> = BTreeMap::new();
        for r in rows {
            if self.0.contains_key(&r.model) {
                by_model.entry(&r.model).or_default().push(r);
            }
        }
        for (model, rows) in by_model {
            self.0[model].statements(backend, &rows, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests;
