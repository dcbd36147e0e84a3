//! The server's checks that a client can make itself.

use better_sync_core::protocol::{self, Op};
use serde_json::Value;

use crate::change::Change;
use crate::error::{ClientError, codes};

/// The server's checks (section 5.2 of the protocol) that a client can make
/// itself, so that a bad change fails here rather than after it was queued.
pub(crate) fn validate(
    model: &str,
    change: &Change,
    models: Option<&[String]>,
    max_payload_bytes: usize,
) -> Result<(), ClientError> {
    if !protocol::is_valid_model_name(model) {
        return Err(ClientError::invalid_change(
            "model",
            format!("model {model:?} must be 1 to 64 bytes of A-Za-z0-9_-"),
        ));
    }
    if let Some(models) = models
        && !models.iter().any(|m| m == model)
    {
        return Err(ClientError::new(
            codes::UNKNOWN_MODEL,
            format!("model {model:?} is not one of the client's models {models:?}"),
        ));
    }
    let id = &change.id;
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(ClientError::invalid_change(
            "pk",
            "the id must be 1 to 255 bytes without control characters",
        ));
    }
    match (change.op, &change.payload) {
        (Op::Insert, Value::Object(_)) | (Op::Delete, _) => {}
        (Op::Update, Value::Object(o)) if !o.is_empty() => {}
        (Op::Insert, _) => {
            return Err(ClientError::invalid_change(
                "payload",
                "an insert needs the row as an object",
            ));
        }
        (Op::Update, _) => {
            return Err(ClientError::invalid_change(
                "payload",
                "an update needs a non-empty object of changed fields",
            ));
        }
    }
    if change.op == Op::Delete {
        return Ok(());
    }
    if let Some(pid) = change.payload.get("id") {
        let same = match pid {
            Value::String(s) => s == id,
            Value::Number(n) => n.to_string() == *id,
            _ => false,
        };
        if !same {
            return Err(ClientError::invalid_change(
                "payload",
                format!("payload.id {pid} differs from the id {id:?}"),
            ));
        }
    }
    if protocol::payload_depth(&change.payload) > 32 {
        return Err(ClientError::new(
            "SYNC:PAYLOAD_TOO_DEEP",
            "the payload nests deeper than 32 levels",
        ));
    }
    let bytes = serde_json::to_vec(&change.payload)
        .map_err(|e| ClientError::invalid_change("payload", e))?
        .len();
    if bytes > max_payload_bytes {
        return Err(ClientError::new(
            "SYNC:CHANGE_TOO_LARGE",
            format!("the payload is {bytes} bytes, more than the server's {max_payload_bytes}"),
        ));
    }
    Ok(())
}
