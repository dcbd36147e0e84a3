//! The engine: authorization, validation, push, pull and snapshot, with no
//! HTTP. [`Engine`] is what the public handle (`BetterSync`), the HTTP
//! routes and the WebSocket sessions share; the files of this room say which
//! part each holds: `push.rs` (a batch to the writer), `validate.rs` (the
//! checks of one change), `read.rs` (pull, long-poll, snapshot, get),
//! `health.rs` (`B/health`).

mod health;
mod push;
mod read;
mod shape;
mod tickets;
mod validate;

pub(crate) use self::health::Probe;
pub(crate) use self::push::PushForm;
pub(crate) use self::read::PullBody;
pub use self::read::PullOptions;
pub(crate) use self::tickets::{TICKET_TTL, Tickets};

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::access::{AuthorizeFn, CanWriteFn, ReadFilter, WriteHookFn};
use crate::auth::{AuthRequest, Authenticator, Ctx, ctx_from_identity};
use crate::cursor::CursorCodec;
use crate::error::SyncError;
use crate::lifecycle::Lifecycle;
use crate::limits::{Limits, MAX_TENANT};
use crate::live::{Fanout, SessionRegistry};
use crate::model::{ModelVersions, TypedModels, WireCodecs};
use crate::retention::Compactor;
use crate::shape::Shapes;
use crate::storage::Storage;
use crate::write::Writer;
use better_sync_core::protocol::is_valid_model_name as valid_model_name;

/// Everything a request needs once the handle is built: storage, hooks,
/// limits, the writer and the live fan-out.
pub(crate) struct Engine {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) auth: Option<Arc<dyn Authenticator>>,
    pub(crate) authorize: Option<AuthorizeFn>,
    pub(crate) can_write: Option<CanWriteFn>,
    /// The `on_write` hook: accept, rewrite or reject each change.
    pub(crate) on_write: Option<WriteHookFn>,
    /// `can_read`, applied on every read path.
    pub(crate) read: ReadFilter,
    /// Models accepted; `None`: every well-formed name.
    pub(crate) models: Option<BTreeSet<String>>,
    /// The models with a Rust type, whose payloads are checked against it.
    pub(crate) typed: TypedModels,
    /// Each model's schema version and the upgrades of older payloads.
    pub(crate) versions: ModelVersions,
    /// Per-model wire serializers.
    pub(crate) wire: WireCodecs,
    /// The shapes clients may subscribe to.
    pub(crate) shapes: Shapes,
    pub(crate) limits: Limits,
    pub(crate) cursors: CursorCodec,
    /// The single writer: group commit.
    pub(crate) writer: Writer,
    /// The live stream, and the head long-polls wait on.
    pub(crate) fanout: Fanout,
    /// Graceful shutdown: what is in flight, and whether it drains.
    pub(crate) lifecycle: Lifecycle,
    /// The WebSocket sessions of this instance (for the inspector).
    pub(crate) sessions: SessionRegistry,
    /// WebSocket tickets issued and not yet used.
    pub(crate) tickets: Tickets,
    /// Background compaction, when a retention policy is set.
    pub(crate) compactor: Option<Arc<Compactor>>,
}

impl Engine {
    /// Whether changes of `model` are accepted (see the builder's `model`).
    pub(crate) fn knows_model(&self, model: &str) -> bool {
        valid_model_name(model) && self.models.as_ref().is_none_or(|m| m.contains(model))
    }

    /// Authenticate and authorize a request: the context it runs under.
    pub(crate) async fn authorize(&self, req: AuthRequest) -> Result<Ctx, SyncError> {
        self.authorize_until(req).await.map(|(ctx, _)| ctx)
    }

    /// [`Self::authorize`], plus when the credentials stop being accepted
    /// (the token's `exp` plus the authenticator's leeway, Unix seconds),
    /// for sessions that outlive one request.
    pub(crate) async fn authorize_until(
        &self,
        mut req: AuthRequest,
    ) -> Result<(Ctx, Option<u64>), SyncError> {
        if let Some(auth) = &self.auth {
            req.identity = Some(auth.authenticate(&req).await?);
        }
        let leeway = self.auth.as_ref().map_or(0, |a| a.leeway().as_secs());
        let expires = req.identity.as_ref().and_then(|i| {
            let exp = i.claims.get("exp")?;
            // `exp` may be fractional; round down so the session never
            // outlives the token (and its leeway).
            exp.as_u64()
                .or_else(|| exp.as_f64().map(|f| f.max(0.0) as u64))
                .map(|exp| exp.saturating_add(leeway))
        });
        let ctx = match (&self.authorize, &req.identity) {
            (Some(hook), _) => hook(req).await?,
            (None, Some(identity)) => ctx_from_identity(identity)?,
            (None, None) => return Err(SyncError::unauthorized("no credentials")),
        };
        if ctx.tenant_id.is_empty() || ctx.tenant_id.len() > MAX_TENANT {
            return Err(SyncError::forbidden(
                "the request context has no valid tenant",
            ));
        }
        Ok((ctx, expires))
    }
}

impl Engine {
    /// The model versions a request announces (`X-Sync-Versions`, or the
    /// `versions` query parameter where headers cannot be set: the
    /// WebSocket URL), checked against what this server serves.
    pub(crate) fn admit_versions(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<crate::model::ClientVersions, SyncError> {
        let invalid =
            |message: String| SyncError::new(crate::error::ErrorCode::InvalidQuery, message);
        let mut from_query: Option<String> = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k == "versions" && from_query.replace(v.into_owned()).is_some() {
                return Err(invalid(
                    "query parameter `versions` is given more than once".into(),
                ));
            }
        }
        let header =
            match headers.get(crate::model::VERSIONS_HEADER) {
                Some(v) => Some(v.to_str().map_err(|_| {
                    invalid(format!("{} is not text", crate::model::VERSIONS_HEADER))
                })?),
                None => None,
            };
        // Each given announcement must be one; the header wins. An empty
        // header says nothing (HTTP stacks send empty headers), an empty
        // `versions=` is refused like every empty query parameter.
        if from_query.as_deref().is_some_and(|q| q.trim().is_empty()) {
            return Err(invalid("query parameter `versions` is empty".into()));
        }
        let header = header.filter(|h| !h.trim().is_empty());
        let mut announced = Vec::new();
        for text in [header, from_query.as_deref()].into_iter().flatten() {
            announced.push(crate::model::ClientVersions::parse(Some(text))?);
        }
        let client = announced.into_iter().next().unwrap_or_default();
        self.versions.admit(&client, |m| {
            valid_model_name(m) && self.models.as_ref().is_none_or(|known| known.contains(m))
        })?;
        Ok(client)
    }
}
