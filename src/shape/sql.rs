//! A shape's filter as SQL over the `snapshots` table, per backend, with
//! the semantics of the module docs (what `eval.rs` does in Rust):
//! same-type comparisons only, strings by bytes, numbers as floats, a
//! missing field as `null`. Field names are checked identifiers, written
//! into the JSON paths; every operand is a bound value.

use sea_orm::DbBackend;
use serde_json::Value;

use super::{Bound, CompareOp, Filter, Lookup};

use crate::storage::SqlCondition as Condition;

/// The JSON type names each backend reports.
struct Types {
    string: &'static str,
    numbers: &'static [&'static str],
    boolean: &'static [&'static str],
    null: &'static str,
}

struct Builder<'a> {
    backend: DbBackend,
    bound: &'a Bound,
    tenant: &'a str,
    sql: String,
    values: Vec<sea_orm::Value>,
    /// Nesting depth of lookups, for their table aliases.
    depth: usize,
}

impl Builder<'_> {
    fn types(&self) -> Types {
        match self.backend {
            DbBackend::Sqlite => Types {
                string: "'text'",
                numbers: &["'integer'", "'real'"],
                boolean: &["'true'", "'false'"],
                null: "'null'",
            },
            DbBackend::Postgres => Types {
                string: "'string'",
                numbers: &["'number'"],
                boolean: &["'boolean'"],
                null: "'null'",
            },
            _ => Types {
                string: "'STRING'",
                numbers: &["'INTEGER'", "'UNSIGNED INTEGER'", "'DOUBLE'", "'DECIMAL'"],
                boolean: &["'BOOLEAN'"],
                null: "'NULL'",
            },
        }
    }

    fn bind(&mut self, v: sea_orm::Value) -> String {
        self.values.push(v);
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".into(),
        }
    }

    /// The JSON type of `value`'s field (SQL `NULL` when missing).
    fn json_type(&self, col: &str, f: &str) -> String {
        match self.backend {
            DbBackend::Sqlite => format!("json_type({col}, '$.\"{f}\"')"),
            DbBackend::Postgres => format!("jsonb_typeof(({col})::jsonb -> '{f}')"),
            _ => format!("JSON_TYPE(JSON_EXTRACT({col}, '$.\"{f}\"'))"),
        }
    }

    /// The field as text (strings, and `true` / `false`).
    fn text(&self, col: &str, f: &str) -> String {
        match self.backend {
            DbBackend::Sqlite => format!("json_extract({col}, '$.\"{f}\"')"),
            DbBackend::Postgres => format!("(({col})::jsonb ->> '{f}')"),
            _ => format!("JSON_UNQUOTE(JSON_EXTRACT({col}, '$.\"{f}\"'))"),
        }
    }

    /// The field as a float.
    fn number(&self, col: &str, f: &str) -> String {
        match self.backend {
            DbBackend::Sqlite => format!("json_extract({col}, '$.\"{f}\"')"),
            DbBackend::Postgres => format!("((({col})::jsonb ->> '{f}')::float8)"),
            _ => format!("(JSON_EXTRACT({col}, '$.\"{f}\"') + 0e0)"),
        }
    }

    /// Byte order for strings: Postgres compares text by the database's
    /// collation, MySQL by the column's; both are told to compare bytes.
    fn string_cmp(&mut self, lhs: &str, op: &str, s: &str) -> String {
        let p = self.bind(sea_orm::Value::from(s.to_owned()));
        match self.backend {
            DbBackend::Sqlite => format!("{lhs} {op} {p}"),
            DbBackend::Postgres => format!("{lhs} COLLATE \"C\" {op} {p} COLLATE \"C\""),
            _ => format!("BINARY {lhs} {op} BINARY {p}"),
        }
    }

    fn one_of(ty: &str, names: &[&str]) -> String {
        format!("{ty} IN ({})", names.join(", "))
    }

    fn compare(&mut self, col: &str, f: &str, op: CompareOp, x: &Value) -> String {
        let types = self.types();
        let ty = self.json_type(col, f);
        let sql_op = match op {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        };
        match x {
            Value::String(s) => {
                let text = self.text(col, f);
                let cmp = self.string_cmp(&text, sql_op, s);
                format!("({ty} = {} AND {cmp})", types.string)
            }
            Value::Number(n) => {
                let num = self.number(col, f);
                let p = self.bind(sea_orm::Value::from(n.as_f64().unwrap_or(f64::NAN)));
                format!(
                    "({} AND {num} {sql_op} {p})",
                    Self::one_of(&ty, types.numbers)
                )
            }
            Value::Bool(b) if matches!(op, CompareOp::Eq | CompareOp::Ne) => {
                let want = (op == CompareOp::Eq) == *b;
                let word = if want { "true" } else { "false" };
                match self.backend {
                    DbBackend::Sqlite => format!("({ty} = '{word}')"),
                    _ => {
                        let text = self.text(col, f);
                        format!(
                            "({} AND {text} = '{word}')",
                            Self::one_of(&ty, types.boolean)
                        )
                    }
                }
            }
            // Booleans order nothing, and null compares with nothing.
            _ => "(1 = 0)".into(),
        }
    }

    fn is_null(&self, col: &str, f: &str) -> String {
        let ty = self.json_type(col, f);
        format!("({ty} IS NULL OR {ty} = {})", self.types().null)
    }

    fn filter(&mut self, col: &str, filter: &Filter) -> String {
        match filter {
            Filter::All(fs) if fs.is_empty() => "(1 = 1)".into(),
            Filter::Any(fs) if fs.is_empty() => "(1 = 0)".into(),
            Filter::All(fs) => {
                let parts: Vec<String> = fs.iter().map(|f| self.filter(col, f)).collect();
                format!("({})", parts.join(" AND "))
            }
            Filter::Any(fs) => {
                let parts: Vec<String> = fs.iter().map(|f| self.filter(col, f)).collect();
                format!("({})", parts.join(" OR "))
            }
            Filter::Compare { field, op, operand } => {
                let x = self.bound.value(operand);
                self.compare(col, field, *op, &x)
            }
            Filter::In { field, operands } => {
                if operands.is_empty() {
                    return "(1 = 0)".into();
                }
                let parts: Vec<String> = operands
                    .iter()
                    .map(|o| {
                        let x = self.bound.value(o);
                        self.compare(col, field, CompareOp::Eq, &x)
                    })
                    .collect();
                format!("({})", parts.join(" OR "))
            }
            Filter::IsNull(f) => self.is_null(col, f),
            Filter::IsNotNull(f) => format!("(NOT {})", self.is_null(col, f)),
            Filter::HasRole(r) => {
                if self.bound.has_role(r) {
                    "(1 = 1)".into()
                } else {
                    "(1 = 0)".into()
                }
            }
            Filter::InLookup { field, lookup } => self.in_lookup(col, field, lookup),
        }
    }

    /// `field IN (lookup)`, by strings and by numbers.
    fn in_lookup(&mut self, col: &str, f: &str, l: &Lookup) -> String {
        self.depth += 1;
        let alias = format!("lk{}", self.depth);
        let inner = format!("{alias}.value");
        let types = self.types();
        let mut parts = Vec::new();
        for kind in ["string", "number"] {
            let (outer_ty, outer_v, inner_ty, inner_v) = if kind == "string" {
                (
                    format!("{} = {}", self.json_type(col, f), types.string),
                    self.text(col, f),
                    format!("{} = {}", self.json_type(&inner, &l.field), types.string),
                    self.text(&inner, &l.field),
                )
            } else {
                (
                    Self::one_of(&self.json_type(col, f), types.numbers),
                    self.number(col, f),
                    Self::one_of(&self.json_type(&inner, &l.field), types.numbers),
                    self.number(&inner, &l.field),
                )
            };
            let (outer_v, inner_v) = match (self.backend, kind) {
                (DbBackend::Postgres, "string") => (
                    format!("{outer_v} COLLATE \"C\""),
                    format!("{inner_v} COLLATE \"C\""),
                ),
                (DbBackend::MySql, "string") => {
                    (format!("BINARY {outer_v}"), format!("BINARY {inner_v}"))
                }
                _ => (outer_v, inner_v),
            };
            let tenant = self.bind(sea_orm::Value::from(self.tenant.to_owned()));
            let model = self.bind(sea_orm::Value::from(l.model.clone()));
            let deleted = self.bind(sea_orm::Value::from(false));
            let filter = self.filter(&inner, &l.filter);
            parts.push(format!(
                "({outer_ty} AND {outer_v} IN (SELECT {inner_v} FROM snapshots {alias} \
                 WHERE {alias}.tenant_id = {tenant} AND {alias}.model = {model} \
                 AND {alias}.deleted = {deleted} AND {inner_ty} AND {filter}))"
            ));
        }
        self.depth -= 1;
        format!("({})", parts.join(" OR "))
    }
}

/// The shape's filter as a condition on `snapshots` rows (the outer query's
/// `value` column is `snapshots.value`), for `tenant`.
pub(crate) fn condition(
    backend: DbBackend,
    filter: &Filter,
    bound: &Bound,
    tenant: &str,
) -> Condition {
    let mut b = Builder {
        backend,
        bound,
        tenant,
        sql: String::new(),
        values: Vec::new(),
        depth: 0,
    };
    let sql = b.filter("snapshots.value", filter);
    b.sql = sql;
    Condition {
        sql: b.sql,
        values: b.values,
    }
}

/// `condition AND snapshots.id IN (ids)`: the rows of `ids` that are in
/// the shape now (the live path re-evaluates the rows a commit touched).
pub(crate) fn restrict_to_ids(backend: DbBackend, mut c: Condition, ids: &[&str]) -> Condition {
    if ids.is_empty() {
        c.sql = format!("({}) AND (1 = 0)", c.sql);
        return c;
    }
    let mut marks = Vec::with_capacity(ids.len());
    for id in ids {
        c.values.push(sea_orm::Value::from((*id).to_owned()));
        marks.push(match backend {
            DbBackend::Postgres => format!("${}", c.values.len()),
            _ => "?".into(),
        });
    }
    c.sql = format!("({}) AND snapshots.id IN ({})", c.sql, marks.join(", "));
    c
}

/// The index that lets a shape's bootstrap read only the rows whose `field`
/// matches (an equality or `IN` on it, a membership lookup through it),
/// for the app's own migration; `None` on MySQL and MariaDB, where an index
/// on a JSON expression is not used for these queries (MariaDB before 11
/// has no functional indexes; a generated column is not matched).
///
/// ```
/// use better_sync::sea_orm::DbBackend;
/// use better_sync::shape::index_sql;
///
/// let sql = index_sql(DbBackend::Postgres, "todo", "project_id").unwrap();
/// assert!(sql.starts_with("CREATE INDEX IF NOT EXISTS"));
/// assert!(index_sql(DbBackend::MySql, "todo", "project_id").is_none());
/// ```
pub fn index_sql(backend: DbBackend, model: &str, field: &str) -> Option<String> {
    let name = format!("\"snapshots_{model}_{field}\"");
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !safe(model) || !safe(field) || field.contains('-') {
        return None;
    }
    match backend {
        DbBackend::Sqlite => Some(format!(
            "CREATE INDEX IF NOT EXISTS {name} ON snapshots (tenant_id, model, json_extract(value, '$.\"{field}\"'), id)"
        )),
        DbBackend::Postgres => Some(format!(
            "CREATE INDEX IF NOT EXISTS {name} ON snapshots (tenant_id, model, (((value)::jsonb ->> '{field}') COLLATE \"C\"), id)"
        )),
        _ => None,
    }
}
