//! A subscription's parameters, checked against the shape's declarations,
//! and the verified context: what a shape's operands resolve to.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Operand, Shape};
use crate::auth::Ctx;
use crate::error::{ErrorCode, SyncError};

/// The type of a shape's parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamType {
    /// A JSON string.
    String,
    /// A JSON number.
    Number,
    /// A JSON boolean.
    Bool,
}

impl ParamType {
    fn fits(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Number => v.is_number(),
            ParamType::Bool => v.is_boolean(),
        }
    }

    /// The type's name in `sync.json`: `string`, `number` or `boolean`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Bool => "boolean",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Number => "a number",
            ParamType::Bool => "a boolean",
        }
    }
}

/// A shape bound to one subscription: its parameters (checked) and the
/// subscriber's context.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    params: BTreeMap<String, Value>,
    user_id: String,
    tenant_id: String,
    roles: Vec<String>,
}

impl Bound {
    /// Check `params` (a JSON object, or absent when the shape declares
    /// none) against the shape's declarations.
    pub(crate) fn new(shape: &Shape, params: Option<&Value>, ctx: &Ctx) -> Result<Self, SyncError> {
        let bad = |msg: String| {
            SyncError::new(
                ErrorCode::InvalidShapeParams,
                format!("shape {}: {msg}", shape.name),
            )
            .with_meta(serde_json::json!({ "shape": shape.name }))
        };
        let given = match params {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(bad("params must be a JSON object".into())),
        };
        if let Some(unknown) = given.keys().find(|k| !shape.params.contains_key(*k)) {
            return Err(bad(format!("unknown parameter {unknown:?}")));
        }
        let mut out = BTreeMap::new();
        for (name, ty) in &shape.params {
            match given.get(name) {
                None => return Err(bad(format!("parameter {name:?} is missing"))),
                Some(v) if !ty.fits(v) => {
                    return Err(bad(format!(
                        "parameter {name:?} must be {}, not {v}",
                        ty.name()
                    )));
                }
                Some(v) => {
                    out.insert(name.clone(), v.clone());
                }
            }
        }
        Ok(Self {
            params: out,
            user_id: ctx.user_id.clone(),
            tenant_id: ctx.tenant_id.clone(),
            roles: ctx.roles.clone(),
        })
    }

    /// What an operand stands for in this subscription.
    pub(crate) fn value(&self, o: &Operand) -> Value {
        match o {
            Operand::Value(v) => v.clone(),
            // Checked when bound: every declared parameter is present.
            Operand::Param(p) => self.params.get(p).cloned().unwrap_or(Value::Null),
            Operand::UserId => Value::String(self.user_id.clone()),
            Operand::TenantId => Value::String(self.tenant_id.clone()),
        }
    }

    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
