//! TypeScript declarations of the models (`GET B/models.d.ts`), made from
//! the typed models' JSON Schemas, for the browser client's rows.
//!
//! It covers what `schemars` generates for serde types (objects, optional
//! and nullable fields, arrays, maps, tuples, string and number enums,
//! `anyOf` / `oneOf` unions, inlined subschemas); anything else becomes
//! `unknown` rather than a wrong type. Hand-rolled because the crates that
//! convert JSON Schema to TypeScript are Node tools, not Rust libraries.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::{Map, Value};

/// The declarations file: one interface per typed model, `Record<string,
/// unknown>` for untyped ones, a `Models` map and the model versions.
pub(crate) fn declarations<'a>(
    models: impl IntoIterator<Item = &'a str>,
    schema_of: impl Fn(&str) -> Option<&'a Value>,
    version_of: impl Fn(&str) -> u32,
) -> String {
    let mut out = String::from(
        "// The models of this better-sync server, generated from their JSON Schemas\n\
         // (GET <base>/models.d.ts). Rows arrive in this form; the client adds nothing.\n\n",
    );
    let mut names = Vec::new();
    let mut taken = BTreeSet::new();
    for model in models {
        let mut name = type_name(model);
        while !taken.insert(name.clone()) {
            name.push('_');
        }
        match schema_of(model) {
            Some(schema) => {
                let _ = writeln!(out, "/** Rows of model `{model}`. */");
                match object_body(schema, 0) {
                    Some(body) => {
                        let _ = writeln!(out, "export interface {name} {body}\n");
                    }
                    None => {
                        let _ = writeln!(out, "export type {name} = {};\n", ts_type(schema, 0));
                    }
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "/** Rows of model `{model}` (untyped). */\nexport type {name} = Record<string, unknown>;\n"
                );
            }
        }
        names.push((model.to_owned(), name));
    }
    out.push_str("/** Every model by name. */\nexport interface Models {\n");
    for (model, name) in &names {
        let _ = writeln!(out, "  {}: {name};", property_name(model));
    }
    out.push_str(
        "}\n\n/** The schema version of each model, for the client's `versions` option. */\n",
    );
    out.push_str("export declare const modelVersions: {\n");
    for (model, _) in &names {
        let _ = writeln!(
            out,
            "  readonly {}: {};",
            property_name(model),
            version_of(model)
        );
    }
    out.push_str("};\n");
    out
}

/// `todo_item-2` -> `TodoItem2`.
fn type_name(model: &str) -> String {
    let mut out = String::new();
    for part in model.split(['_', '-']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'M');
    }
    out
}

/// A property key: bare when it is an identifier, quoted otherwise.
fn property_name(name: &str) -> String {
    let ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        name.to_owned()
    } else {
        Value::String(name.to_owned()).to_string()
    }
}

fn indent(depth: usize) -> String {
    "  ".repeat(depth)
}

/// `{ a: string; b?: number }` for an object schema with properties.
fn object_body(schema: &Value, depth: usize) -> Option<String> {
    let o = schema.as_object()?;
    let props = o.get("properties")?.as_object()?;
    let required: BTreeSet<&str> = o
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("{\n");
    for (name, prop) in props {
        if let Some(doc) = prop.get("description").and_then(Value::as_str) {
            let _ = writeln!(
                out,
                "{}/** {} */",
                indent(depth + 1),
                doc.replace("*/", "* /")
            );
        }
        let optional = if required.contains(name.as_str()) {
            ""
        } else {
            "?"
        };
        let _ = writeln!(
            out,
            "{}{}{optional}: {};",
            indent(depth + 1),
            property_name(name),
            ts_type(prop, depth + 1)
        );
    }
    if let Some(extra) = o.get("additionalProperties").filter(|v| v.is_object()) {
        let _ = writeln!(
            out,
            "{}[key: string]: {};",
            indent(depth + 1),
            ts_type(extra, depth + 1)
        );
    } else if o.get("additionalProperties") != Some(&Value::Bool(false)) && depth > 0 {
        let _ = writeln!(out, "{}[key: string]: unknown;", indent(depth + 1));
    }
    out.push_str(&indent(depth));
    out.push('}');
    Some(out)
}

fn union(types: Vec<String>) -> String {
    let mut seen = Vec::new();
    for t in types {
        if !seen.contains(&t) {
            seen.push(t);
        }
    }
    match seen.len() {
        0 => "never".into(),
        1 => seen.remove(0),
        // A union inside a union needs no parentheses, and `&` binds
        // tighter than `|`; arrays of unions are written `Array<..>`.
        _ => seen.join(" | "),
    }
}

fn literal(v: &Value) -> String {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => v.to_string(),
        _ => "unknown".into(),
    }
}

/// The TypeScript type of a schema.
fn ts_type(schema: &Value, depth: usize) -> String {
    let o = match schema {
        Value::Bool(true) => return "unknown".into(),
        Value::Bool(false) => return "never".into(),
        Value::Object(o) => o,
        _ => return "unknown".into(),
    };
    if let Some(c) = o.get("const") {
        return literal(c);
    }
    if let Some(Value::Array(options)) = o.get("enum") {
        return union(options.iter().map(literal).collect());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = o.get(key) {
            return union(options.iter().map(|s| ts_type(s, depth)).collect());
        }
    }
    if let Some(Value::Array(all)) = o.get("allOf") {
        let parts: Vec<String> = all.iter().map(|s| ts_type(s, depth)).collect();
        return parts.join(" & ");
    }
    match o.get("type") {
        Some(Value::Array(types)) => union(
            types
                .iter()
                .map(|t| single_type(t.as_str().unwrap_or(""), o, depth))
                .collect(),
        ),
        Some(Value::String(t)) => single_type(t, o, depth),
        _ if o.contains_key("properties") => single_type("object", o, depth),
        _ => "unknown".into(),
    }
}

fn single_type(t: &str, o: &Map<String, Value>, depth: usize) -> String {
    match t {
        "string" => "string".into(),
        "integer" | "number" => "number".into(),
        "boolean" => "boolean".into(),
        "null" => "null".into(),
        "array" => {
            if let Some(Value::Array(items)) = o.get("prefixItems") {
                let parts: Vec<String> = items.iter().map(|s| ts_type(s, depth)).collect();
                return format!("[{}]", parts.join(", "));
            }
            let item = o
                .get("items")
                .map_or_else(|| "unknown".into(), |s| ts_type(s, depth));
            if item.contains(' ') {
                format!("Array<{item}>")
            } else {
                format!("{item}[]")
            }
        }
        "object" => {
            let schema = Value::Object(o.clone());
            if let Some(body) = object_body(&schema, depth) {
                return body;
            }
            match o.get("additionalProperties") {
                Some(v @ Value::Object(_)) => format!("Record<string, {}>", ts_type(v, depth)),
                _ => "Record<string, unknown>".into(),
            }
        }
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemars_shapes_become_typescript() {
        let todo = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "title", "done", "tags"],
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string", "description": "What to do."},
                "done": {"type": "boolean"},
                "due": {"type": ["string", "null"]},
                "priority": {"type": "integer", "format": "int64"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "state": {"enum": ["open", "closed"]},
                "meta": {"type": "object", "additionalProperties": {"type": "number"}},
                "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
                "either": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["integer", "null"]}}]},
                "with space": {"const": 1}
            }
        });
        let d = declarations(
            ["todo", "note-item"],
            |m| (m == "todo").then_some(&todo),
            |m| if m == "todo" { 2 } else { 1 },
        );
        for line in [
            "export interface Todo {",
            "  id: string;",
            "  /** What to do. */",
            "  due?: string | null;",
            "  priority?: number;",
            "  tags: string[];",
            "  state?: \"open\" | \"closed\";",
            "  meta?: Record<string, number>;",
            "  pair?: [string, number];",
            "  either?: string | Array<number | null>;",
            "  \"with space\"?: 1;",
            "export type NoteItem = Record<string, unknown>;",
            "  todo: Todo;",
            "  \"note-item\": NoteItem;",
            "  readonly todo: 2;",
        ] {
            assert!(d.contains(line), "missing {line:?} in\n{d}");
        }
    }

    #[test]
    fn names_are_identifiers_and_unique() {
        assert_eq!(type_name("todo_item-2"), "TodoItem2");
        assert_eq!(type_name("2fa"), "M2fa");
        let d = declarations(["a_b", "a-b"], |_| None, |_| 1);
        assert!(
            d.contains("export type AB =") && d.contains("export type AB_ ="),
            "{d}"
        );
    }
}
