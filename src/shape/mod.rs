//! Shapes: server-defined, parameterized subsets of a tenant's rows of one
//! model, which a client subscribes to instead of the whole tenant.
//!
//! A shape is a model and a [`Filter`] over the row's fields: comparisons,
//! `IN`, `IS NULL`, `AND` / `OR`, role checks, and membership lookups through
//! another model (`todo.project_id IN (member.project_id WHERE
//! member.user_id = <the user>)`). Operands are literals, parameters the
//! subscriber passes (declared with a type), or the verified context.
//!
//! The same filter is evaluated two ways that must agree: in SQL over the
//! `snapshots` table for bootstrap (`sql.rs`, per backend) and in Rust over
//! a row's current fields (`eval.rs`). Their common semantics:
//!
//! - a field's value is its JSON value; a missing field is `null`;
//! - a comparison holds only between values of the same JSON type: strings
//!   compare by their UTF-8 bytes, numbers as 64-bit floats, booleans only
//!   for (in)equality; `null` or another type never compares (as SQL's
//!   `NULL`), so `!=` does not hold either;
//! - `IS NULL` holds for `null` and for a missing field.
//!
//! The live path keeps a subscriber's lookup values (`live.rs`, read once
//! by SQL) and evaluates the rows a commit touched in Rust with them.

mod eval;
mod live;
mod params;
mod sql;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;

pub(crate) use self::eval::{holds, lookup_values};
pub(crate) use self::live::{LookupValues, top_lookups};
pub(crate) use self::params::Bound;
pub use self::params::ParamType;
pub use self::sql::index_sql;
pub(crate) use self::sql::{condition, restrict_to_ids};

/// Longest field name a shape may name (the JSON path is built from it).
const MAX_FIELD: usize = 64;

/// A shape: a name clients subscribe by, a model, parameters and a filter.
///
/// ```
/// use better_sync::shape::{Lookup, ParamType, Shape, field, param, user_id};
///
/// // The todos of one project, chosen by the subscriber.
/// let project = Shape::new("project_todos", "todo")
///     .param("project", ParamType::String)
///     .filter(field("project_id").eq(param("project")));
///
/// // The todos of every project the user is a member of.
/// let mine = Shape::new("my_todos", "todo").filter(field("project_id").in_lookup(
///     Lookup::new("member", "project_id").filter(field("user_id").eq(user_id())),
/// ));
/// ```
#[derive(Debug, Clone)]
pub struct Shape {
    pub(crate) name: String,
    pub(crate) model: String,
    pub(crate) params: BTreeMap<String, ParamType>,
    pub(crate) filter: Filter,
}

impl Shape {
    /// A shape of `model` called `name`, holding every row until filtered.
    pub fn new(name: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            params: BTreeMap::new(),
            filter: Filter::All(Vec::new()),
        }
    }

    /// Declare a parameter the subscriber must pass, with its type.
    pub fn param(mut self, name: impl Into<String>, ty: ParamType) -> Self {
        self.params.insert(name.into(), ty);
        self
    }

    /// The rows of the shape: those this filter holds for (several calls
    /// combine with AND).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = self.filter.and(filter);
        self
    }

    /// The shape's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model whose rows it holds.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Its parameters and their types.
    pub fn params(&self) -> impl Iterator<Item = (&str, ParamType)> {
        self.params.iter().map(|(n, t)| (n.as_str(), *t))
    }

    /// The models its lookups read (their changes can move rows in or out).
    pub fn lookup_models(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.filter.lookup_models(&mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `row` (a row's current fields) is in this shape for a
    /// subscriber with `ctx` and `params`, evaluated in Rust as the live
    /// path does; `rows_of(model)` gives the live rows of a lookup's model.
    /// The bootstrap evaluates the same filter in SQL, with the same
    /// answers (the shapes tests check both on random rows).
    pub fn holds_for<'a>(
        &self,
        ctx: &crate::auth::Ctx,
        params: Option<&Value>,
        row: &serde_json::Map<String, Value>,
        rows_of: &dyn Fn(&str) -> Vec<&'a serde_json::Map<String, Value>>,
    ) -> Result<bool, crate::error::SyncError> {
        let bound = Bound::new(self, params, ctx)?;
        let mut lookup = |l: &Lookup| lookup_values(l, &bound, rows_of);
        Ok(holds(&self.filter, row, &bound, &mut lookup))
    }

    /// Why the shape cannot work, if it cannot: names, fields, parameters.
    pub(crate) fn problem(&self) -> Option<String> {
        if !better_sync_core::protocol::is_valid_model_name(&self.name) {
            return Some(format!(
                "shape name {:?} is not a plain identifier",
                self.name
            ));
        }
        if !better_sync_core::protocol::is_valid_model_name(&self.model) {
            return Some(format!("model {:?} is not a plain identifier", self.model));
        }
        self.filter.problem(&self.params)
    }
}

/// A condition on a row's fields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Filter {
    /// Every one holds (`true` when empty).
    All(Vec<Filter>),
    /// At least one holds (`false` when empty).
    Any(Vec<Filter>),
    /// `field op operand`.
    Compare {
        /// The row's field.
        field: String,
        /// The comparison.
        op: CompareOp,
        /// What it is compared with.
        operand: Operand,
    },
    /// `field IN (operands)`.
    In {
        /// The row's field.
        field: String,
        /// The values it may equal.
        operands: Vec<Operand>,
    },
    /// The field is `null` or missing.
    IsNull(String),
    /// The field has a value other than `null`.
    IsNotNull(String),
    /// The subscriber's verified context has this role.
    HasRole(String),
    /// `field IN (lookup.field of the lookup model's rows matching its filter)`.
    InLookup {
        /// The row's field.
        field: String,
        /// The rows of the other model, and which of their fields.
        lookup: Box<Lookup>,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A value a field is compared with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Operand {
    /// A literal: a string, number or boolean.
    Value(Value),
    /// A parameter of the subscription, declared with [`Shape::param`].
    Param(String),
    /// The verified context's user id.
    UserId,
    /// The verified context's tenant.
    TenantId,
}

/// The rows of another model a membership lookup reads: its `field` of the
/// rows that match `filter` (whose operands may use the same parameters
/// and context).
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub(crate) model: String,
    pub(crate) field: String,
    pub(crate) filter: Filter,
}

impl Lookup {
    /// `field` of the rows of `model`.
    pub fn new(model: impl Into<String>, field: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            field: field.into(),
            filter: Filter::All(Vec::new()),
        }
    }

    /// Only the rows this filter holds for.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
}

/// A field of the row, to build conditions on.
#[derive(Debug, Clone)]
pub struct Field(String);

/// The row's field `name`.
pub fn field(name: impl Into<String>) -> Field {
    Field(name.into())
}

/// The subscription's parameter `name`.
pub fn param(name: impl Into<String>) -> Operand {
    Operand::Param(name.into())
}

/// The verified context's user id.
pub fn user_id() -> Operand {
    Operand::UserId
}

/// The verified context's tenant.
pub fn tenant_id() -> Operand {
    Operand::TenantId
}

/// Whether the verified context has `role`.
pub fn has_role(role: impl Into<String>) -> Filter {
    Filter::HasRole(role.into())
}

impl<T: Into<Value>> From<T> for Operand {
    fn from(v: T) -> Self {
        Operand::Value(v.into())
    }
}

impl Field {
    fn compare(self, op: CompareOp, operand: impl Into<Operand>) -> Filter {
        Filter::Compare {
            field: self.0,
            op,
            operand: operand.into(),
        }
    }

    /// `field = operand`.
    pub fn eq(self, operand: impl Into<Operand>) -> Filter {
        self.compare(CompareOp::Eq, operand)
    }

    /// `field != operand` (false for `null`, a missing field or another type).
    pub fn ne(self, operand: impl Into<Operand>) -> Filter {
        self.compare(CompareOp::Ne, operand)
    }

    /// `field < operand`.
    pub fn lt(self, operand: impl Into<Operand>) -> Filter {
        self.compare(CompareOp::Lt, operand)
    }

    /// `field <= operand`.
    pub fn le(self, operand: impl Into<Operand>) -> Filter {
        self.compare(CompareOp::Le, operand)
    }

    /// `field > operand`.
    pub fn gt(self, operand: impl Into<Operand>) -> Filter {
        self.compare(CompareOp::Gt, operand)
    }

    /// `field >= operand`.
    pub fn ge(self, operand: impl Into<Operand>) -> Filter {
        self.compare(CompareOp::Ge, operand)
    }

    /// `field IN (operands)`.
    pub fn is_in<I, O>(self, operands: I) -> Filter
    where
        I: IntoIterator<Item = O>,
        O: Into<Operand>,
    {
        Filter::In {
            field: self.0,
            operands: operands.into_iter().map(Into::into).collect(),
        }
    }

    /// `field IS NULL` (or missing).
    pub fn is_null(self) -> Filter {
        Filter::IsNull(self.0)
    }

    /// `field IS NOT NULL`.
    pub fn is_not_null(self) -> Filter {
        Filter::IsNotNull(self.0)
    }

    /// `field IN (lookup)`: a membership lookup through another model.
    pub fn in_lookup(self, lookup: Lookup) -> Filter {
        Filter::InLookup {
            field: self.0,
            lookup: Box::new(lookup),
        }
    }
}

impl Filter {
    /// `self AND other`.
    pub fn and(self, other: Filter) -> Filter {
        match self {
            Filter::All(mut all) => {
                all.push(other);
                Filter::All(all)
            }
            one => Filter::All(vec![one, other]),
        }
    }

    /// `self OR other`.
    pub fn or(self, other: Filter) -> Filter {
        match self {
            Filter::Any(mut any) => {
                any.push(other);
                Filter::Any(any)
            }
            one => Filter::Any(vec![one, other]),
        }
    }

    fn lookup_models<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::All(fs) | Filter::Any(fs) => fs.iter().for_each(|f| f.lookup_models(out)),
            Filter::InLookup { lookup, .. } => {
                out.push(&lookup.model);
                lookup.filter.lookup_models(out);
            }
            _ => {}
        }
    }

    fn problem(&self, params: &BTreeMap<String, ParamType>) -> Option<String> {
        let bad_field = |f: &str| {
            let ok = !f.is_empty()
                && f.len() <= MAX_FIELD
                && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (!ok).then(|| format!("field {f:?} must be 1 to {MAX_FIELD} of A-Z a-z 0-9 _"))
        };
        let bad_operand = |o: &Operand| match o {
            Operand::Param(p) if !params.contains_key(p) => {
                Some(format!("parameter {p:?} is not declared (Shape::param)"))
            }
            Operand::Value(v) if !(v.is_string() || v.is_number() || v.is_boolean()) => {
                Some(format!("literal {v} must be a string, number or boolean"))
            }
            _ => None,
        };
        match self {
            Filter::All(fs) | Filter::Any(fs) => fs.iter().find_map(|f| f.problem(params)),
            Filter::Compare { field, op, operand } => bad_field(field)
                .or_else(|| bad_operand(operand))
                .or_else(|| match (op, operand) {
                    (CompareOp::Eq | CompareOp::Ne, _) => None,
                    (_, Operand::Value(Value::Bool(_))) => {
                        Some(format!("{field}: booleans compare only with eq and ne"))
                    }
                    (_, Operand::Param(p)) if params.get(p) == Some(&ParamType::Bool) => {
                        Some(format!("{field}: booleans compare only with eq and ne"))
                    }
                    _ => None,
                }),
            Filter::In { field, operands } => {
                bad_field(field).or_else(|| operands.iter().find_map(bad_operand))
            }
            Filter::IsNull(f) | Filter::IsNotNull(f) => bad_field(f),
            Filter::HasRole(_) => None,
            Filter::InLookup { field, lookup } => bad_field(field)
                .or_else(|| bad_field(&lookup.field))
                .or_else(|| {
                    (!better_sync_core::protocol::is_valid_model_name(&lookup.model)).then(|| {
                        format!("lookup model {:?} is not a plain identifier", lookup.model)
                    })
                })
                .or_else(|| lookup.filter.problem(params)),
        }
    }
}

/// The shapes of an engine, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shapes(BTreeMap<String, Shape>);

impl Shapes {
    pub(crate) fn insert(&mut self, shape: Shape) {
        self.0.insert(shape.name.clone(), shape);
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Shape> {
        self.0.get(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Shape> {
        self.0.values()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
