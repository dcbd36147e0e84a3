//! The body of `POST B/push`: read straight into its types when well formed,
//! through a checked parse with precise errors otherwise.

use serde_json::Value;

use crate::error::{ErrorCode, SyncError};
use better_sync_core::protocol::{Change, PushRequest};

/// A push body read straight into its types: the common, well-formed case.
#[derive(serde::Deserialize)]
struct TypedPush {
    #[serde(default)]
    client_id: Option<String>,
    changes: Vec<better_sync_core::protocol::Change>,
}

/// Parse a push body. A well-formed one is read straight into its types;
/// anything else is parsed again by [`parse_push_checked`], whose errors
/// say where the problem is, in its order of checks (a streaming parse
/// stops at the first problem it meets, which need not be the one to
/// report), so both accept and refuse exactly the same bodies.
pub(super) fn parse_push(bytes: &[u8], max_batch: usize) -> Result<PushRequest, SyncError> {
    // A derived struct also reads a JSON array of its fields; the body must
    // be an object.
    let object = bytes.trim_ascii_start().first() == Some(&b'{');
    if object
        && let Ok(TypedPush { client_id, changes }) = serde_json::from_slice(bytes)
        && client_id.as_ref().is_none_or(|c| c.len() <= MAX_CLIENT_ID)
        && changes.len() <= max_batch
    {
        return Ok(PushRequest {
            client_id: client_id.unwrap_or_default(),
            changes,
        });
    }
    parse_push_checked(bytes, max_batch)
}

const MAX_CLIENT_ID: usize = 255;

/// Parse a push body with errors that say where the problem is.
fn parse_push_checked(bytes: &[u8], max_batch: usize) -> Result<PushRequest, SyncError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        SyncError::new(
            ErrorCode::MalformedJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let shape = |msg: &str| SyncError::new(ErrorCode::InvalidBody, msg.to_owned());
    let Value::Object(mut obj) = value else {
        return Err(shape(
            "body must be an object { \"client_id\", \"changes\": [...] }",
        ));
    };
    let client_id = match obj.remove("client_id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.len() <= MAX_CLIENT_ID => s,
        Some(_) => return Err(shape("client_id must be a string of at most 255 bytes")),
    };
    let Some(Value::Array(items)) = obj.remove("changes") else {
        return Err(shape("changes must be an array of changes"));
    };
    if items.len() > max_batch {
        return Err(SyncError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "batch has {} changes, at most {max_batch} are allowed per push",
                items.len()
            ),
        )
        .with_meta(serde_json::json!({ "max": max_batch })));
    }
    let mut changes = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let change: Change = serde_json::from_value(item).map_err(|e| {
            SyncError::new(ErrorCode::InvalidChange, format!("changes[{index}]: {e}"))
                .with_meta(serde_json::json!({ "index": index }))
        })?;
        changes.push(change);
    }
    Ok(PushRequest { client_id, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both parses give the same answer: the same request, or the same error.
    fn agree(body: &[u8], max_batch: usize) {
        let fast = parse_push(body, max_batch).map_err(|e| e.to_json());
        let checked = parse_push_checked(body, max_batch).map_err(|e| e.to_json());
        assert_eq!(fast, checked, "body {:?}", String::from_utf8_lossy(body));
    }

    const VALID: &str = r#"{"client_id":"d1","changes":[
        {"op_id":"a","model":"todo","pk":"1","op":"insert","payload":{"id":"1","t":[1,{"x":null}]},"updated_at":"2026-11-25T10:00:00.000Z","actor":"d1"},
        {"op_id":"b","model":"todo","pk":"1","op":"delete","updated_at":"2026-11-25T10:00:01.000Z"}]}"#;

    #[test]
    fn the_typed_parse_accepts_and_refuses_what_the_checked_one_does() {
        let long = format!(r#"{{"client_id":"{}","changes":[]}}"#, "x".repeat(256));
        let bodies = [
            VALID,
            r#"{"changes":[]}"#,
            r#"{"client_id":null,"changes":[]}"#,
            r#"{"client_id":7,"changes":[]}"#,
            long.as_str(),
            r#"{"client_id":"d"}"#,
            r#"{"changes":{}}"#,
            r#"{"changes":null}"#,
            r#"[]"#,
            r#"[null, []]"#,
            r#"  ["d", [], 1]"#,
            r#"{"changes":[["a","todo","1","insert",{},"2026-11-25T10:00:00.000Z","d"]]}"#,
            r#"{"changes":[["a","todo","1","insert"]]}"#,
            r#"null"#,
            r#"{"changes":[1]}"#,
            r#"{"changes":[{"op_id":"a"}]}"#,
            r#"{"changes":[{"op_id":"a","model":"m","pk":"1","op":"upsert","updated_at":"x"}]}"#,
            r#"{"changes":[],"changes":[{"op_id":"a"}]}"#,
            r#"{"client_id":"a","client_id":"b","changes":[]}"#,
            r#"{"extra":{"deep":[1,2]},"changes":[]}"#,
            r#"{"changes":[]} trailing"#,
            r#"{"changes":[{"op_id":1}], "#,
            r#"{"client_id":5,"changes":[{"op_id":"#,
        ];
        for body in bodies {
            agree(body.as_bytes(), 1000);
        }
        // Over the batch limit, and at it.
        agree(VALID.as_bytes(), 1);
        agree(VALID.as_bytes(), 2);
    }

    /// Every cut-off prefix and every one-byte change of a valid body.
    #[test]
    fn the_parses_agree_on_damaged_bodies() {
        let body = VALID.as_bytes();
        for end in 0..body.len() {
            agree(&body[..end], 1000);
        }
        for i in 0..body.len() {
            for b in [b'"', b'{', b']', b',', b'0', b'x', b' ', 0xff] {
                let mut damaged = body.to_vec();
                damaged[i] = b;
                agree(&damaged, 1000);
            }
        }
    }
}
