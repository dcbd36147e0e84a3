//! The server's WebSocket messages as JSON text.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::WsFrame;
use super::session::Subscriptions;
use crate::error::SyncError;
use crate::live::Batch;
use crate::protocol::PulledChange;

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

/// Most batches one frame carries: a subscriber that fell behind sends
/// what queued up as one frame (one socket write instead of several), up
/// to this many batches or the pull size limit.
const MAX_JOINED_BATCHES: usize = 64;

/// `first` and the batches queued behind it, as many as one frame takes,
/// and whether the receiver fell behind the shared buffer meanwhile.
pub(super) fn queued_after(
    first: Arc<Batch>,
    subs: &mut Subscriptions,
    max_bytes: usize,
) -> (Vec<Arc<Batch>>, bool) {
    let mut bytes = first.bytes;
    let mut batches = vec![first];
    let Some(rx) = subs.rx.as_mut() else {
        return (batches, false);
    };
    while batches.len() < MAX_JOINED_BATCHES {
        match rx.try_recv() {
            Ok(b) if bytes + b.bytes > max_bytes => {
                subs.carry = Some(b);
                break;
            }
            Ok(b) => {
                bytes += b.bytes;
                batches.push(b);
            }
            Err(broadcast::error::TryRecvError::Lagged(_)) => return (batches, true),
            Err(_) => break,
        }
    }
    (batches, false)
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
