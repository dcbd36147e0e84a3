//! What an app writes ([`Change`]) and reads ([`Row`], [`Filter`]).

use std::sync::Arc;

use better_sync_core::protocol::Op;
use serde_json::Value;

/// A local write to one row, for [`crate::SyncClient::apply_change`].
///
/// ```
/// use better_sync_client::Change;
/// use serde_json::json;
/// let add = Change::insert("1", json!({"id": "1", "title": "Write docs", "done": false}));
/// let tick = Change::update("1", json!({"done": true}));
/// let drop = Change::delete("1");
/// # let _ = (add, tick, drop);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub(crate) op: Op,
    pub(crate) id: String,
    pub(crate) payload: Value,
}

impl Change {
    /// Create the row `id` (or re-create it after a delete) with `value`, an object.
    pub fn insert(id: impl Into<String>, value: Value) -> Self {
        Self {
            op: Op::Insert,
            id: id.into(),
            payload: value,
        }
    }

    /// Set the fields of `fields` (a non-empty object); other fields keep
    /// their values. Concurrent updates of different fields both survive.
    pub fn update(id: impl Into<String>, fields: Value) -> Self {
        Self {
            op: Op::Update,
            id: id.into(),
            payload: fields,
        }
    }

    /// Remove the row `id`.
    pub fn delete(id: impl Into<String>) -> Self {
        Self {
            op: Op::Delete,
            id: id.into(),
            payload: Value::Null,
        }
    }

    /// The operation.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The row's primary key.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A live row as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The primary key.
    pub id: String,
    /// The row's current fields.
    pub value: Value,
}

type Predicate = Arc<dyn Fn(&Row) -> bool + Send + Sync>;

/// Which rows of a model a query returns: field equalities and, optionally,
/// a predicate of the app's. The empty filter matches every row.
///
/// ```
/// use better_sync_client::Filter;
/// use serde_json::json;
/// let open = Filter::eq("done", false);
/// let mine_and_open = Filter::eq("owner", "ann").and_eq("done", false);
/// let long = Filter::custom(|row| {
///     row.value["title"].as_str().is_some_and(|t| t.len() > 20)
/// });
/// assert!(open.matches(&better_sync_client::Row { id: "1".into(), value: json!({"done": false}) }));
/// # let _ = (mine_and_open, long);
/// ```
#[derive(Clone, Default)]
pub struct Filter {
    eq: Vec<(String, Value)>,
    predicate: Option<Predicate>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("eq", &self.eq)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl Filter {
    /// Every row.
    pub fn all() -> Self {
        Self::default()
    }

    /// Rows whose `field` equals `value`.
    pub fn eq(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::all().and_eq(field, value)
    }

    /// Also require `field` to equal `value`.
    pub fn and_eq(mut self, field: impl Into<String>, value: impl Into<Value>) -> Self {
        self.eq.push((field.into(), value.into()));
        self
    }

    /// Rows for which `predicate` holds.
    pub fn custom(predicate: impl Fn(&Row) -> bool + Send + Sync + 'static) -> Self {
        Self {
            eq: Vec::new(),
            predicate: Some(Arc::new(predicate)),
        }
    }

    /// Whether `row` matches.
    pub fn matches(&self, row: &Row) -> bool {
        self.eq
            .iter()
            .all(|(field, value)| row.value.get(field) == Some(value))
            && self.predicate.as_ref().is_none_or(|p| p(row))
    }
}
