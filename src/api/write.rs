//! Writes from the application's own code: typed inserts, updates and
//! deletes that take the path of a client's push (validation, the typed
//! model's check, `can_write`, merge, log, live fan-out).

use serde::Serialize;

use super::BetterSync;
use crate::auth::Ctx;
use crate::engine::PushForm;
use crate::error::SyncError;
use better_sync_core::hlc::HlcClock;
use better_sync_core::protocol::{Change, ChangeResult, Op, PushRequest};

/// The writer of [`BetterSync::write`]: changes made by the application for
/// `ctx`'s tenant, each committed like a client's push of one change.
#[derive(Debug)]
pub struct AppWriter<'a> {
    sync: &'a BetterSync,
    ctx: &'a Ctx,
}

impl BetterSync {
    /// Write from the application's code, for `ctx`'s tenant: each change
    /// is validated (the typed model's schema too), checked by `can_write`,
    /// merged by last-writer-wins at the server's clock, logged, and sent
    /// live to subscribers, as a client's push would be. Its actor is
    /// `app:<user id>`.
    ///
    /// ```no_run
    /// # async fn run(sync: better_sync::BetterSync) -> Result<(), better_sync::SyncError> {
    /// use better_sync::Ctx;
    /// let ctx = Ctx::new("admin", "acme");
    /// let w = sync.write(&ctx);
    /// w.insert("todo", "42", &serde_json::json!({"id": "42", "title": "From a handler", "done": false})).await?;
    /// w.update("todo", "42", &serde_json::json!({"done": true})).await?;
    /// w.delete("todo", "42").await?;
    /// # Ok(()) }
    /// ```
    pub fn write<'a>(&'a self, ctx: &'a Ctx) -> AppWriter<'a> {
        AppWriter { sync: self, ctx }
    }
}

impl AppWriter<'_> {
    /// Insert (or re-create) row `pk` of `model` with `row`'s fields.
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        model: &str,
        pk: &str,
        row: &T,
    ) -> Result<ChangeResult, SyncError> {
        self.one(model, pk, Op::Insert, to_payload(row)?).await
    }

    /// Change the fields of row `pk` of `model` that `patch` holds.
    pub async fn update<T: Serialize + ?Sized>(
        &self,
        model: &str,
        pk: &str,
        patch: &T,
    ) -> Result<ChangeResult, SyncError> {
        self.one(model, pk, Op::Update, to_payload(patch)?).await
    }

    /// Delete row `pk` of `model`.
    pub async fn delete(&self, model: &str, pk: &str) -> Result<ChangeResult, SyncError> {
        self.one(model, pk, Op::Delete, serde_json::Value::Null)
            .await
    }

    async fn one(
        &self,
        model: &str,
        pk: &str,
        op: Op,
        payload: serde_json::Value,
    ) -> Result<ChangeResult, SyncError> {
        let clock = app_clock().tick();
        let change = Change {
            op_id: app_op_id(),
            model: model.to_owned(),
            pk: pk.to_owned(),
            op,
            payload,
            updated_at: clock.to_string(),
            actor: format!("app:{}", self.ctx.user_id),
        };
        let answer = self
            .sync
            .inner
            .engine
            .push_as(
                self.ctx,
                PushRequest {
                    client_id: "app".into(),
                    changes: vec![change],
                },
                PushForm::Stored,
            )
            .await?;
        answer
            .results
            .into_iter()
            .next()
            .ok_or_else(|| SyncError::internal("a push of one change answered no result"))
    }
}

fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<serde_json::Value, SyncError> {
    serde_json::to_value(value).map_err(|e| {
        SyncError::new(
            crate::error::ErrorCode::InvalidChange,
            format!("the value does not serialize to JSON: {e}"),
        )
    })
}

/// The process's clock for application writes: monotonic, so that two
/// writes in the same millisecond are ordered as they were made.
fn app_clock() -> &'static HlcClock {
    static CLOCK: std::sync::OnceLock<HlcClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(HlcClock::new)
}

fn app_op_id() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness the clock and a counter still make it unique in
    // this process.
    if getrandom::fill(&mut bytes).is_err() {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&app_clock().tick().millis().to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("app-{hex}")
}
