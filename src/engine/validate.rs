//! The checks of one change of a push, in the documented order
//! (PROTOCOL.md 5.2): ids, model, actor, clock, payload shape, size and
//! depth, then `can_write`.

use serde_json::Value;

use super::Engine;
use crate::auth::Ctx;
use crate::error::{ErrorCode, SyncError};
use crate::limits::{MAX_ACTOR, MAX_OP_ID, MAX_PK};
use crate::write::ValidChange;
use better_sync_core::hlc::{Hlc, HlcParseError};
use better_sync_core::protocol::{
    Change, Op, is_valid_model_name as valid_model_name, payload_depth,
};

impl Engine {
    /// Check one change of a push (the `index`-th) and canonicalise it: the
    /// clock parsed, the actor defaulted to the user, the payload decoded
    /// from the wire form (when `from_wire`: the model's serializer) and its
    /// text to store. Each failure names the field in `meta`.
    pub(crate) fn validate(
        &self,
        ctx: &Ctx,
        index: usize,
        mut c: Change,
        now: Hlc,
        from_wire: bool,
    ) -> Result<ValidChange, SyncError> {
        // Borrows the op id: the other fields are still checked and changed.
        let at = At {
            index,
            op_id: &c.op_id,
        };
        key_text(&at, "op_id", &c.op_id, MAX_OP_ID)?;
        self.check_model(&at, &c.model)?;
        key_text(&at, "pk", &c.pk, MAX_PK)?;
        if c.actor.is_empty() {
            c.actor = ctx.user_id.clone();
        }
        key_text(&at, "actor", &c.actor, MAX_ACTOR)?;
        let clock = self.check_clock(&at, &c.updated_at, now)?;
        payload_shape(&at, c.op, &c.pk, &mut c.payload)?;
        if from_wire && let Err(reason) = self.wire.decode(&c.model, &mut c.payload) {
            return Err(at.schema_violation(&c.model, "payload", reason));
        }
        let payload_text = self.check_payload_size(&at, &c.payload)?;
        if let Some(model) = self.typed.get(&c.model)
            && let Err(v) = model.check(c.op, &c.payload)
        {
            // `field` names the payload path the way the other refusals do
            // (`payload`, `payload.title`, `payload.tags.0`).
            let field = format!("payload{}", v.path.replace('/', "."));
            return Err(at.schema_violation(&c.model, &field, v.reason));
        }
        if self
            .can_write
            .as_ref()
            .is_some_and(|f| !f(ctx, &c.model, &c))
        {
            return Err(SyncError::forbidden(format!(
                "changes[{index}]: not allowed to {} {}/{}",
                c.op.as_str(),
                c.model,
                c.pk
            ))
            .with_meta(at.meta("pk")));
        }
        Ok(ValidChange {
            updated_at: clock.to_string(),
            clock,
            payload_text,
            change: c,
        })
    }

    /// A plain identifier, and a model this engine accepts.
    fn check_model(&self, at: &At, model: &str) -> Result<(), SyncError> {
        if !valid_model_name(model) {
            return Err(at.invalid("model", "must be a plain identifier".into()));
        }
        if self.models.as_ref().is_some_and(|m| !m.contains(model)) {
            return Err(SyncError::new(
                ErrorCode::UnknownModel,
                format!("changes[{}].model: unknown model {model:?}", at.index),
            )
            .with_meta(at.meta("model")));
        }
        Ok(())
    }

    /// A clock that parses and is not too far ahead of the server's.
    fn check_clock(&self, at: &At, text: &str, now: Hlc) -> Result<Hlc, SyncError> {
        let clock: Hlc = text
            .parse()
            .map_err(|e: HlcParseError| at.invalid("updated_at", e.to_string()))?;
        let skew = self.limits.max_clock_skew.as_millis() as i64;
        if clock.millis() > now.millis() + skew {
            return Err(SyncError::new(
                ErrorCode::ClockSkew,
                format!(
                    "changes[{}].updated_at {text} is more than {skew} ms ahead of the server clock {now}",
                    at.index
                ),
            )
            .with_meta(at.meta("updated_at")));
        }
        Ok(clock)
    }

    /// The payload within the depth and size limits; its text to store.
    fn check_payload_size(&self, at: &At, payload: &Value) -> Result<String, SyncError> {
        let limits = &self.limits;
        if payload_depth(payload) > limits.max_payload_depth {
            return Err(SyncError::new(
                ErrorCode::PayloadTooDeep,
                format!(
                    "changes[{}].payload: nested deeper than {} levels",
                    at.index, limits.max_payload_depth
                ),
            )
            .with_meta(at.meta("payload")));
        }
        let text = serde_json::to_string(payload)
            .map_err(|e| SyncError::internal(format!("payload does not serialize: {e}")))?;
        if text.len() > limits.max_payload_bytes {
            return Err(SyncError::new(
                ErrorCode::ChangeTooLarge,
                format!(
                    "changes[{}].payload: larger than {} bytes",
                    at.index, limits.max_payload_bytes
                ),
            )
            .with_meta(at.meta("payload")));
        }
        Ok(text)
    }
}

/// Which change of the batch a check is about, for its error.
pub(crate) struct At<'a> {
    pub(crate) index: usize,
    pub(crate) op_id: &'a str,
}

impl At<'_> {
    fn meta(&self, field: &str) -> Value {
        serde_json::json!({ "index": self.index, "op_id": self.op_id, "field": field })
    }

    /// `422 SYNC:SCHEMA_VIOLATION` at a payload path, with the reason in
    /// `meta.reason`.
    pub(crate) fn schema_violation(&self, model: &str, field: &str, reason: String) -> SyncError {
        let mut meta = self.meta(field);
        let message = format!(
            "changes[{}].{field}: does not fit model {model}: {reason}",
            self.index
        );
        meta["reason"] = Value::String(reason);
        SyncError::new(ErrorCode::SchemaViolation, message).with_meta(meta)
    }

    fn invalid(&self, field: &str, msg: String) -> SyncError {
        SyncError::new(
            ErrorCode::InvalidChange,
            format!("changes[{}].{field}: {msg}", self.index),
        )
        .with_meta(self.meta(field))
    }
}

/// An id the storage keys on: 1 to `max` bytes, no control characters.
fn key_text(at: &At, field: &str, value: &str, max: usize) -> Result<(), SyncError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(at.invalid(
            field,
            format!("must be 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

/// The payload an op needs (a delete's is dropped), and an `id` in it that
/// is the change's `pk`.
fn payload_shape(at: &At, op: Op, pk: &str, payload: &mut Value) -> Result<(), SyncError> {
    match (op, &*payload) {
        (Op::Insert, Value::Object(_)) => {}
        (Op::Update, Value::Object(o)) if !o.is_empty() => {}
        (Op::Delete, _) => *payload = Value::Null,
        (Op::Insert, _) => {
            return Err(at.invalid("payload", "an insert needs the row as an object".into()));
        }
        (Op::Update, _) => {
            return Err(at.invalid(
                "payload",
                "an update needs a non-empty object of changed fields".into(),
            ));
        }
    }
    if let Some(id) = payload.get("id") {
        let matches = match id {
            Value::String(s) => s == pk,
            Value::Number(n) => n.to_string() == pk,
            _ => false,
        };
        if !matches {
            return Err(at.invalid("payload", "payload.id differs from pk".into()));
        }
    }
    Ok(())
}
