//! Conflict resolution: field-level last-writer-wins by hybrid logical clock.
//!
//! Every replica (server and clients) keeps, per row, a [`RowState`] and folds
//! changes into it with [`RowState::apply`]. The fold is a join on a
//! semilattice (every component only ever moves to a larger stamp), so replicas
//! that have seen the same set of changes hold the same state whatever order
//! they saw them in. The rules, also in `docs/PROTOCOL.md`:
//!
//! 1. A change's stamp is `(clock, rank, actor, op_id)`, compared in that
//!    order; `rank` is 1 for a delete and 0 otherwise, so at an equal clock a
//!    delete wins ("delete-first"), then the larger actor id, then the larger
//!    op id.
//! 2. A delete raises the row's tombstone to its stamp if larger, and drops
//!    every field written before the tombstone.
//! 3. An insert or update writes each field of its payload whose current stamp
//!    is smaller than the change's, unless the tombstone is larger than the
//!    change. Concurrent updates of different fields therefore both survive.
//! 4. The row exists when its latest insert is larger than its tombstone: an
//!    insert after a delete re-creates the row (with only the fields written
//!    after the delete); an update never re-creates a deleted row, its fields
//!    are kept and show if a later insert re-creates the row.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::hlc::Hlc;
use crate::protocol::Op;

/// Conflict resolution strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// Field-level last-writer-wins by hybrid logical clock (the only one, for now).
    #[default]
    Lww,
}

/// Who wrote a value and when: the ordering key of last-writer-wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The change's clock.
    pub clock: Hlc,
    /// The change's actor.
    pub actor: String,
    /// The change's op id, the last tie-breaker.
    pub op_id: String,
}

impl Stamp {
    /// A stamp.
    pub fn new(clock: Hlc, actor: impl Into<String>, op_id: impl Into<String>) -> Self {
        Self {
            clock,
            actor: actor.into(),
            op_id: op_id.into(),
        }
    }

    fn key(&self, rank: u8) -> (Hlc, u8, &str, &str) {
        (self.clock, rank, &self.actor, &self.op_id)
    }

    fn to_json(&self) -> Value {
        json!([self.clock.to_string(), self.actor, self.op_id])
    }

    fn from_json(v: &Value) -> Option<Self> {
        let a = v.as_array()?;
        if a.len() != 3 {
            return None;
        }
        Some(Self::new(
            a[0].as_str()?.parse().ok()?,
            a[1].as_str()?,
            a[2].as_str()?,
        ))
    }
}

const WRITE: u8 = 0;
const DELETE: u8 = 1;

/// `a` (a write) orders after the tombstone `t`.
fn write_beats_delete(a: &Stamp, t: &Stamp) -> bool {
    a.key(WRITE) > t.key(DELETE)
}

fn newer(a: &Stamp, b: &Stamp, rank: u8) -> bool {
    a.key(rank).cmp(&b.key(rank)) == Ordering::Greater
}

/// The merge state of one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowState {
    /// Latest delete.
    pub tombstone: Option<Stamp>,
    /// Latest insert.
    pub inserted: Option<Stamp>,
    /// Live fields (written after the tombstone) with their stamps.
    pub fields: BTreeMap<String, (Value, Stamp)>,
}

impl RowState {
    /// Fold one change in. Returns whether the state changed (false when the
    /// change lost on every field, or was already applied).
    pub fn apply(&mut self, op: Op, payload: &Value, stamp: &Stamp) -> bool {
        match op {
            Op::Delete => self.apply_delete(stamp),
            Op::Insert | Op::Update => {
                let mut changed = false;
                if op == Op::Insert
                    && self
                        .inserted
                        .as_ref()
                        .is_none_or(|i| newer(stamp, i, WRITE))
                {
                    self.inserted = Some(stamp.clone());
                    changed = true;
                }
                if let Some(obj) = payload.as_object() {
                    for (k, v) in obj {
                        changed |= self.write_field(k, v, stamp);
                    }
                }
                changed
            }
        }
    }

    fn apply_delete(&mut self, stamp: &Stamp) -> bool {
        if self
            .tombstone
            .as_ref()
            .is_some_and(|t| !newer(stamp, t, DELETE))
        {
            return false;
        }
        self.fields.retain(|_, (_, s)| write_beats_delete(s, stamp));
        self.tombstone = Some(stamp.clone());
        true
    }

    fn write_field(&mut self, name: &str, value: &Value, stamp: &Stamp) -> bool {
        if self
            .tombstone
            .as_ref()
            .is_some_and(|t| !write_beats_delete(stamp, t))
        {
            return false;
        }
        match self.fields.get_mut(name) {
            Some((v, s)) if newer(stamp, s, WRITE) => {
                *v = value.clone();
                *s = stamp.clone();
                true
            }
            Some(_) => false,
            None => {
                self.fields
                    .insert(name.to_owned(), (value.clone(), stamp.clone()));
                true
            }
        }
    }

    /// Join another replica's state of the same row into this one.
    pub fn merge(&mut self, other: &RowState) {
        if let Some(t) = &other.tombstone {
            self.apply_delete(t);
        }
        if let Some(i) = &other.inserted
            && self
                .inserted
                .as_ref()
                .is_none_or(|mine| newer(i, mine, WRITE))
        {
            {
                self.inserted = Some(i.clone());
            }
        }
        for (k, (v, s)) in &other.fields {
            self.write_field(k, v, s);
        }
    }

    /// Whether the row exists: its latest insert orders after its tombstone.
    pub fn is_live(&self) -> bool {
        match (&self.inserted, &self.tombstone) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(i), Some(t)) => write_beats_delete(i, t),
        }
    }

    /// The row's current fields.
    pub fn value(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect::<Map<_, _>>(),
        )
    }

    /// The stamps as JSON (`{"t": stamp?, "i": stamp?, "f": {field: stamp}}`,
    /// a stamp being `[clock, actor, op_id]`): the `clocks` of a snapshot row.
    pub fn clocks_json(&self) -> Value {
        let fields: Map<String, Value> = self
            .fields
            .iter()
            .map(|(k, (_, s))| (k.clone(), s.to_json()))
            .collect();
        json!({
            "t": self.tombstone.as_ref().map(Stamp::to_json),
            "i": self.inserted.as_ref().map(Stamp::to_json),
            "f": fields,
        })
    }

    /// [`Self::value`] as JSON text, written without building a `Value`
    /// (the server stores it for every row a push touches).
    pub fn value_text(&self) -> String {
        serde_json::to_string(&FieldValues(&self.fields)).unwrap_or_default()
    }

    /// [`Self::clocks_json`] as JSON text, written without building a `Value`.
    pub fn clocks_text(&self) -> String {
        serde_json::to_string(&Clocks(self)).unwrap_or_default()
    }

    /// Rebuild a state from a row's value and its [`Self::clocks_json`].
    /// Returns `None` when the two do not fit together.
    pub fn from_parts(value: &Value, clocks: &Value) -> Option<Self> {
        let stamp = |k: &str| match clocks.get(k) {
            None | Some(Value::Null) => Some(None),
            Some(v) => Stamp::from_json(v).map(Some),
        };
        let mut state = RowState {
            tombstone: stamp("t")?,
            inserted: stamp("i")?,
            fields: BTreeMap::new(),
        };
        let stamps = clocks.get("f")?.as_object()?;
        for (k, v) in value.as_object()? {
            let s = Stamp::from_json(stamps.get(k)?)?;
            state.fields.insert(k.clone(), (v.clone(), s));
        }
        Some(state)
    }
}

impl serde::Serialize for Stamp {
    /// `[clock, actor, op_id]`, as in [`RowState::clocks_json`].
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.clock, &self.actor, &self.op_id).serialize(serializer)
    }
}

/// A row's live fields, serialized as [`RowState::value`].
struct FieldValues<'a>(&'a BTreeMap<String, (Value, Stamp)>);

impl serde::Serialize for FieldValues<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, (v, _))| (k, v)))
    }
}

/// A row's field stamps, serialized as the `f` of [`RowState::clocks_json`].
struct FieldStamps<'a>(&'a BTreeMap<String, (Value, Stamp)>);

impl serde::Serialize for FieldStamps<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, (_, stamp))| (k, stamp)))
    }
}

/// A row's stamps, serialized as [`RowState::clocks_json`].
struct Clocks<'a>(&'a RowState);

impl serde::Serialize for Clocks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // The keys in the order of `clocks_json`'s map (sorted).
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("f", &FieldStamps(&self.0.fields))?;
        map.serialize_entry("i", &self.0.inserted)?;
        map.serialize_entry("t", &self.0.tombstone)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ms: i64, actor: &str, op: &str) -> Stamp {
        Stamp::new(Hlc::new(ms, 0), actor, op)
    }

    // The convergence cases (every arrival and merge order) are the shared
    // vectors in `core/tests/conflict_vectors.json`, which the browser
    // client's tests read too.

    #[test]
    fn replays_change_nothing_and_states_roundtrip() {
        let mut s = RowState::default();
        let stamp = st(1, "x", "o1");
        assert!(s.apply(Op::Insert, &json!({"a": 1}), &stamp));
        assert!(!s.apply(Op::Insert, &json!({"a": 1}), &stamp));
        s.apply(Op::Delete, &Value::Null, &st(2, "x", "o2"));
        s.apply(Op::Update, &json!({"b": [1, 2]}), &st(3, "y", "o3"));
        let back = RowState::from_parts(&s.value(), &s.clocks_json()).unwrap();
        assert_eq!(back, s);
        // The texts are those of the values.
        assert_eq!(s.value_text(), s.value().to_string());
        assert_eq!(s.clocks_text(), s.clocks_json().to_string());
        let empty = RowState::default();
        assert_eq!(empty.clocks_text(), empty.clocks_json().to_string());
        assert_eq!(empty.value_text(), "{}");
        let mut merged = RowState::default();
        merged.merge(&s);
        assert_eq!(merged, s);
    }
}
