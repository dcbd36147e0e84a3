//! A batch of changes: checked, then handed to the writer.

use std::collections::HashSet;
use std::time::Instant;

use tracing::Instrument;

use super::Engine;
use super::validate::At;
use crate::access::{WriteCheck, WriteDecision, current_values};
use crate::auth::Ctx;
use crate::error::{ErrorCode, SyncError};
use crate::lifecycle::Work;
use crate::model::ClientVersions;
use crate::telemetry;
use crate::write::ValidChange;
use better_sync_core::hlc::Hlc;
use better_sync_core::protocol::{Op, PushRequest, PushResponse};

/// The form a push's payloads are in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PushForm<'a> {
    /// A client's, built for these model versions: upgraded to the current
    /// versions, then decoded by the models' wire serializers.
    Wire(&'a ClientVersions),
    /// The application's own (`sync.write`): already the stored form.
    Stored,
}

impl Engine {
    /// Apply a client's batch of changes for `ctx`'s tenant, all or nothing.
    ///
    /// Changes whose op id was already applied are not written again; their
    /// result carries the original `seq` and `duplicate: true`.
    pub(crate) async fn push(
        &self,
        ctx: &Ctx,
        req: PushRequest,
    ) -> Result<PushResponse, SyncError> {
        self.push_as(ctx, req, PushForm::Wire(&ClientVersions::default()))
            .await
    }

    /// [`Engine::push`] of payloads in the given form.
    pub(crate) async fn push_as(
        &self,
        ctx: &Ctx,
        req: PushRequest,
        form: PushForm<'_>,
    ) -> Result<PushResponse, SyncError> {
        let start = Instant::now();
        let changes = req.changes.len();
        // The request's span (route, tenant, user) is the parent; the writer
        // links its commit to this one.
        let span = tracing::info_span!(
            "sync.push",
            changes,
            outcome = tracing::field::Empty,
            head = tracing::field::Empty,
        );
        let result = self
            .push_batch(ctx, req, form)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(answer) => {
                span.record("head", answer.results.iter().map(|r| r.seq).max());
                "ok"
            }
            Err(e) => {
                metrics::counter!(telemetry::PUSH_CHANGES_REFUSED, "code" => e.code().as_str())
                    .increment(changes as u64);
                e.code().as_str()
            }
        };
        span.record("outcome", outcome);
        metrics::histogram!(telemetry::PUSH_SECONDS, "outcome" => outcome).record(start.elapsed());
        result
    }

    /// Show each change to the `on_write` hook with its row's current value;
    /// a rewritten change is validated again.
    async fn run_write_hook(
        &self,
        hook: &crate::access::WriteHookFn,
        ctx: &Ctx,
        valid: Vec<ValidChange>,
        now: Hlc,
    ) -> Result<Vec<ValidChange>, SyncError> {
        let keys = valid
            .iter()
            .map(|v| (v.change.model.as_str(), v.change.pk.as_str()));
        let current = current_values(self.storage.as_ref(), &ctx.tenant_id, keys).await?;
        let mut out = Vec::with_capacity(valid.len());
        for (index, v) in valid.into_iter().enumerate() {
            let key = (v.change.model.clone(), v.change.pk.clone());
            let check = WriteCheck {
                ctx: ctx.clone(),
                change: v.change.clone(),
                current: current.get(&key).cloned().flatten(),
            };
            match hook(check).await {
                WriteDecision::Accept => out.push(v),
                WriteDecision::Rewrite(_) if v.change.op == Op::Delete => out.push(v),
                WriteDecision::Rewrite(payload) => {
                    let mut change = v.change;
                    change.payload = payload;
                    out.push(self.validate(ctx, index, change, now, false)?);
                }
                WriteDecision::Reject(reason) => {
                    return Err(SyncError::forbidden(format!(
                        "changes[{index}]: refused by the server: {reason}"
                    ))
                    .with_meta(serde_json::json!({
                        "index": index,
                        "op_id": v.change.op_id,
                        "reason": reason,
                    })));
                }
            }
        }
        Ok(out)
    }

    async fn push_batch(
        &self,
        ctx: &Ctx,
        req: PushRequest,
        form: PushForm<'_>,
    ) -> Result<PushResponse, SyncError> {
        // Counted before the check, so that a shutdown that starts after the
        // check waits for this push.
        let _working = self.lifecycle.start(Work::Push);
        if self.lifecycle.is_draining() {
            return Err(SyncError::new(
                ErrorCode::Unavailable,
                "the server is shutting down; retry (another instance will take the push)",
            )
            .with_retry_after_ms(1000));
        }
        let inner = self;
        if req.changes.len() > inner.limits.max_batch {
            return Err(SyncError::new(
                ErrorCode::BatchTooLarge,
                format!(
                    "batch has {} changes, at most {} are allowed per push",
                    req.changes.len(),
                    inner.limits.max_batch
                ),
            )
            .with_meta(serde_json::json!({ "max": inner.limits.max_batch })));
        }
        let now = Hlc::now();
        let mut seen = HashSet::with_capacity(req.changes.len());
        let mut valid: Vec<ValidChange> = Vec::with_capacity(req.changes.len());
        for (index, mut change) in req.changes.into_iter().enumerate() {
            if !seen.insert(change.op_id.clone()) {
                return Err(SyncError::new(
                    ErrorCode::DuplicateOpId,
                    format!("op_id {:?} appears twice in this batch", change.op_id),
                )
                .with_meta(serde_json::json!({ "index": index, "op_id": change.op_id })));
            }
            let from_wire = match form {
                PushForm::Wire(client) => {
                    if let Err(reason) =
                        self.versions
                            .upgrade(client, &change.model, change.op, &mut change.payload)
                    {
                        let at = At {
                            index,
                            op_id: &change.op_id,
                        };
                        return Err(at.schema_violation(&change.model, "payload", reason));
                    }
                    true
                }
                PushForm::Stored => false,
            };
            valid.push(self.validate(ctx, index, change, now, from_wire)?);
        }
        if let Some(hook) = &self.on_write {
            valid = self.run_write_hook(hook, ctx, valid, now).await?;
        }
        if valid.is_empty() {
            let head = inner.storage.head().await?;
            return Ok(PushResponse {
                results: Vec::new(),
                cursor: inner.cursors.encode(&ctx.tenant_id, head),
            });
        }
        let (results, head) = inner
            .writer
            .submit(inner.storage.clone(), ctx.tenant_id.clone(), valid)
            .await?;
        inner.fanout.head.send_if_modified(|h| {
            let moved = head > *h;
            if moved {
                *h = head;
            }
            moved
        });
        Ok(PushResponse {
            results,
            cursor: inner.cursors.encode(&ctx.tenant_id, head),
        })
    }
}
