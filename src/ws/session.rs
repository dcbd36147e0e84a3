//! One WebSocket session: subscriptions, catch-up by pull, live delivery
//! from the fan-out, heartbeats, and the end of the session.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tracing::Instrument;

use self::shape::ShapeView;
use super::frames::{changes_frame, error_frame, frame_text, joined_frame_text, tag, text_frame};
use super::{SocketConfig, WsAccept, WsFrame};
use crate::auth::Ctx;
use crate::engine::{Engine, PullBody, PullOptions};
use crate::error::{ErrorCode, SyncError};
use crate::lifecycle::Work;
use crate::live::{Batch, SessionInfo};
use crate::telemetry;
use better_sync_core::protocol::PulledChange;

mod shape;

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
        /// A shape to subscribe to instead of whole models (PROTOCOL.md 16.3).
        #[serde(default)]
        shape: Option<String>,
        #[serde(default)]
        params: Option<serde_json::Value>,
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
    /// The server shuts down.
    Draining,
    /// The credentials expired (their `exp` plus the leeway).
    Expired,
}

/// Whether credentials that end at `expires_at` (Unix seconds) have ended.
fn expired(expires_at: Option<u64>) -> bool {
    expires_at.is_some_and(|exp| crate::auth::now_secs() >= exp)
}

/// When credentials that end at `expires_at` (Unix seconds) end, on the
/// runtime's clock (`None`: they never do).
fn expiry_deadline(expires_at: Option<u64>) -> Option<tokio::time::Instant> {
    let end = std::time::UNIX_EPOCH + Duration::from_secs(expires_at?);
    let left = end
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(tokio::time::Instant::now() + left)
}

/// The session ends, and why (the `reason` of the closed-sessions metric).
pub(super) struct Stop(&'static str);

/// One stream of changes on a connection: where it is, and what it wants.
struct Subscription {
    id: String,
    cursor: i64,
    models: Option<Vec<String>>,
    /// A shape subscription: rows instead of changes.
    shape: Option<ShapeView>,
}

impl Subscription {
    fn wants(&self, c: &PulledChange) -> bool {
        self.wants_change(&c.model, c.seq)
    }

    /// Whether the change at `seq` of `model` is one to send.
    fn wants_change(&self, model: &str, seq: i64) -> bool {
        seq > self.cursor
            && self
                .models
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// The subscriptions of one connection. They share one live receiver: all
/// are of the connection's tenant.
#[derive(Default)]
pub(super) struct Subscriptions {
    pub(super) rx: Option<broadcast::Receiver<std::sync::Arc<Batch>>>,
    subs: Vec<Subscription>,
    /// A batch taken from `rx` that did not fit in the last frame.
    pub(super) carry: Option<std::sync::Arc<Batch>>,
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

/// A client message: text that is not JSON is `SYNC:MALFORMED_JSON`, JSON of
/// the wrong shape `SYNC:INVALID_BODY` (PROTOCOL.md 8.2). The syntax is
/// checked first: the tagged enum's decoder reports a wrong shape (an array,
/// say) before it reaches a syntax error further on (`[1,`).
fn parse_message(text: &str) -> Result<ClientMessage, SyncError> {
    let expected = "expected {\"type\": \"subscribe\" | \"unsubscribe\" | \"ping\"}";
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(SyncError::new(
            ErrorCode::MalformedJson,
            format!("message is not JSON ({e}); {expected}"),
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| SyncError::new(ErrorCode::InvalidBody, format!("{expected}: {e}")))
}

/// Run one WebSocket session until the peer leaves or stops answering.
pub(crate) async fn run<S, K>(
    engine: &Engine,
    config: &SocketConfig,
    accept: WsAccept,
    mut incoming: S,
    mut outgoing: K,
) where
    S: Stream<Item = WsFrame> + Unpin,
    K: Sink<WsFrame> + Unpin,
{
    let registered = engine
        .sessions
        .register(&accept.ctx.tenant_id, &accept.ctx.user_id);
    let session = Session {
        engine,
        config,
        subscriptions: AtomicUsize::new(0),
        info: &registered.info,
        expires_at: accept.expires_at,
    };
    let span = tracing::info_span!(
        "sync.session",
        tenant = %accept.ctx.tenant_id,
        user = %accept.ctx.user_id,
        reason = tracing::field::Empty,
    );
    let _working = engine.lifecycle.start(Work::Session);
    metrics::counter!(telemetry::WS_OPENED).increment(1);
    metrics::gauge!(telemetry::WS_SESSIONS).increment(1.0);
    // A panicking hook ends this session only.
    let running = session.session(&accept.ctx, accept.expires_at, &mut incoming, &mut outgoing);
    let reason = match AssertUnwindSafe(running.instrument(span.clone()))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => "peer_closed",
        Ok(Err(Stop(reason))) => reason,
        Err(_) => {
            tracing::error!(parent: &span, "WebSocket session panicked; connection closed");
            "panic"
        }
    };
    span.record("reason", reason);
    metrics::counter!(telemetry::WS_CLOSED, "reason" => reason).increment(1);
    metrics::gauge!(telemetry::WS_SESSIONS).decrement(1.0);
    metrics::gauge!(telemetry::LIVE_SUBSCRIPTIONS)
        .decrement(session.subscriptions.load(Ordering::Relaxed) as f64);
    // A shutdown or an expiry has sent its own close frame.
    let closed = matches!(reason, "shutdown" | "token_expired");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !closed {
            let _ = outgoing.send(WsFrame::Close).await;
        }
        let _ = outgoing.close().await;
    })
    .await;
}

/// What a session runs on.
struct Session<'a> {
    engine: &'a Engine,
    config: &'a SocketConfig,
    /// Live subscriptions it holds, for the gauge.
    subscriptions: AtomicUsize,
    /// What the inspector shows of it.
    info: &'a SessionInfo,
    /// When its credentials end (Unix seconds).
    expires_at: Option<u64>,
}

impl Session<'_> {
    /// The credentials ended: say so, close with 1008 (policy violation,
    /// RFC 6455 7.4.1), deliver nothing more.
    async fn end_expired<K>(&self, out: &mut K) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        let e = SyncError::unauthorized(
            "token expired; reconnect with a fresh token and resubscribe from your cursor",
        );
        self.send(out, error_frame(&e, None)).await?;
        let close = WsFrame::CloseWith {
            code: 1008,
            reason: "token expired".into(),
        };
        self.send(out, close).await?;
        Err(Stop("token_expired"))
    }

    /// The session holds `now` subscriptions: move the gauge by the change.
    fn count_subscriptions(&self, now: usize) {
        let before = self.subscriptions.swap(now, Ordering::Relaxed);
        metrics::gauge!(telemetry::LIVE_SUBSCRIPTIONS).increment(now as f64 - before as f64);
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
        let heartbeat = self.config.heartbeat;
        // One timer for the next ping and the credentials' end, whichever
        // comes first: an idle session holds one, not two.
        let expires = expiry_deadline(expires_at);
        let mut next_ping = tokio::time::Instant::now() + heartbeat;
        let wake_at =
            |next_ping| expires.map_or(next_ping, |e: tokio::time::Instant| e.min(next_ping));
        // On the heap: held across every await of the loop, it would
        // otherwise add its size to the task's largest state.
        let mut timer = Box::pin(tokio::time::sleep_until(wake_at(next_ping)));
        let mut last_seen = Instant::now();
        let mut subs = Subscriptions::default();
        loop {
            let event = tokio::select! {
                f = incoming.next() => Event::Frame(f),
                b = next_batch(&mut subs) => Event::Batch(b),
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if expires.is_some_and(|e| now >= e) {
                        Event::Expired
                    } else {
                        // Late ticks are not made up for: the next ping
                        // is a heartbeat after this one.
                        next_ping = now + heartbeat;
                        timer.as_mut().reset(wake_at(next_ping));
                        Event::Tick
                    }
                }
                () = self.engine.lifecycle.draining() => Event::Draining,
            };
            // Nothing is delivered past the credentials' end, whichever
            // event woke the loop.
            let event = if expired(expires_at) {
                Event::Expired
            } else {
                event
            };
            match event {
                Event::Frame(None)
                | Event::Frame(Some(WsFrame::Close | WsFrame::CloseWith { .. })) => return Ok(()),
                Event::Frame(Some(frame)) => {
                    last_seen = Instant::now();
                    match frame {
                        WsFrame::Text(text) => {
                            // Boxed: a message's work (a catch-up reading
                            // pages) is large and rare, and would otherwise
                            // size every idle session's task.
                            Box::pin(self.on_message(ctx, &text, &mut subs, out)).await?;
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
                        WsFrame::Pong(_) | WsFrame::Close | WsFrame::CloseWith { .. } => {}
                    }
                }
                Event::Batch(Ok(batch)) => {
                    let (mut batches, lagged) =
                        queued_after(batch, &mut subs, self.engine.limits.max_pull_bytes);
                    // A gap in the log (compaction or erasure overtook the
                    // fan-out): catch up by pull, which checks the horizon.
                    let gap = batches.iter().any(|b| b.gap);
                    batches.retain(|b| !b.gap);
                    if !batches.is_empty() {
                        for sub in &mut subs.subs {
                            self.deliver(ctx, &batches, sub, out).await?;
                        }
                    }
                    if lagged || gap {
                        Box::pin(self.resync(ctx, &mut subs, out)).await?;
                    }
                }
                Event::Batch(Err(broadcast::error::RecvError::Lagged(_))) => {
                    Box::pin(self.resync(ctx, &mut subs, out)).await?;
                }
                Event::Batch(Err(broadcast::error::RecvError::Closed)) => {
                    subs = Subscriptions::default()
                }
                Event::Expired => return self.end_expired(out).await,
                Event::Draining => {
                    // 1012: service restart. Clients reconnect (to another
                    // instance) from their cursor and lose nothing.
                    let close = WsFrame::CloseWith {
                        code: 1012,
                        reason: "server restarting; reconnect".into(),
                    };
                    self.send(out, close).await?;
                    return Err(Stop("shutdown"));
                }
                Event::Tick => {
                    if last_seen.elapsed() > self.config.heartbeat_timeout {
                        return Err(Stop("heartbeat_timeout"));
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
        let inner = self.engine;
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
        let msg = match parse_message(text) {
            Ok(m) => m,
            Err(e) => return self.send(out, error_frame(&e, None)).await,
        };
        match msg {
            ClientMessage::Ping => self.send(out, text_frame(&json!({"type": "pong"}))).await,
            ClientMessage::Unsubscribe { id } => {
                subs.subs.retain(|s| s.id != id);
                self.info.unsubscribed(&id);
                self.count_subscriptions(subs.subs.len());
                Ok(())
            }
            ClientMessage::Subscribe {
                id,
                cursor,
                models,
                shape,
                params,
            } => {
                let fail = |e: SyncError| error_frame(&e, Some(&id));
                if id.len() > 64 {
                    let e = SyncError::new(
                        ErrorCode::InvalidBody,
                        "subscription id longer than 64 bytes",
                    );
                    return self.send(out, fail(e)).await;
                }
                if let Some(bad) = models
                    .iter()
                    .flatten()
                    .find(|m| !self.engine.knows_model(m))
                {
                    let e =
                        SyncError::new(ErrorCode::UnknownModel, format!("unknown model {bad:?}"));
                    return self.send(out, fail(e)).await;
                }
                let shape = match shape {
                    None => None,
                    Some(_) if models.is_some() => {
                        let e = SyncError::new(
                            ErrorCode::InvalidBody,
                            "a subscription names models or a shape, not both",
                        );
                        return self.send(out, fail(e)).await;
                    }
                    Some(name) => match inner.bind_shape(ctx, &name, params.as_ref()) {
                        Ok((shape, bound)) => Some(ShapeView {
                            shape: shape.clone(),
                            bound,
                            held: HashSet::new(),
                            lookups: None,
                        }),
                        Err(e) => return self.send(out, fail(e)).await,
                    },
                };
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
                    inner.fanout.ensure_started();
                    subs.rx = Some(
                        inner
                            .fanout
                            .subscribe(&ctx.tenant_id, self.config.live_buffer),
                    );
                    inner.fanout.wait_ready().await;
                }
                let mut sub = Subscription {
                    id,
                    cursor,
                    models,
                    shape,
                };
                self.count_subscriptions(subs.subs.len());
                self.info.subscribed(&sub.id, sub.models.as_deref());
                self.catch_up(ctx, &mut sub, out).await?;
                subs.subs.push(sub);
                self.count_subscriptions(subs.subs.len());
                Ok(())
            }
        }
    }

    /// Send everything after the subscription's cursor by pull, then `synced`.
    async fn catch_up<K>(&self, ctx: &Ctx, sub: &mut Subscription, out: &mut K) -> Result<(), Stop>
    where
        K: Sink<WsFrame> + Unpin,
    {
        if sub.shape.is_some() {
            return self.shape_bootstrap(ctx, sub, out).await;
        }
        let codec = &self.engine.cursors;
        loop {
            // A long catch-up does not outlive the credentials either.
            if expired(self.expires_at) {
                return self.end_expired(out).await;
            }
            let opts = PullOptions {
                cursor: Some(codec.encode(&ctx.tenant_id, sub.cursor)),
                limit: None,
                wait: None,
            };
            // Payloads pass through as stored unless `can_read` needs them
            // parsed (they were validated on the way in).
            let page = match self.engine.pull_body(ctx, opts).await {
                Ok(p) => p,
                Err(e) => {
                    self.send(out, error_frame(&e, Some(&sub.id))).await?;
                    return Err(Stop("catch_up_failed"));
                }
            };
            // The page is dropped once its message is made: a send that
            // waits for the outgoing budget holds the message only.
            let (frame, cursor, has_more) = match page {
                PullBody::Raw(raw) => {
                    let made = raw
                        .into_changes_message(&sub.id, |model, seq| sub.wants_change(model, seq));
                    match made {
                        Ok((text, cursor, has_more)) => (text.map(WsFrame::Text), cursor, has_more),
                        Err(e) => {
                            self.send(out, error_frame(&e, Some(&sub.id))).await?;
                            return Err(Stop("catch_up_failed"));
                        }
                    }
                }
                PullBody::Parsed(page) => {
                    let refs: Vec<&PulledChange> =
                        page.changes.iter().filter(|c| sub.wants(c)).collect();
                    let frame =
                        (!refs.is_empty()).then(|| changes_frame(&sub.id, &refs, &page.cursor));
                    (frame, page.cursor, page.has_more)
                }
            };
            if let Some(frame) = frame {
                self.send(out, frame).await?;
            }
            sub.cursor = codec
                .decode(&ctx.tenant_id, &cursor)
                .map_err(|_| Stop("catch_up_failed"))?;
            self.info.sent_up_to(sub.cursor);
            if !has_more {
                let mut synced = json!({"type": "synced", "cursor": cursor});
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
        self.engine
            .fanout
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(telemetry::RESYNCS).increment(1);
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
        if sub.shape.is_some() {
            // Boxed: judging rows reads the database, a large state that
            // would otherwise size every idle session's task.
            return Box::pin(self.deliver_shape(ctx, batches, sub, out)).await;
        }
        let last = batches.last().map_or(0, |b| b.last_seq());
        if last <= sub.cursor {
            return Ok(());
        }
        let codec = &self.engine.cursors;
        let unfiltered = !self.engine.read.filters()
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
                        b.changes.iter().filter(|c| {
                            sub.wants(c) && self.engine.read.change_readable(ctx, c, &b.rows)
                        })
                    })
                    .collect();
                (!refs.is_empty())
                    .then(|| changes_frame(&sub.id, &refs, &codec.encode(&ctx.tenant_id, last)))
            }
        };
        sub.cursor = last;
        let Some(frame) = frame else {
            return Ok(());
        };
        self.send(out, frame).await?;
        self.info.sent_up_to(last);
        if let Some(batch) = batches.last() {
            metrics::histogram!(telemetry::FANOUT_LAG_SECONDS).record(batch.published.elapsed());
        }
        Ok(())
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
                tokio::time::timeout(self.config.heartbeat_timeout, sending).await
            }
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop("send_failed")),
            Err(_) => Err(Stop("send_timeout")),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_json_is_malformed_and_json_of_the_wrong_shape_is_invalid() {
        let valid = r#"{"type":"subscribe","id":"a","cursor":null,"models":["todo"]}"#;
        assert!(parse_message(valid).is_ok());
        // Every cut-off prefix of a valid message, and classic non-JSON.
        for end in 1..valid.len() {
            let e = parse_message(&valid[..end]).err().expect("refused");
            assert_eq!(e.code(), ErrorCode::MalformedJson, "{:?}", &valid[..end]);
        }
        for text in ["[1,", "{", "nope", "{\"type\":", "[1, 2", "\u{0}"] {
            let e = parse_message(text).err().expect("refused");
            assert_eq!(e.code(), ErrorCode::MalformedJson, "{text}");
        }
        for text in [
            "[1]",
            "{}",
            "{\"type\":\"shout\"}",
            "null",
            "{\"type\":\"subscribe\",\"models\":\"todo\"}",
        ] {
            let e = parse_message(text).err().expect("refused");
            assert_eq!(e.code(), ErrorCode::InvalidBody, "{text}");
        }
    }
}
