//! The public handle: [`BetterSync`] and its builder. Every method an app or
//! an adapter calls is here, in one place; each delegates to the room that
//! does the work (`engine` for the in-process API, `http` for requests,
//! `ws` for WebSocket sessions).

mod builder;
mod write;

pub use self::builder::BetterSyncBuilder;
pub use self::write::AppWriter;

use std::sync::Arc;

use futures_util::{Sink, Stream};
use http::{Request, Response};
use http_body::Body;
use serde_json::Value;

use crate::auth::{AuthRequest, Ctx};
use crate::engine::{Engine, PullOptions};
use crate::error::SyncError;
use crate::http::{BoxError, HttpConfig, SyncBody};
use crate::limits::Limits;
use crate::retention::{CompactionReport, ErasureReport, RetentionPolicy};
use crate::ws::{SocketConfig, WsAccept, WsFrame};
use better_sync_core::protocol::{PullResponse, PushRequest, PushResponse, SnapshotResponse};

/// The sync engine. Build it with [`BetterSync::builder`], mount it with an
/// adapter (`better_sync_tower::BetterSyncLayer`, `better_sync_actix::sync_scope`)
/// or call it directly.
///
/// ```no_run
/// # async fn run(sync: better_sync::BetterSync) -> Result<(), better_sync::SyncError> {
/// use better_sync::{Ctx, protocol::{Change, Op, PushRequest}};
/// let ctx = Ctx::new("alice", "acme");
/// let change = Change {
///     op_id: "op-1".into(), model: "todo".into(), pk: "1".into(), op: Op::Insert,
///     payload: serde_json::json!({"id": "1", "title": "Write docs"}),
///     updated_at: "2026-11-25T10:00:00.000Z".into(), actor: "device-1".into(),
/// };
/// sync.push(&ctx, PushRequest { client_id: "device-1".into(), changes: vec![change] }).await?;
/// let page = sync.pull(&ctx, None, None).await?;
/// assert_eq!(page.changes.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BetterSync {
    pub(crate) inner: Arc<Shared>,
}

/// What every clone of a handle shares: the engine, and the settings of
/// the two ways it is served.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) http: HttpConfig,
    pub(crate) socket: SocketConfig,
}

impl std::fmt::Debug for BetterSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BetterSync")
            .field("base_path", &self.inner.http.base_path)
            .finish_non_exhaustive()
    }
}

/// Configuration and state.
impl BetterSync {
    /// Start configuring an engine.
    pub fn builder() -> BetterSyncBuilder {
        BetterSyncBuilder::default()
    }

    /// The base path the engine serves, e.g. `/api/sync`.
    pub fn base_path(&self) -> &str {
        &self.inner.http.base_path
    }

    /// Whether changes of `model` are accepted (see the builder's `model`).
    pub fn knows_model(&self, model: &str) -> bool {
        self.inner.engine.knows_model(model)
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.engine.limits
    }

    /// Live WebSocket connections with subscriptions, held by this engine now.
    pub fn live_subscribers(&self) -> usize {
        self.inner.engine.fanout.receivers()
    }

    /// How many times a live subscriber fell behind its buffer and caught up
    /// by pull instead (a measure of slow consumers).
    pub fn live_resyncs(&self) -> u64 {
        self.inner
            .engine
            .fanout
            .resyncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The `sync.json` document: protocol version, features, base path, methods.
    pub fn metadata(&self) -> Value {
        crate::http::metadata(&self.inner.engine, &self.inner.http)
    }

    /// The OpenAPI 3.0 document of every HTTP operation the engine serves.
    pub fn openapi(&self) -> Value {
        crate::http::openapi_document(&self.inner.engine, &self.inner.http)
    }
}

/// The in-process API: the protocol's operations without an HTTP hop.
impl BetterSync {
    /// Authenticate and authorize a request: the context it runs under.
    pub async fn authorize(&self, req: AuthRequest) -> Result<Ctx, SyncError> {
        self.inner.engine.authorize(req).await
    }

    /// Apply a batch of changes for `ctx`'s tenant, all or nothing.
    ///
    /// Changes whose op id was already applied are not written again; their
    /// result carries the original `seq` and `duplicate: true`.
    pub async fn push(&self, ctx: &Ctx, req: PushRequest) -> Result<PushResponse, SyncError> {
        self.inner.engine.push(ctx, req).await
    }

    /// Changes after a cursor, for `ctx`'s tenant, filtered by `can_read`.
    pub async fn pull(
        &self,
        ctx: &Ctx,
        cursor: Option<&str>,
        limit: Option<u64>,
    ) -> Result<PullResponse, SyncError> {
        let opts = PullOptions {
            cursor: cursor.map(str::to_owned),
            limit,
            wait: None,
        };
        self.inner.engine.pull_with(ctx, opts).await
    }

    /// [`Self::pull`] with every option, including the long-poll `wait`.
    pub async fn pull_with(&self, ctx: &Ctx, opts: PullOptions) -> Result<PullResponse, SyncError> {
        self.inner.engine.pull_with(ctx, opts).await
    }

    /// A page of current rows of `model`, ordered by id, for bootstrapping a
    /// fresh replica. Keep the `cursor` of the first page and pull from it
    /// once every page is loaded.
    pub async fn snapshot(
        &self,
        ctx: &Ctx,
        model: &str,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SnapshotResponse, SyncError> {
        self.inner.engine.snapshot(ctx, model, after, limit).await
    }

    /// A page of the rows of shape `name` for a subscriber with `ctx` and
    /// `params` (what `GET B/snapshot?shape=..&params=..` answers): its
    /// filter evaluated in SQL, then `can_read`. Keep the first page's
    /// `cursor`.
    pub async fn snapshot_shape(
        &self,
        ctx: &Ctx,
        name: &str,
        params: Option<&Value>,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SnapshotResponse, SyncError> {
        self.inner
            .engine
            .shape_snapshot(ctx, name, params, after, limit)
            .await
    }

    /// The shape `name`, as the builder defined it.
    pub fn shape(&self, name: &str) -> Option<&crate::shape::Shape> {
        self.inner.engine.shapes.get(name)
    }

    /// The current state of one row, `None` if it never existed or is deleted.
    pub async fn get(&self, ctx: &Ctx, model: &str, id: &str) -> Result<Option<Value>, SyncError> {
        self.inner.engine.get(ctx, model, id).await
    }
}

/// Bounded storage: compaction and erasure.
impl BetterSync {
    /// Compact the log now with the builder's [`RetentionPolicy`] (or the
    /// default one, which keeps every entry and only purges tombstones
    /// under an existing horizon). Returns at once, `skipped`, when another
    /// compactor holds the lease.
    pub async fn compact(&self) -> Result<CompactionReport, SyncError> {
        let policy = match &self.inner.engine.compactor {
            Some(c) => c.policy.clone(),
            None => RetentionPolicy::default(),
        };
        self.compact_with(&policy).await
    }

    /// Compact the log now with `policy` (what the admin command line's
    /// `compact` runs).
    pub async fn compact_with(
        &self,
        policy: &RetentionPolicy,
    ) -> Result<CompactionReport, SyncError> {
        let engine = &self.inner.engine;
        let holder = match &engine.compactor {
            Some(c) => c.holder.clone(),
            None => crate::retention::lease_holder(),
        };
        let now = crate::retention::now_ms();
        Ok(crate::retention::compact(engine.storage.as_ref(), policy, &holder, now).await?)
    }

    /// Erase one row for good: its subscribers receive a delete, and its
    /// values leave the log and the snapshot (a tombstone with the row's key
    /// and stamps stays for the tombstone window). A row that does not
    /// exist erases nothing.
    pub async fn erase(
        &self,
        tenant: &str,
        model: &str,
        pk: &str,
    ) -> Result<ErasureReport, SyncError> {
        let engine = &self.inner.engine;
        let skew = engine.limits.max_clock_skew.as_millis() as i64;
        crate::retention::erase_rows(
            &engine.storage,
            &engine.writer,
            tenant,
            &[(model, pk)],
            skew,
        )
        .await
    }

    /// Erase every row of a tenant for good (see [`BetterSync::erase`]).
    /// Stop the tenant's writes first (e.g. in the `authorize` hook):
    /// writes that keep landing make it give up with an error after a few
    /// passes.
    pub async fn erase_tenant(&self, tenant: &str) -> Result<ErasureReport, SyncError> {
        let engine = &self.inner.engine;
        let skew = engine.limits.max_clock_skew.as_millis() as i64;
        crate::retention::erase_tenant(&engine.storage, &engine.writer, tenant, skew).await
    }
}

/// Lifecycle.
impl BetterSync {
    /// Shut down gracefully, for a rolling deploy: from now on pushes and
    /// WebSocket handshakes get a retryable `503 SYNC:UNAVAILABLE` (clients
    /// retry, at another instance), `B/health` says `draining`, pushes
    /// already accepted commit, WebSocket sessions are closed with code
    /// 1012 (service restart: clients reconnect from their cursor) and
    /// long-polls answer at once. Returns when nothing is left in flight or
    /// `deadline` has passed; then stop the HTTP server.
    ///
    /// ```no_run
    /// # async fn run(sync: better_sync::BetterSync) {
    /// tokio::signal::ctrl_c().await.ok();
    /// let report = sync.shutdown(std::time::Duration::from_secs(10)).await;
    /// assert!(report.drained());
    /// # }
    /// ```
    pub async fn shutdown(
        &self,
        deadline: std::time::Duration,
    ) -> crate::lifecycle::ShutdownReport {
        self.inner.engine.lifecycle.shutdown(deadline).await
    }
}

/// Serving HTTP, for adapters (see [`crate::adapter`]).
impl BetterSync {
    /// Whether `path` is under the base path (by whole segments).
    pub fn serves(&self, path: &str) -> bool {
        self.inner.http.serves(path)
    }

    /// Answer one request under the base path. Never panics: a panicking
    /// hook becomes a `500 SYNC:INTERNAL` for this request only.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<SyncBody>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // An engine built outside a runtime starts its compaction here.
        if let Some(c) = &self.inner.engine.compactor {
            c.ensure_started();
        }
        crate::http::handle(&self.inner.engine, &self.inner.http, req).await
    }
}

/// Serving WebSocket sessions, for adapters (see [`crate::adapter`]).
impl BetterSync {
    /// Check a WebSocket request on `B/ws`: route, method, upgrade headers
    /// and credentials. On failure the answer to send instead.
    pub async fn prepare_websocket<B>(
        &self,
        req: &Request<B>,
    ) -> Result<WsAccept, Response<SyncBody>> {
        crate::ws::prepare(&self.inner.engine, &self.inner.http, req).await
    }

    /// The `101 Switching Protocols` answer for an accepted request.
    pub fn switching_protocols(accept: &WsAccept) -> Response<SyncBody> {
        crate::ws::switching_protocols(accept)
    }

    /// Run one WebSocket session until the peer leaves or stops answering.
    ///
    /// `incoming` yields the peer's frames (ending when the connection
    /// closes); `outgoing` takes the session's frames.
    pub async fn run_socket<S, K>(&self, accept: WsAccept, incoming: S, outgoing: K)
    where
        S: Stream<Item = WsFrame> + Unpin,
        K: Sink<WsFrame> + Unpin,
    {
        let inner = &self.inner;
        crate::ws::run(&inner.engine, &inner.socket, accept, incoming, outgoing).await;
    }
}
