//! The server's WebSocket messages as JSON text.

use std::sync::Arc;

use serde_json::{Value, json};

use super::WsFrame;
use crate::error::SyncError;
use crate::live::Batch;
use better_sync_core::protocol::PulledChange;

/// Name the subscription a message belongs to (omitted for the default one).
pub(super) fn tag(v: &mut Value, id: &str) {
    if !id.is_empty() {
        v["id"] = json!(id);
    }
}

pub(super) fn frame_text(id: &str, changes: &[&PulledChange], cursor: &str) -> String {
    let mut v = json!({"type": "changes", "changes": changes, "cursor": cursor});
    tag(&mut v, id);
    v.to_string()
}

/// The unfiltered frame of several batches, from their shared elements.
pub(super) fn joined_frame_text(batches: &[Arc<Batch>], cursor: &str) -> String {
    let elements: Vec<&str> = batches
        .iter()
        .map(|b| b.elements())
        .filter(|e| !e.is_empty())
        .collect();
    let cursor = serde_json::to_string(cursor).unwrap_or_default();
    format!(
        "{{\"type\":\"changes\",\"changes\":[{}],\"cursor\":{cursor}}}",
        elements.join(",")
    )
}

pub(super) fn changes_frame(id: &str, changes: &[&PulledChange], cursor: &str) -> WsFrame {
    WsFrame::Text(frame_text(id, changes, cursor))
}

pub(super) fn text_frame(v: &Value) -> WsFrame {
    WsFrame::Text(v.to_string())
}

pub(super) fn error_frame(e: &SyncError, id: Option<&str>) -> WsFrame {
    let mut v = e.to_json();
    v["type"] = json!("error");
    if let Some(id) = id {
        tag(&mut v, id);
    }
    text_frame(&v)
}
