//! A shape's filter evaluated in Rust over a row's current fields (the live
//! path), with the semantics the module docs state and `sql.rs` mirrors.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::{Bound, CompareOp, Filter, Lookup};

/// How two JSON values of the same type compare; `None` across types or
/// for `null` (which never compares, as SQL's `NULL`).
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn compare(v: &Value, op: CompareOp, x: &Value) -> bool {
    let Some(o) = order(v, x) else {
        return false;
    };
    if v.is_boolean() && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
        return false;
    }
    match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Ne => o != Ordering::Equal,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
    }
}

fn field<'a>(row: &'a Map<String, Value>, name: &str) -> &'a Value {
    row.get(name).unwrap_or(&Value::Null)
}

/// Whether `filter` holds for `row`. `lookup` gives the values of a
/// membership lookup's field over the lookup model's matching rows.
pub(crate) fn holds(
    filter: &Filter,
    row: &Map<String, Value>,
    bound: &Bound,
    lookup: &mut dyn FnMut(&Lookup) -> Vec<Value>,
) -> bool {
    holds_with(filter, row, bound, &mut |l, v| {
        lookup(l).iter().any(|m| compare(v, CompareOp::Eq, m))
    })
}

/// Whether `value` is among a lookup's values: by string or number, as
/// [`holds`] compares them (for lookup values read once and kept).
pub(crate) fn among(value: &Value, values: &[Value]) -> bool {
    values.iter().any(|m| compare(value, CompareOp::Eq, m))
}

/// [`holds`], with `member(lookup, value)` answering whether `value` is
/// among the lookup's values (a string or a number).
pub(crate) fn holds_with(
    filter: &Filter,
    row: &Map<String, Value>,
    bound: &Bound,
    member: &mut dyn FnMut(&Lookup, &Value) -> bool,
) -> bool {
    match filter {
        Filter::All(fs) => fs.iter().all(|f| holds_with(f, row, bound, member)),
        Filter::Any(fs) => fs.iter().any(|f| holds_with(f, row, bound, member)),
        Filter::Compare {
            field: f,
            op,
            operand,
        } => compare(field(row, f), *op, &bound.value(operand)),
        Filter::In { field: f, operands } => {
            let v = field(row, f);
            operands
                .iter()
                .any(|o| compare(v, CompareOp::Eq, &bound.value(o)))
        }
        Filter::IsNull(f) => field(row, f).is_null(),
        Filter::IsNotNull(f) => !field(row, f).is_null(),
        Filter::HasRole(r) => bound.has_role(r),
        Filter::InLookup {
            field: f,
            lookup: l,
        } => {
            let v = field(row, f);
            // Membership is by string or number; other types never match.
            (v.is_string() || v.is_number()) && member(l, v)
        }
    }
}

/// The values of `l.field` over `rows` (the lookup model's live rows) that
/// `l.filter` holds for: what [`holds`] needs for a lookup, computed in Rust
/// (nested lookups through `rows_of`).
pub(crate) fn lookup_values<'a>(
    l: &Lookup,
    bound: &Bound,
    rows_of: &dyn Fn(&str) -> Vec<&'a Map<String, Value>>,
) -> Vec<Value> {
    let mut nested = |inner: &Lookup| lookup_values(inner, bound, rows_of);
    rows_of(&l.model)
        .into_iter()
        .filter(|r| holds(&l.filter, r, bound, &mut nested))
        .map(|r| field(r, &l.field).clone())
        .filter(|v| v.is_string() || v.is_number())
        .collect()
}
