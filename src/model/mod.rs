//! Typed models: a model's JSON Schema, made from its Rust type, and the
//! check of each change's payload against it (an insert as the whole type,
//! an update as a part of it).
//!
//! The schema is generated once, when the engine is built, by `schemars`
//! (inlined, so that it stands alone in `sync.json` and `openapi.json`), and
//! compiled once into two `jsonschema` validators. A model's version and
//! upgrades are in `versions.rs`, its wire serializer in `wire.rs`.

mod typescript;
mod versions;
mod wire;

pub(crate) use self::typescript::declarations as typescript_declarations;
pub use self::versions::UpgradeFn;
pub(crate) use self::versions::{ClientVersions, ModelVersions, VERSIONS_HEADER, VersionedModel};
pub(crate) use self::wire::WireCodecs;
pub use self::wire::WireSerializer;

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use better_sync_core::protocol::Op;

/// How a model checks payloads (typed models), its schema version and the
/// upgrades of older clients' payloads, and its wire serializer.
///
/// ```
/// use better_sync::ModelOptions;
/// use serde_json::Value;
///
/// // Version 2 renamed `name` to `title`; clients built for 1 still push.
/// let options = ModelOptions::default().version(2).upgrade(1, |_op, mut fields| {
///     if let Some(name) = fields.remove("name") {
///         fields.insert("title".into(), name);
///     }
///     Ok(fields)
/// });
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ModelOptions {
    /// Accept fields the type does not declare (default: refuse them).
    pub allow_unknown_fields: bool,
    /// Fields of the type that clients neither send nor see in the schema:
    /// the server fills them (e.g. the tenant column of a materialized
    /// table, see [`crate::Materialize::tenant_field`]).
    pub omitted_fields: Vec<String>,
    version: Option<u32>,
    upgrades: BTreeMap<u32, Arc<UpgradeFn>>,
    wire: Option<Arc<dyn WireSerializer>>,
}

impl std::fmt::Debug for ModelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelOptions")
            .field("allow_unknown_fields", &self.allow_unknown_fields)
            .field("omitted_fields", &self.omitted_fields)
            .field("version", &self.version)
            .field("upgrades_from", &self.upgrades.keys().collect::<Vec<_>>())
            .field("wire", &self.wire.is_some())
            .finish()
    }
}

impl ModelOptions {
    /// The model's schema version (default 1). `sync.json` lists it;
    /// clients announce the versions they were built for, and a client
    /// newer than the server, or older than its upgrades reach, is refused
    /// with `409 SYNC:VERSION_UNSUPPORTED`.
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version.max(1));
        self
    }

    /// Upgrade payloads from version `from` to `from + 1`: a client built
    /// for `from` is served, and each change it pushes goes through every
    /// upgrade up to the current version before it is decoded and checked.
    /// An upgrade sees the op and the payload (the whole row of an insert,
    /// the changed fields of an update); its `Err` refuses the change with
    /// `422 SYNC:SCHEMA_VIOLATION`. Readers always receive the current form,
    /// so upgrades should keep what old clients read meaningful (add and
    /// rename fields; do not change a field's meaning).
    pub fn upgrade<F>(mut self, from: u32, f: F) -> Self
    where
        F: Fn(Op, Map<String, Value>) -> Result<Map<String, Value>, String> + Send + Sync + 'static,
    {
        self.upgrades.insert(from, Arc::new(f));
        self
    }

    /// The model's wire serializer: payloads decoded from what clients send
    /// into what is stored, and encoded back for every reader. See
    /// [`WireSerializer`].
    pub fn serializer(mut self, serializer: impl WireSerializer) -> Self {
        self.wire = Some(Arc::new(serializer));
        self
    }

    /// [`ModelOptions::serializer`] from two closures.
    pub fn wire<D, E>(self, decode: D, encode: E) -> Self
    where
        D: Fn(Map<String, Value>) -> Result<Map<String, Value>, String> + Send + Sync + 'static,
        E: Fn(Map<String, Value>) -> Map<String, Value> + Send + Sync + 'static,
    {
        self.serializer(wire::FnSerializer { decode, encode })
    }

    /// The version and upgrades, when the model declares any.
    pub(crate) fn versioned(&self) -> Option<VersionedModel> {
        (self.version.is_some() || !self.upgrades.is_empty()).then(|| VersionedModel {
            current: self.version.unwrap_or(1),
            upgrades: self.upgrades.clone(),
        })
    }

    /// Why the options cannot work, if they cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        let current = self.version.unwrap_or(1);
        self.upgrades
            .keys()
            .find(|from| **from >= current || **from == 0)
            .map(|from| {
                format!("an upgrade from version {from} leads past the current version {current}")
            })
    }

    pub(crate) fn serializer_arc(&self) -> Option<Arc<dyn WireSerializer>> {
        self.wire.clone()
    }

    /// Accept fields the type does not declare.
    pub fn allow_unknown_fields(mut self) -> Self {
        self.allow_unknown_fields = true;
        self
    }

    /// Leave `field` out of the model's schema: clients do not send it (a
    /// payload that has it is refused unless unknown fields are allowed)
    /// and the server fills it, e.g. the tenant of a materialized table.
    pub fn omit_field(mut self, field: impl Into<String>) -> Self {
        self.omitted_fields.push(field.into());
        self
    }
}

/// Why a payload does not fit its model: where (a JSON pointer into the
/// payload, `""` for the payload itself) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaViolation {
    pub(crate) path: String,
    pub(crate) reason: String,
}

/// One typed model: its schemas, and the validators made from them.
pub(crate) struct TypedModel {
    /// The type's JSON Schema (draft 2020-12), as `sync.json` shows it.
    pub(crate) schema: Value,
    /// The same in OpenAPI 3.0's dialect, for `openapi.json`.
    pub(crate) openapi: Value,
    insert: jsonschema::Validator,
    update: jsonschema::Validator,
}

impl std::fmt::Debug for TypedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedModel")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A schema with every subschema inlined (`$ref`s resolved in place), so
/// that it stands alone.
fn inlined(settings: SchemaSettings) -> SchemaSettings {
    settings.with(|s| s.inline_subschemas = true)
}

impl TypedModel {
    /// The model of `T`; `Err` says why its schema cannot check payloads
    /// (it does not describe a JSON object, or does not compile).
    pub(crate) fn of<T: JsonSchema>(options: &ModelOptions) -> Result<Self, String> {
        let schema: Value = inlined(SchemaSettings::draft2020_12())
            .into_generator()
            .into_root_schema_for::<T>()
            .into();
        let mut openapi: Value = inlined(SchemaSettings::openapi3())
            .into_generator()
            .into_root_schema_for::<T>()
            .into();
        // A Schema Object of OpenAPI 3.0 has no `$schema`.
        if let Some(o) = openapi.as_object_mut() {
            o.remove("$schema");
            for field in &options.omitted_fields {
                if let Some(Value::Object(p)) = o.get_mut("properties") {
                    p.remove(field);
                }
                if let Some(Value::Array(required)) = o.get_mut("required") {
                    required.retain(|r| r.as_str() != Some(field));
                }
            }
        }
        let mut insert = schema.clone();
        let object = insert
            .as_object_mut()
            .filter(|o| o.get("type").and_then(Value::as_str) == Some("object"))
            .ok_or("the type's schema is not a JSON object (a struct with named fields)")?;
        for field in &options.omitted_fields {
            let declared = object
                .get_mut("properties")
                .and_then(Value::as_object_mut)
                .and_then(|p| p.remove(field))
                .is_some();
            if !declared {
                return Err(format!("omit_field: the type has no field {field:?}"));
            }
            if let Some(Value::Array(required)) = object.get_mut("required") {
                required.retain(|r| r.as_str() != Some(field));
            }
        }
        if !options.allow_unknown_fields {
            object
                .entry("additionalProperties")
                .or_insert(Value::Bool(false));
        }
        // An update carries the fields it changes: any of them, at least one.
        let mut update = insert.clone();
        if let Some(o) = update.as_object_mut() {
            o.remove("required");
            o.insert("minProperties".into(), Value::from(1));
        }
        let compile = |s: &Value| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(s)
                .map_err(|e| format!("the type's schema does not compile: {e}"))
        };
        Ok(Self {
            insert: compile(&insert)?,
            update: compile(&update)?,
            schema: insert,
            openapi,
        })
    }

    /// Check a change's payload: an insert's as the whole type, an
    /// update's as a part of it; a delete has none.
    pub(crate) fn check(&self, op: Op, payload: &Value) -> Result<(), SchemaViolation> {
        let validator = match op {
            Op::Insert => &self.insert,
            Op::Update => &self.update,
            Op::Delete => return Ok(()),
        };
        match validator.iter_errors(payload).next() {
            None => Ok(()),
            Some(e) => Err(SchemaViolation {
                path: e.instance_path.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

/// The typed models of an engine, by name.
#[derive(Debug, Default)]
pub(crate) struct TypedModels(BTreeMap<String, TypedModel>);

impl TypedModels {
    pub(crate) fn insert(&mut self, name: String, model: TypedModel) {
        self.0.insert(name, model);
    }

    pub(crate) fn get(&self, name: &str) -> Option<&TypedModel> {
        self.0.get(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every model's schema by name, in `sync.json`'s form (`None`: no
    /// typed model).
    pub(crate) fn schemas(&self) -> Option<Value> {
        (!self.0.is_empty()).then(|| {
            Value::Object(
                self.0
                    .iter()
                    .map(|(name, m)| (name.clone(), m.schema.clone()))
                    .collect::<Map<_, _>>(),
            )
        })
    }

    /// Every model's OpenAPI schema, keyed `Model.<name>` for
    /// `components.schemas`.
    pub(crate) fn openapi(&self) -> impl Iterator<Item = (String, Value)> + '_ {
        self.0
            .iter()
            .map(|(name, m)| (format!("Model.{name}"), m.openapi.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(schemars::JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Todo {
        id: String,
        title: String,
        done: bool,
        tags: Option<Vec<String>>,
    }

    #[test]
    fn inserts_are_whole_and_updates_partial() {
        let m = TypedModel::of::<Todo>(&ModelOptions::default()).expect("model");
        let ok = json!({"id": "1", "title": "t", "done": false});
        assert_eq!(m.check(Op::Insert, &ok), Ok(()));
        let missing = m.check(Op::Insert, &json!({"id": "1", "done": false}));
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.path.is_empty() && e.reason.contains("title")),
            "{missing:?}"
        );
        let wrong = m
            .check(Op::Update, &json!({"done": "yes"}))
            .expect_err("type");
        assert_eq!(wrong.path, "/done");
        let unknown = m
            .check(Op::Update, &json!({"colour": "red"}))
            .expect_err("unknown");
        assert!(unknown.reason.contains("colour"), "{unknown:?}");
        assert_eq!(m.check(Op::Update, &json!({"tags": null})), Ok(()));
        assert!(
            m.check(Op::Update, &json!({"tags": [1]}))
                .is_err_and(|e| e.path == "/tags/0")
        );
        assert_eq!(m.check(Op::Delete, &Value::Null), Ok(()));
        let open =
            TypedModel::of::<Todo>(&ModelOptions::default().allow_unknown_fields()).expect("model");
        assert_eq!(open.check(Op::Update, &json!({"colour": "red"})), Ok(()));
    }

    #[test]
    fn omitted_fields_are_not_in_the_schema_and_not_accepted() {
        let m = TypedModel::of::<Todo>(&ModelOptions::default().omit_field("done")).expect("model");
        assert_eq!(
            m.check(Op::Insert, &json!({"id": "1", "title": "t"})),
            Ok(())
        );
        assert!(m.check(Op::Update, &json!({"done": true})).is_err());
        assert!(m.schema["properties"].get("done").is_none());
        assert!(m.openapi["properties"].get("done").is_none());
        assert!(TypedModel::of::<Todo>(&ModelOptions::default().omit_field("colour")).is_err());
    }

    #[test]
    fn a_type_that_is_not_an_object_is_refused() {
        assert!(TypedModel::of::<String>(&ModelOptions::default()).is_err());
    }
}
