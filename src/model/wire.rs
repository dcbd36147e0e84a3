//! Per-model wire serializers (the seed's "wire normalization"): a model's
//! payloads are decoded from the form clients send into the form the engine
//! stores and merges, and encoded back on every path to a reader (pull,
//! long-poll, snapshot, the WebSocket's catch-up and live frames).
//!
//! Both directions work field by field on a JSON object, whole (an insert,
//! a snapshot) or partial (an update's changed fields), because the merge
//! is per field. Hooks (`can_write`, `on_write`, `can_read`) and the
//! application's own reads and writes see the stored form.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Converts one model's payloads between the wire and the stored form.
///
/// ```
/// use better_sync::WireSerializer;
/// use serde_json::{Map, Value};
///
/// /// Clients (built when the field was `name`) send and see `name`; the
/// /// app's type calls it `title`.
/// struct NameIsTitle;
///
/// impl WireSerializer for NameIsTitle {
///     fn decode(&self, mut fields: Map<String, Value>) -> Result<Map<String, Value>, String> {
///         if fields.contains_key("title") {
///             return Err("send `name`, not `title`".into());
///         }
///         if let Some(v) = fields.remove("name") {
///             fields.insert("title".into(), v);
///         }
///         Ok(fields)
///     }
///
///     fn encode(&self, mut fields: Map<String, Value>) -> Map<String, Value> {
///         if let Some(v) = fields.remove("title") {
///             fields.insert("name".into(), v);
///         }
///         fields
///     }
/// }
/// /// ```
pub trait WireSerializer: Send + Sync + 'static {
    /// From what a client sent to what is stored; `Err` refuses the change
    /// (`422 SYNC:SCHEMA_VIOLATION`, the reason in `meta.reason`).
    fn decode(&self, fields: Map<String, Value>) -> Result<Map<String, Value>, String>;

    /// From what is stored to what readers receive.
    fn encode(&self, fields: Map<String, Value>) -> Map<String, Value>;
}

/// The serializers of an engine's models, and the global switch.
#[derive(Clone, Default)]
pub(crate) struct WireCodecs {
    by_model: BTreeMap<String, Arc<dyn WireSerializer>>,
    /// Off: no serializer runs; payloads pass as stored.
    off: bool,
}

impl std::fmt::Debug for WireCodecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireCodecs")
            .field("models", &self.by_model.keys().collect::<Vec<_>>())
            .field("off", &self.off)
            .finish()
    }
}

impl WireCodecs {
    pub(crate) fn insert(&mut self, model: String, codec: Arc<dyn WireSerializer>) {
        self.by_model.insert(model, codec);
    }

    pub(crate) fn set_normalize(&mut self, on: bool) {
        self.off = !on;
    }

    /// The serializer of `model`, if one runs.
    pub(crate) fn of(&self, model: &str) -> Option<&dyn WireSerializer> {
        if self.off {
            return None;
        }
        self.by_model.get(model).map(|c| c.as_ref())
    }

    /// Decode a client's payload of `model` in place.
    pub(crate) fn decode(&self, model: &str, payload: &mut Value) -> Result<(), String> {
        if let (Some(c), Value::Object(fields)) = (self.of(model), &mut *payload) {
            *fields = c.decode(std::mem::take(fields))?;
        }
        Ok(())
    }

    /// Encode a stored payload of `model` in place.
    pub(crate) fn encode(&self, model: &str, payload: &mut Value) {
        if let (Some(c), Value::Object(fields)) = (self.of(model), &mut *payload) {
            *fields = c.encode(std::mem::take(fields));
        }
    }

    /// Encode a snapshot row of `model` in place: its value, and the keys of
    /// its per-field clocks (`f`), so that a client joins the row's fields
    /// with their stamps under the names it sees. Each field is encoded on
    /// its own (serializers work field by field) and its stamp goes to
    /// every field its encoding gives.
    pub(crate) fn encode_row(&self, model: &str, value: &mut Value, clocks: &mut Value) {
        let (Some(c), Value::Object(fields)) = (self.of(model), &mut *value) else {
            return;
        };
        let stamps = clocks
            .get_mut("f")
            .and_then(Value::as_object_mut)
            .map(std::mem::take);
        let mut out = Map::new();
        let mut out_stamps = Map::new();
        for (name, v) in std::mem::take(fields) {
            let stamp = stamps.as_ref().and_then(|s| s.get(&name)).cloned();
            for (k, v) in c.encode(Map::from_iter([(name, v)])) {
                if let Some(stamp) = &stamp {
                    out_stamps.insert(k.clone(), stamp.clone());
                }
                out.insert(k, v);
            }
        }
        *fields = out;
        if let Some(f) = clocks.get_mut("f") {
            *f = Value::Object(out_stamps);
        }
    }

    /// [`WireCodecs::encode_row`] on stored JSON texts: the texts
    /// themselves when no serializer runs for `model`.
    pub(crate) fn encode_row_text(
        &self,
        model: &str,
        value: String,
        clocks: String,
    ) -> (String, String) {
        if self.of(model).is_none() {
            return (value, clocks);
        }
        let (Ok(mut v), Ok(mut c)) = (
            serde_json::from_str::<Value>(&value),
            serde_json::from_str::<Value>(&clocks),
        ) else {
            return (value, clocks);
        };
        self.encode_row(model, &mut v, &mut c);
        (
            serde_json::to_string(&v).unwrap_or(value),
            serde_json::to_string(&c).unwrap_or(clocks),
        )
    }

    /// Encode stored JSON text of `model`: the text itself when no
    /// serializer runs for it (or it is not an object).
    pub(crate) fn encode_text(&self, model: &str, text: String) -> String {
        let Some(c) = self.of(model) else {
            return text;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(fields)) => {
                serde_json::to_string(&Value::Object(c.encode(fields))).unwrap_or(text)
            }
            _ => text,
        }
    }
}

/// A [`WireSerializer`] made of two closures.
pub(crate) struct FnSerializer<D, E> {
    pub(crate) decode: D,
    pub(crate) encode: E,
}

impl<D, E> WireSerializer for FnSerializer<D, E>
where
    D: Fn(Map<String, Value>) -> Result<Map<String, Value>, String> + Send + Sync + 'static,
    E: Fn(Map<String, Value>) -> Map<String, Value> + Send + Sync + 'static,
{
    fn decode(&self, fields: Map<String, Value>) -> Result<Map<String, Value>, String> {
        (self.decode)(fields)
    }

    fn encode(&self, fields: Map<String, Value>) -> Map<String, Value> {
        (self.encode)(fields)
    }
}
