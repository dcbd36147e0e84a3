//! The WebSocket protocol: handshake checks and the per-connection session.
//!
//! Adapters (tower/hyper, actix) do the HTTP upgrade and translate frames to
//! and from [`WsFrame`]; everything else happens here, once.
//!
//! Client messages (JSON text frames):
//! - `{"type": "subscribe", "id"?, "cursor"?, "models"?}`: stream changes
//!   after the cursor (absent: from the start), of those models (absent:
//!   all). The server first catches up by pull, sends `{"type": "synced",
//!   "cursor"}`, then forwards changes as they commit. Up to
//!   `max_subscriptions` per connection; subscribing again with a known `id`
//!   replaces that subscription.
//! - `{"type": "unsubscribe", "id"?}`, `{"type": "ping"}` (answered
//!   `{"type": "pong"}`).
//!
//! Server messages: `{"type": "changes", "changes": [...], "cursor", "id"?}`,
//! `{"type": "synced", "cursor", "id"?}`, `{"type": "error", "error": {...}}`.
//! The session ends when its token expires.
//! The server pings every heartbeat interval and closes a connection that has
//! sent nothing (no pong, no message) for the heartbeat timeout.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use tokio::sync::broadcast;

use crate::auth::{AuthRequest, Ctx};
use crate::engine::{BetterSync, PullOptions};
use crate::error::{ErrorCode, SyncError};
use crate::fanout::Batch;
use crate::http::{SyncBody, error_response};
use crate::protocol::PulledChange;
use crate::routes::{RouteKind, route_of};

/// One WebSocket frame, as adapters hand them to [`BetterSync::run_socket`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsFrame {
    /// A UTF-8 text frame: every protocol message.
    Text(String),
    /// A binary frame (not part of the protocol; answered with an error).
    Binary(Bytes),
    /// A ping; the session answers with a pong.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer closes, or the session closes.
    Close,
}

/// A checked WebSocket request: who it is, and the handshake answer key.
#[derive(Debug, Clone)]
pub struct WsAccept {
    /// The verified context the session runs under.
    pub ctx: Ctx,
    /// `Sec-WebSocket-Accept` value for the 101 answer.
    pub accept_key: String,
    /// When the credentials expire (Unix seconds): the session ends then.
    pub expires_at: Option<u64>,
}

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether the headers ask for a WebSocket upgrade.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

fn upgrade_required(why: &str) -> Response<SyncBody> {
    let mut res = error_response(&SyncError::new(
        ErrorCode::UpgradeRequired,
        format!(
            "{why}: connect with a WebSocket client (Upgrade: websocket, Sec-WebSocket-Version: 13)"
        ),
    ));
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    res.headers_mut().insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    res
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe {
        #[serde(default)]
        id: String,
        #[serde(default)]
        cursor: Option<String>,
        #[serde(default)]
        models: Option<Vec<String>>,
    },
    Unsubscribe {
        #[serde(default)]
        id: String,
    },
    Ping,
}

enum Event {
    Frame(Option<WsFrame>),
    Batch(Result<std::sync::Arc<Batch>, broadcast::error::RecvError>),
    Tick,
}

/// The session ends (peer gone, send timed out, protocol failure).
struct Stop;

/// One stream of changes on a connection: where it is, and what it wants.
struct Subscription {
    id: String,
    cursor: i64,
    models: Option<Vec<String>>,
}

impl Subscription {
    fn wants(&self, c: &PulledChange) -> bool {
        c.seq > self.cursor && self.models.as_ref().is_none_or(|m| m.contains(&c.model))
    }
}

/// The subscriptions of one connection. They share one live receiver: all
/// are of the connection's tenant.
#[derive(Default)]
struct Subscriptions {
    rx: Option<broadcast::Receiver<std::sync::Arc<Batch>>>,
    subs: Vec<Subscription>,
    /// A batch taken from `rx` that did not fit in the last frame.
    carry: Option<std::sync::Arc<Batch>>,
}

async fn next_batch(
    subs: &mut Subscriptions,
) -> Result<std::sync::Arc<Batch>, broadcast::error::RecvError> {
    if let Some(batch) = subs.carry.take() {
        return Ok(batch);
    }
    match &mut subs.rx {
        Some(rx) if !subs.subs.is_empty() => rx.recv().await,
        _ => std::future::pending().await,
    }
}

impl BetterSync {
    /// Check a WebSocket request on `B/ws`: route, method, upgrade headers
    /// and credentials. On failure the answer to send instead.
    pub async fn prepare_websocket<B>(
        &self,
        req: &Request<B>,
    ) -> Result<WsAccept, Response<SyncBody>> {
        let path = req.uri().path();
        if route_of(&self.inner.base_path, path, &Method::GET).map(|r| r.kind)
            != Some(RouteKind::WebSocket)
        {
            return Err(error_response(&SyncError::new(
                ErrorCode::NotFound,
                format!("no WebSocket route at {path}"),
            )));
        }
        if req.method() != Method::GET {
            return Err(error_response(&SyncError::new(
                ErrorCode::MethodNotAllowed,
                "the WebSocket route takes GET",
            )));
        }
        let headers = req.headers();
        if !is_websocket_upgrade(headers) {
            return Err(upgrade_required("not a WebSocket upgrade request"));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return Err(upgrade_required("unsupported WebSocket version"));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(upgrade_required("missing Sec-WebSocket-Key"));
        };
        let accept_key = accept_key(key.as_bytes());
        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.headers_mut() = headers.clone();
        if let Some(addr) = req.extensions().get::<crate::ratelimit::ClientAddr>() {
            head.extensions_mut().insert(*addr);
        }
        let (parts, ()) = head.into_parts();
        self.rate_check(&parts, None)
            .map_err(|e| error_response(&e))?;
        // A panicking hook is a 500 for this handshake, as on every route.
        let auth = AssertUnwindSafe(self.authorize_until(AuthRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            identity: None,
        }))
        .catch_unwind()
        .await
        .map_err(|_| {
            error_response(&SyncError::internal(
                "the server failed while checking this request",
            ))
        })?;
        let (ctx, expires_at) = auth.map_err(|e| error_response(&e))?;
        self.rate_check(&parts, Some(&ctx))
            .map_err(|e| error_response(&e))?;
        Ok(WsAccept {
            ctx,
            accept_key,
            expires_at,
        })
    }

    /// The `101 Switching Protocols` answer for an accepted request.
    pub fn switching_protocols(accept: &WsAccept) -> Response<SyncBody> {
        let mut res = Response::new(SyncBody::default());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept.accept_key) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        res
    }

    /// The answer of `B/ws` to a request that cannot upgrade.
    pub(crate) fn websocket_without_upgrade() -> Response<SyncBody> {
        upgrade_required("this route only speaks WebSocket")
    }

    /// Run one WebSocket session until the peer leaves or stops answering.
    ///
    /// `incoming` yields the peer's frames (ending when the connection
    /// closes); `outgoing` takes the session's frames.
    pub async fn run_socket<S, K>(&self, accept: WsAccept, mut incoming: S, mut outgoing: K)
    where
        S: Stream<Item = WsFrame> + Unpin,
        K: Sink<WsFrame> + Unpin,
    {
        // A panicking hook ends this session only.
        let session = self.session(&accept.ctx, accept.expires_at, &mut incoming, &mut outgoing);
        if AssertUnwindSafe(session).catch_unwind().await.is_err() {
            tracing::error!("WebSocket session panicked; connection closed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = outgoing.send(WsFrame::Close).await;
            let _ = outgoing.close().await;
        })
        .await;
    }

    async fn session<S, K>(
        &self,
        ctx: &Ctx,
        expires_at: Option<u64>,
        incoming: &mut S,
        out: &mut K,
    ) -> Result<(), Stop>
    where
        S: Stream<Item = WsFrame> + Unpin,
        K: Sink<WsFrame> + Unpin,
    {
        let inner = &self.inner;
        let heartbeat = inner.heartbeat;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        let mut subs = Subscriptions::default();
        loop {
            let event = tokio::select! {
                f = incoming.next() => Event::Frame(f),
                b = next_batch(&mut subs) => Event::Batch(b),
                _ = ticker.tick() => Event::Tick,
            };
            match event {
                Event::Frame(None) | Event::Frame(Some(WsFrame::Close)) => return Ok(()),
                Event::Frame(Some(frame)) => {
                    last_seen = Instant::now();
                    match frame {
                        WsFrame::Text(text) => {
                            self.on_message(ctx, &text, &mut subs, out).await?;
                            last_seen = Instant::now();
                        }
                        WsFrame::Binary(_) => {
                            let e = SyncError::new(
                                ErrorCode::InvalidBody,
                                "binary frames are not part of the protocol; send JSON text",
                            );
                            self.send(out, error_frame(&e, None)).await?;
                        }
                        WsFrame::Ping(p) => self.send(out, WsFrame::Pong(p)).await?,
                        WsFrame::Pong(_) | WsFrame::Close => {}
                    }
                }
                Event::Batch(Ok(batch)) => {
                    let (batches, lagged) =
                        queued_after(batch, &mut subs, self.inner.limits.max_pull_bytes);
                    for sub in &mut subs.subs {
                        self.deliver(ctx, &batches, sub, out).await?;
                    }
                    if lagged {
                        self.resync(ctx, &mut subs, out).await?;
                    }
                }
                Event::Batch(Err(broadcast::error::RecvError::Lagged(_))) => {
                    self.resync(ctx, &mut subs, out).await?;
                }
                Event::Batch(Err(broadcast::error::RecvError::Closed)) => {
                    subs = Subscriptions::default()
                }
                Event::Tick => {
                    if last_seen.elapsed() > inner.heartbeat_timeout {
                        return Err(Stop);
                    }
                    if expires_at.is_some_and(|exp| crate::auth::now_secs() >= exp) {
                        let e =
                            SyncError::unauthorized("token expired; reconnect with a fresh token");
                        self.send(out, error_frame(&e, None)).await?;
                        return Err(Stop);
                    }
                    self.send(out, WsFrame::Ping(Bytes::new())).await?;
                }
            }
        }
    }

    async fn on_message<K>(
        &self,
        ctx: &Ctx,
        text: &str,
        subs: &mut Subscriptions,
        out: &mut K,
    ) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        let inner = &self.inner;
        if text.len() > inner.limits.max_ws_message_bytes {
            let e = SyncError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "message larger than {} bytes",
                    inner.limits.max_ws_message_bytes
                ),
            );
            return self.send(out, error_frame(&e, None)).await;
        }
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                let code = if e.is_data() {
                    ErrorCode::InvalidBody
                } else {
                    ErrorCode::MalformedJson
                };
                let e = SyncError::new(
                    code,
                    format!(
                        "expected {{\"type\": \"subscribe\" | \"unsubscribe\" | \"ping\"}}: {e}"
                    ),
                );
                return self.send(out, error_frame(&e, None)).await;
            }
        };
        match msg {
            ClientMessage::Ping => self.send(out, text_frame(&json!({"type": "pong"}))).await,
            ClientMessage::Unsubscribe { id } => {
                subs.subs.retain(|s| s.id != id);
                Ok(())
            }
            ClientMessage::Subscribe { id, cursor, models } => {
                let fail = |e: SyncError| error_frame(&e, Some(&id));
                if id.len() > 64 {
                    let e = SyncError::new(
                        ErrorCode::InvalidBody,
                        "subscription id longer than 64 bytes",
                    );
                    return self.send(out, fail(e)).await;
                }
                if let Some(bad) = models.iter().flatten().find(|m| !self.knows_model(m)) {
                    let e =
                        SyncError::new(ErrorCode::UnknownModel, format!("unknown model {bad:?}"));
                    return self.send(out, fail(e)).await;
                }
                let replacing = subs.subs.iter().any(|s| s.id == id);
                if !replacing && subs.subs.len() >= inner.limits.max_subscriptions {
                    let e = SyncError::new(
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "at most {} subscriptions per connection; unsubscribe one or reuse its id",
                            inner.limits.max_subscriptions
                        ),
                    );
                    return self.send(out, fail(e)).await;
                }
                let cursor = match cursor {
                    None => 0,
                    Some(c) => match inner.cursors.decode(&ctx.tenant_id, &c) {
                        Ok(s) => s,
                        Err(e) => return self.send(out, fail(e)).await,
                    },
                };
                subs.subs.retain(|s| s.id != id);
                // Subscribe before catching up: whatever commits during the
                // catch-up is then waiting in the channel.
                if subs.rx.is_none() {
                    inner.fanout.ensure_started(&self.inner);
                    subs.rx = Some(
                        inner
                            .fanout
                            .subscribe(&ctx.tenant_id, inner.fanout_config.capacity),
                    );
                    inner.fanout.wait_ready().await;
                }
                let mut sub = Subscription { id, cursor, models };
                self.catch_up(ctx, &mut sub, out).await?;
                subs.subs.push(sub);
                Ok(())
            }
        }
    }

    /// Send everything after the subscription's cursor by pull, then `synced`.
    async fn catch_up<K>(&self, ctx: &Ctx, sub: &mut Subscription, out: &mut K) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        let codec = &self.inner.cursors;
        loop {
            let opts = PullOptions {
                cursor: Some(codec.encode(&ctx.tenant_id, sub.cursor)),
                limit: None,
                wait: None,
            };
            let page = match self.pull_with(ctx, opts).await {
                Ok(p) => p,
                Err(e) => {
                    self.send(out, error_frame(&e, Some(&sub.id))).await?;
                    return Err(Stop);
                }
            };
            let refs: Vec<&PulledChange> = page.changes.iter().filter(|c| sub.wants(c)).collect();
            if !refs.is_empty() {
                self.send(out, changes_frame(&sub.id, &refs, &page.cursor))
                    .await?;
            }
            sub.cursor = codec
                .decode(&ctx.tenant_id, &page.cursor)
                .map_err(|_| Stop)?;
            if !page.has_more {
                let mut synced = json!({"type": "synced", "cursor": page.cursor});
                tag(&mut synced, &sub.id);
                return self.send(out, text_frame(&synced)).await;
            }
        }
    }

    /// Fell behind the shared buffer: every subscription catches up from
    /// its own cursor by pull, then goes on with the live stream.
    async fn resync<K>(&self, ctx: &Ctx, subs: &mut Subscriptions, out: &mut K) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        self.inner
            .fanout
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for sub in &mut subs.subs {
            self.catch_up(ctx, sub, out).await?;
        }
        Ok(())
    }

    /// Send a subscription what it wants of `batches` (consecutive, in
    /// sequence order) as one frame.
    async fn deliver<K>(
        &self,
        ctx: &Ctx,
        batches: &[std::sync::Arc<Batch>],
        sub: &mut Subscription,
        out: &mut K,
    ) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        let last = batches.last().map_or(0, |b| b.last_seq());
        if last <= sub.cursor {
            return Ok(());
        }
        let codec = &self.inner.cursors;
        let unfiltered = self.inner.can_read.is_none()
            && sub.id.is_empty()
            && sub.models.is_none()
            && batches
                .first()
                .and_then(|b| b.changes.first())
                .is_some_and(|c| c.seq > sub.cursor);
        let frame = match batches {
            [batch] if unfiltered => {
                let text = batch.shared_frame(|| {
                    let refs: Vec<&PulledChange> = batch.changes.iter().collect();
                    frame_text("", &refs, &codec.encode(&ctx.tenant_id, last))
                });
                Some(WsFrame::Text(text.to_owned()))
            }
            _ if unfiltered => Some(WsFrame::Text(joined_frame_text(
                batches,
                &codec.encode(&ctx.tenant_id, last),
            ))),
            _ => {
                let refs: Vec<&PulledChange> = batches
                    .iter()
                    .flat_map(|b| {
                        b.changes
                            .iter()
                            .filter(|c| sub.wants(c) && self.inner.change_readable(ctx, c, &b.rows))
                    })
                    .collect();
                (!refs.is_empty())
                    .then(|| changes_frame(&sub.id, &refs, &codec.encode(&ctx.tenant_id, last)))
            }
        };
        sub.cursor = last;
        match frame {
            Some(f) => self.send(out, f).await,
            None => Ok(()),
        }
    }

    /// Send one frame; a peer that does not take it within the heartbeat
    /// timeout is gone.
    async fn send<K>(&self, out: &mut K, frame: WsFrame) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        let mut sending = out.send(frame);
        // Most sends finish at once (the socket has room): only a send that
        // has to wait gets a timer, which a live frame to a thousand
        // subscribers would otherwise set and clear a thousand times.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut sending).poll(cx))
        })
        .await;
        let sent = match first {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => {
                tokio::time::timeout(self.inner.heartbeat_timeout, sending).await
            }
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop),
        }
    }
}

/// Name the subscription a message belongs to (omitted for the default one).
fn tag(v: &mut Value, id: &str) {
    if !id.is_empty() {
        v["id"] = json!(id);
    }
}

fn frame_text(id: &str, changes: &[&PulledChange], cursor: &str) -> String {
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
fn queued_after(
    first: std::sync::Arc<Batch>,
    subs: &mut Subscriptions,
    max_bytes: usize,
) -> (Vec<std::sync::Arc<Batch>>, bool) {
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
fn joined_frame_text(batches: &[std::sync::Arc<Batch>], cursor: &str) -> String {
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

fn changes_frame(id: &str, changes: &[&PulledChange], cursor: &str) -> WsFrame {
    WsFrame::Text(frame_text(id, changes, cursor))
}

fn text_frame(v: &Value) -> WsFrame {
    WsFrame::Text(v.to_string())
}

fn error_frame(e: &SyncError, id: Option<&str>) -> WsFrame {
    let mut v = e.to_json();
    v["type"] = json!("error");
    if let Some(id) = id {
        tag(&mut v, id);
    }
    text_frame(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_websocket_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&h));
    }
}
