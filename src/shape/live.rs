//! A shape's lookups read once for a subscriber: the live path evaluates
//! the rows a commit touched in Rust with them, instead of one query per
//! subscriber and commit. They stay true until a commit touches a lookup's
//! model, when the whole shape is evaluated again (and they are read again).

use serde_json::{Map, Value};

use super::eval::{among, holds_with};
use super::{Bound, Filter, Lookup, Shape};

/// The values of each lookup of a shape's filter (not those nested in a
/// lookup's own filter: SQL evaluates those when the values are read).
#[derive(Debug, Clone, Default)]
pub(crate) struct LookupValues {
    values: Vec<(Lookup, Vec<Value>)>,
}

impl LookupValues {
    /// Values read for `lookups` (in the order of [`top_lookups`]).
    pub(crate) fn new(values: Vec<(Lookup, Vec<Value>)>) -> Self {
        Self { values }
    }

    /// Whether `row` is in `shape` for the subscriber `bound` describes.
    pub(crate) fn holds(&self, shape: &Shape, bound: &Bound, row: &Map<String, Value>) -> bool {
        holds_with(&shape.filter, row, bound, &mut |l, v| {
            self.values
                .iter()
                .find(|(known, _)| known == l)
                .is_some_and(|(_, values)| among(v, values))
        })
    }
}

/// The lookups of `filter` itself, outermost only.
pub(crate) fn top_lookups(filter: &Filter) -> Vec<&Lookup> {
    let mut out = Vec::new();
    collect(filter, &mut out);
    out
}

fn collect<'a>(filter: &'a Filter, out: &mut Vec<&'a Lookup>) {
    match filter {
        Filter::All(fs) | Filter::Any(fs) => fs.iter().for_each(|f| collect(f, out)),
        Filter::InLookup { lookup, .. } => out.push(lookup),
        _ => {}
    }
}
