//! Live changes: a WebSocket subscription, or long-poll when it keeps failing.
//!
//! One WebSocket carries the subscription to whole models (unless the client
//! holds shapes only) and one per shape; long-poll runs a pull per source
//! side by side, so a quiet shape never delays a busy one.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::error::ClientError;
use crate::events::{Event, LiveMode, PullSource};
use crate::remote::{LiveMessage, Metadata};

use super::shapes::refuses_shape;
use super::state::*;

/// A shape's reset under way on the WebSocket: the ids sent since it began.
type Resets = HashMap<String, HashSet<String>>;

impl Inner {
    /// Follow live changes over a WebSocket until it fails, a resync is
    /// due, or the shape subscriptions change.
    pub(crate) async fn live_ws(
        &self,
        meta: &Metadata,
        attempt: &mut u32,
        synced: &mut bool,
    ) -> Result<(), ClientError> {
        let mut shapes_changed = self.shapes_changed.subscribe();
        shapes_changed.borrow_and_update();
        let cursor = self.cursor().await;
        let shapes = self.shape_keys().await;
        let mut sub = self.remote.open_live().await?;
        if !self.opts.shapes_only {
            sub.subscribe(None, cursor.as_deref(), self.opts.models.as_deref())
                .await?;
        }
        // Subscription ids of this connection: short, and never a shape's
        // name (which may be up to 64 bytes already).
        let mut ids: HashMap<String, String> = HashMap::new();
        for (n, (key, name, params)) in shapes.into_iter().enumerate() {
            let id = format!("shape-{n}");
            sub.subscribe_shape(&id, &name, &params).await?;
            ids.insert(id, key);
        }
        self.note_success();
        self.set_live(Some(LiveMode::WebSocket));
        let mut resets = Resets::new();
        // The server pings every heartbeat: silence for two means a dead link.
        let silence = Duration::from_secs_f64(meta.heartbeat_secs.clamp(0.01, 3600.0) * 2.0 + 5.0);
        loop {
            let message = tokio::select! {
                m = tokio::time::timeout(silence, sub.next()) => m,
                () = self.resync.notified() => {
                    sub.close().await;
                    return Ok(());
                }
                _ = shapes_changed.changed() => {
                    sub.close().await;
                    return Ok(());
                }
            };
            let message = message.map_err(|_| {
                ClientError::network("the WebSocket went silent (no heartbeat from the server)")
            })??;
            match message {
                None => return Err(ClientError::network("the server closed the WebSocket")),
                Some(LiveMessage::Changes { changes, cursor }) => {
                    self.apply_remote(changes, cursor, PullSource::WebSocket)
                        .await?;
                }
                Some(LiveMessage::Synced { cursor }) => {
                    self.apply_remote(Vec::new(), cursor.clone(), PullSource::WebSocket)
                        .await?;
                    *synced = true;
                    *attempt = 0;
                    self.note_success();
                    self.emit(Event::Synced { cursor });
                }
                Some(LiveMessage::Rows {
                    id,
                    model,
                    rows,
                    retracts,
                    reset,
                    cursor: _,
                }) => {
                    let Some(key) = ids.get(&id) else {
                        continue;
                    };
                    if reset {
                        resets.insert(key.clone(), HashSet::new());
                    }
                    if let Some(sent) = resets.get_mut(key) {
                        sent.extend(rows.iter().map(|r| r.id.clone()));
                    }
                    let count = rows.len() + retracts.len();
                    self.apply_shape_rows(key, &model, &rows, &retracts, None, None)
                        .await?;
                    if count > 0 {
                        self.emit(Event::Pull {
                            changes: count,
                            source: PullSource::WebSocket,
                        });
                    }
                }
                Some(LiveMessage::SubscriptionSynced { id, cursor }) => {
                    let Some(key) = ids.get(&id) else {
                        continue;
                    };
                    if let Some(sent) = resets.remove(key) {
                        let model = self.shape_model(key).await;
                        if let Some(model) = model {
                            self.apply_shape_rows(key, &model, &[], &[], Some(&sent), Some(cursor))
                                .await?;
                        }
                    }
                    *synced = true;
                    *attempt = 0;
                    self.note_success();
                    self.shape_synced(key).await;
                }
                Some(LiveMessage::SubscriptionError { id, error }) => {
                    if let Some(key) = ids.remove(&id) {
                        if refuses_shape(&error) {
                            // Our own change of the subscriptions: this
                            // connection goes on without that shape.
                            let before = *shapes_changed.borrow();
                            self.refuse_shape(&key, error).await?;
                            if *shapes_changed.borrow() == before + 1 {
                                shapes_changed.borrow_and_update();
                            }
                        } else {
                            return Err(error);
                        }
                    }
                }
                // The silence timer starts again: the link is alive.
                Some(LiveMessage::Heartbeat) => {}
            }
        }
    }

    /// Follow live changes by long-poll until `until`, a failure, a
    /// resync, or a change of the shape subscriptions.
    ///
    /// The polls run side by side in one `FuturesUnordered`; everything
    /// that takes the state lock happens inside them, never in this loop
    /// between two polls of the set (a poll the lock was handed to would
    /// then wait for a loop that waits for the lock).
    pub(crate) async fn live_poll(
        &self,
        meta: &Metadata,
        attempt: &mut u32,
        until: Option<Instant>,
    ) -> Result<(), ClientError> {
        self.set_live(Some(LiveMode::LongPoll));
        let mut shapes_changed = self.shapes_changed.subscribe();
        shapes_changed.borrow_and_update();
        // Without the long-poll feature (or with a zero wait), poll plainly
        // and pause between empty answers instead of hammering the server.
        let wait = if meta.has("long-poll") {
            self.opts.long_poll_wait.min(Duration::from_secs_f64(
                meta.limits.max_wait_secs.clamp(0.0, 86_400.0),
            ))
        } else {
            Duration::ZERO
        };
        let shapes = self.shape_keys().await;
        let mut polls: FuturesUnordered<Poll<'_>> = FuturesUnordered::new();
        if !self.opts.shapes_only {
            polls.push(Box::pin(self.poll_models(false, wait)));
        }
        for (key, _, _) in shapes {
            polls.push(Box::pin(self.poll_shape(key, false, wait)));
        }
        let mut models_synced = false;
        loop {
            let sleep_until = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = polls.next() => next,
                () = self.resync.notified() => return Ok(()),
                _ = shapes_changed.changed() => return Ok(()),
                () = sleep_until => return Ok(()),
            };
            let Some((source, result)) = next else {
                // Nothing to follow (shapes only, none subscribed).
                tokio::select! {
                    () = self.resync.notified() => return Ok(()),
                    _ = shapes_changed.changed() => return Ok(()),
                    () = tokio::time::sleep(PLAIN_POLL_PAUSE) => continue,
                }
            };
            let caught_up = result?;
            self.note_success();
            match source {
                Source::Models(cursor) => {
                    if caught_up && !models_synced {
                        *attempt = 0;
                        self.emit(Event::Synced { cursor });
                    }
                    models_synced |= caught_up;
                    polls.push(Box::pin(self.poll_models(caught_up, wait)));
                }
                Source::Shape(key, first_catch_up) => {
                    if first_catch_up {
                        *attempt = 0;
                    }
                    polls.push(Box::pin(self.poll_shape(key, caught_up, wait)));
                }
            }
        }
    }

    /// One pull of whole models (long-polled once caught up).
    async fn poll_models(
        &self,
        caught_up: bool,
        wait: Duration,
    ) -> (Source, Result<bool, ClientError>) {
        let result = async {
            let cursor = self.cursor().await;
            let page = self
                .remote
                .pull(cursor.as_deref(), None, caught_up.then_some(wait))
                .await?;
            if caught_up && page.changes.is_empty() && wait < PLAIN_POLL_PAUSE {
                tokio::time::sleep(PLAIN_POLL_PAUSE).await;
            }
            let has_more = page.has_more;
            let cursor = page.cursor.clone();
            self.apply_remote(page.changes, page.cursor, PullSource::Http)
                .await?;
            Ok((cursor, !has_more))
        }
        .await;
        match result {
            Ok((cursor, done)) => (Source::Models(cursor), Ok(done)),
            Err(e) => (Source::Models(String::new()), Err(e)),
        }
    }

    /// One pull of a shape (long-polled once caught up); a refused shape is
    /// dropped and its poll ends there.
    async fn poll_shape(
        &self,
        key: String,
        caught_up: bool,
        wait: Duration,
    ) -> (Source, Result<bool, ClientError>) {
        if self.shape_request(&key).await.is_none() {
            // Unsubscribed or refused: the round restarts without it.
            return std::future::pending().await;
        }
        let mut result = self.pull_shape_once(&key, caught_up.then_some(wait)).await;
        if caught_up
            && wait < PLAIN_POLL_PAUSE
            && let Ok(true) = result
        {
            tokio::time::sleep(PLAIN_POLL_PAUSE).await;
        }
        if let Err(e) = &result
            && refuses_shape(e)
        {
            let error = e.clone();
            result = self.refuse_shape(&key, error).await.map(|()| true);
        }
        let first = !caught_up && matches!(result, Ok(true));
        if first {
            // Here, not in the loop that polls this future: that loop must
            // never wait for the state lock itself, or a poll granted the
            // lock while the loop waits could never run (a deadlock).
            self.shape_synced(&key).await;
        }
        (Source::Shape(key, first), result)
    }

    /// The model a shape subscription holds rows of, once known.
    async fn shape_model(&self, key: &str) -> Option<String> {
        let st = self.state.lock().await;
        st.shapes.get(key).and_then(|s| s.model.clone())
    }
}

/// Which poll answered: whole models (with the cursor reached) or a shape
/// (with whether it just caught up for the first time in this round).
enum Source {
    Models(String),
    Shape(String, bool),
}

type Poll<'a> = Pin<Box<dyn Future<Output = (Source, Result<bool, ClientError>)> + Send + 'a>>;
