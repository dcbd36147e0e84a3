//! The checks of one change of a push, in the documented order
//! (PROTOCOL.md 5.2): ids, model, actor, clock, payload shape, size and
//! depth, then `can_write`.

use serde_json::Value;

use super::Engine;
use crate::auth::Ctx;
use crate::error::{ErrorCode, SyncError};
use crate::limits::{MAX_ACTOR, MAX_OP_ID, MAX_PK};
use crate::write::ValidChange;
use better_sync_core::hlc::Hlc;
use better_sync_core::protocol::{
    Change, Op, is_valid_model_name as valid_model_name, payload_depth,
};

impl Engine {
    pub(crate) fn validate(
        &self,
        ctx: &Ctx,
        index: usize,
        mut c: Change,
        now: Hlc,
    ) -> Result<ValidChange, SyncError> {
        let limits = &self.limits;
        let meta =
            |field: &str| serde_json::json!({ "index": index, "op_id": c.op_id, "field": field });
        let invalid = |field: &str, msg: String| {
            SyncError::new(
                ErrorCode::InvalidChange,
                format!("changes[{index}].{field}: {msg}"),
            )
            .with_meta(meta(field))
        };
        if c.op_id.is_empty() || c.op_id.len() > MAX_OP_ID || c.op_id.chars().any(char::is_control)
        {
            return Err(invalid(
                "op_id",
                format!("must be 1 to {MAX_OP_ID} bytes without control characters"),
            ));
        }
        if !valid_model_name(&c.model) {
            return Err(invalid("model", "must be a plain identifier".into()));
        }
        if let Some(models) = &self.models
            && !models.contains(&c.model)
        {
            {
                return Err(SyncError::new(
                    ErrorCode::UnknownModel,
                    format!("changes[{index}].model: unknown model {:?}", c.model),
                )
                .with_meta(meta("model")));
            }
        }
        if c.pk.is_empty() || c.pk.len() > MAX_PK || c.pk.chars().any(char::is_control) {
            return Err(invalid(
                "pk",
                format!("must be 1 to {MAX_PK} bytes without control characters"),
            ));
        }
        if c.actor.is_empty() {
            c.actor = ctx.user_id.clone();
        }
        if c.actor.is_empty() || c.actor.len() > MAX_ACTOR || c.actor.chars().any(char::is_control)
        {
            return Err(invalid(
                "actor",
                format!("must be 1 to {MAX_ACTOR} bytes without control characters"),
            ));
        }
        let clock: Hlc =
            c.updated_at
                .parse()
                .map_err(|e: better_sync_core::hlc::HlcParseError| {
                    invalid("updated_at", e.to_string())
                })?;
        let skew = limits.max_clock_skew.as_millis() as i64;
        if clock.millis() > now.millis() + skew {
            return Err(SyncError::new(
                ErrorCode::ClockSkew,
                format!(
                    "changes[{index}].updated_at {} is more than {} ms ahead of the server clock {}",
                    c.updated_at, skew, now
                ),
            )
            .with_meta(meta("updated_at")));
        }
        match (c.op, &c.payload) {
            (Op::Insert, Value::Object(_)) => {}
            (Op::Update, Value::Object(o)) if !o.is_empty() => {}
            (Op::Delete, _) => c.payload = Value::Null,
            (Op::Insert, _) => {
                return Err(invalid(
                    "payload",
                    "an insert needs the row as an object".into(),
                ));
            }
            (Op::Update, _) => {
                return Err(invalid(
                    "payload",
                    "an update needs a non-empty object of changed fields".into(),
                ));
            }
        }
        if let Some(id) = c.payload.get("id") {
            let matches = match id {
                Value::String(s) => *s == c.pk,
                Value::Number(n) => n.to_string() == c.pk,
                _ => false,
            };
            if !matches {
                return Err(invalid("payload", "payload.id differs from pk".into()));
            }
        }
        if payload_depth(&c.payload) > limits.max_payload_depth {
            return Err(SyncError::new(
                ErrorCode::PayloadTooDeep,
                format!(
                    "changes[{index}].payload: nested deeper than {} levels",
                    limits.max_payload_depth
                ),
            )
            .with_meta(meta("payload")));
        }
        let payload_text = serde_json::to_string(&c.payload)
            .map_err(|e| SyncError::internal(format!("payload does not serialize: {e}")))?;
        if payload_text.len() > limits.max_payload_bytes {
            return Err(SyncError::new(
                ErrorCode::ChangeTooLarge,
                format!(
                    "changes[{index}].payload: larger than {} bytes",
                    limits.max_payload_bytes
                ),
            )
            .with_meta(meta("payload")));
        }
        if self
            .can_write
            .as_ref()
            .is_some_and(|f| !f(ctx, &c.model, &c))
        {
            {
                return Err(SyncError::forbidden(format!(
                    "changes[{index}]: not allowed to {} {}/{}",
                    c.op.as_str(),
                    c.model,
                    c.pk
                ))
                .with_meta(meta("pk")));
            }
        }
        Ok(ValidChange {
            updated_at: clock.to_string(),
            clock,
            payload_text,
            change: c,
        })
    }
}
