//! The inspector: a development page (off by default; `.inspector(role)`
//! on the builder) showing a tenant's recent log, this instance's live
//! sessions and how far each was sent, and each row's state with the stamp
//! of every field and why its value won (the last-writer-wins comparison
//! that decided it). Its data routes run the `authorize` hook and need the
//! role; it reads only the caller's tenant.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use crate::auth::Ctx;
use crate::engine::Engine;
use crate::error::{ErrorCode, SyncError};
use crate::storage::LogEntry;
use better_sync_core::hlc::Hlc;
use better_sync_core::protocol::Op;

/// The inspector's page (static: it fetches the data routes with a token).
pub(crate) const PAGE: &str = include_str!("page.html");

/// Most log entries one answer holds.
const MAX_LOG: u64 = 500;

fn entry_json(e: &LogEntry) -> Value {
    json!({
        "seq": e.seq,
        "op_id": e.op_id,
        "model": e.model,
        "pk": e.pk,
        "op": e.op.as_str(),
        "actor": e.actor,
        "updated_at": e.updated_at,
        "payload": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
    })
}

/// The tenant's latest log entries before `before`, newest first.
pub(crate) async fn log(
    engine: &Engine,
    ctx: &Ctx,
    before: Option<i64>,
    limit: Option<u64>,
) -> Result<Value, SyncError> {
    let limit = limit.unwrap_or(100).clamp(1, MAX_LOG);
    let entries = engine
        .storage
        .recent_changes(&ctx.tenant_id, before, None, limit)
        .await?;
    let next = (entries.len() as u64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(json!({
        "tenant": ctx.tenant_id,
        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        "before": next,
    }))
}

/// This instance's live sessions of the tenant.
pub(crate) fn sessions(engine: &Engine, ctx: &Ctx) -> Value {
    let sessions: Vec<Value> = engine
        .sessions
        .of_tenant(&ctx.tenant_id)
        .iter()
        .map(|s| {
            let subscriptions: Vec<Value> = s
                .subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(id, models)| json!({ "id": id, "models": models }))
                .collect();
            let opened = s
                .opened
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            json!({
                "id": s.id,
                "user": s.user,
                "openedAtMs": opened,
                "subscriptions": subscriptions,
                "sentUpToSeq": s.delivered.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
        .collect();
    json!({ "tenant": ctx.tenant_id, "sessions": sessions })
}

/// A stamp as the inspector shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    clock: Hlc,
    clock_text: String,
    actor: String,
    op_id: String,
}

impl Stamp {
    fn from_json(v: &Value) -> Option<Self> {
        let clock_text = v.get(0)?.as_str()?.to_owned();
        Some(Self {
            clock: clock_text.parse().ok()?,
            clock_text,
            actor: v.get(1)?.as_str()?.to_owned(),
            op_id: v.get(2)?.as_str()?.to_owned(),
        })
    }

    fn of(e: &LogEntry) -> Option<Self> {
        Some(Self {
            clock: e.updated_at.parse().ok()?,
            clock_text: e.updated_at.clone(),
            actor: e.actor.clone(),
            op_id: e.op_id.clone(),
        })
    }

    fn json(&self) -> Value {
        json!({ "clock": self.clock_text, "actor": self.actor, "op_id": self.op_id })
    }

    /// Why `self` lost to `winner` on a field (writes compare by clock,
    /// then actor, then op id; PROTOCOL.md 4.3).
    fn lost_to(&self, winner: &Stamp) -> String {
        match self.clock.cmp(&winner.clock) {
            Ordering::Less => format!("older clock: {} < {}", self.clock_text, winner.clock_text),
            Ordering::Greater => "newer clock, but its row was deleted after it was written".into(),
            Ordering::Equal => match self.actor.as_bytes().cmp(winner.actor.as_bytes()) {
                Ordering::Less => format!(
                    "same clock; actor {:?} sorts before {:?} (the larger actor wins)",
                    self.actor, winner.actor
                ),
                Ordering::Greater => "same clock, larger actor, but superseded".into(),
                Ordering::Equal => format!(
                    "same clock and actor; op id {:?} sorts before {:?}",
                    self.op_id, winner.op_id
                ),
            },
        }
    }
}

/// One row: its value, the stamp of every field, and for each field the
/// writes that lost to the winner and why.
pub(crate) async fn row(
    engine: &Engine,
    ctx: &Ctx,
    model: &str,
    id: &str,
) -> Result<Value, SyncError> {
    if !engine.knows_model(model) {
        return Err(SyncError::new(
            ErrorCode::UnknownModel,
            format!("unknown model {model:?}"),
        ));
    }
    let snapshot = engine
        .storage
        .read_snapshot(&ctx.tenant_id, model, id)
        .await?;
    let history = engine
        .storage
        .recent_changes(&ctx.tenant_id, None, Some((model, id)), MAX_LOG)
        .await?;
    let Some(snapshot) = snapshot else {
        return Ok(json!({ "model": model, "id": id, "exists": false, "history": [] }));
    };
    let value: Value = serde_json::from_str(&snapshot.value).unwrap_or(Value::Null);
    let clocks: Value = serde_json::from_str(&snapshot.clocks).unwrap_or(Value::Null);
    let tombstone = clocks.get("t").and_then(Stamp::from_json);
    let mut fields = Vec::new();
    let names: Vec<String> = clocks
        .get("f")
        .and_then(Value::as_object)
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        let Some(winner) = clocks["f"].get(&name).and_then(Stamp::from_json) else {
            continue;
        };
        let mut lost = Vec::new();
        let mut found = false;
        for e in &history {
            let wrote = matches!(e.op, Op::Insert | Op::Update)
                && serde_json::from_str::<Map<String, Value>>(&e.payload)
                    .is_ok_and(|p| p.contains_key(&name));
            let Some(stamp) = wrote.then(|| Stamp::of(e)).flatten() else {
                continue;
            };
            if stamp == winner {
                found = true;
                continue;
            }
            lost.push(json!({
                "seq": e.seq,
                "stamp": stamp.json(),
                "value": serde_json::from_str::<Value>(&e.payload).ok().and_then(|p| p.get(&name).cloned()),
                "lost": stamp.lost_to(&winner),
            }));
        }
        fields.push(json!({
            "name": name,
            "value": value.get(&name),
            "stamp": winner.json(),
            "won": if found {
                "the latest write of this field by (clock, actor, op id)"
            } else {
                "the latest write of this field (older than the history shown)"
            },
            "lost": lost,
        }));
    }
    Ok(json!({
        "model": model,
        "id": id,
        "exists": true,
        "deleted": snapshot.deleted,
        "seq": snapshot.seq,
        "value": value,
        "tombstone": tombstone.as_ref().map(Stamp::json),
        "inserted": clocks.get("i").and_then(Stamp::from_json).as_ref().map(Stamp::json),
        "fields": fields,
        "history": history.iter().map(entry_json).collect::<Vec<_>>(),
    }))
}
