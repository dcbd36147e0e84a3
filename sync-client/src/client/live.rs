//! Live changes: a WebSocket subscription, or long-poll when it keeps failing.

use std::time::{Duration, Instant};

use crate::error::ClientError;
use crate::events::{Event, LiveMode, PullSource};
use crate::remote::{LiveMessage, Metadata};

use super::state::*;

impl Inner {
    /// Follow live changes over a WebSocket until it fails or a resync is due.
    pub(crate) async fn live_ws(
        &self,
        meta: &Metadata,
        attempt: &mut u32,
        synced: &mut bool,
    ) -> Result<(), ClientError> {
        let cursor = self.cursor().await;
        let mut sub = self
            .remote
            .subscribe(cursor.as_deref(), self.opts.models.as_deref())
            .await?;
        self.note_success();
        self.set_live(Some(LiveMode::WebSocket));
        // The server pings every heartbeat: silence for two means a dead link.
        let silence = Duration::from_secs_f64(meta.heartbeat_secs.clamp(0.01, 3600.0) * 2.0 + 5.0);
        loop {
            let message = tokio::select! {
                m = tokio::time::timeout(silence, sub.next()) => m,
                () = self.resync.notified() => {
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
                // The silence timer starts again: the link is alive.
                Some(LiveMessage::Heartbeat) => {}
            }
        }
    }

    /// Follow live changes by long-poll until `until`, a failure, or a resync.
    pub(crate) async fn live_poll(
        &self,
        meta: &Metadata,
        attempt: &mut u32,
        until: Option<Instant>,
    ) -> Result<(), ClientError> {
        self.set_live(Some(LiveMode::LongPoll));
        // Without the long-poll feature (or with a zero wait), poll plainly
        // and pause between empty answers instead of hammering the server.
        let wait = if meta.has("long-poll") {
            self.opts.long_poll_wait.min(Duration::from_secs_f64(
                meta.limits.max_wait_secs.clamp(0.0, 86_400.0),
            ))
        } else {
            Duration::ZERO
        };
        let mut caught_up = false;
        loop {
            if until.is_some_and(|t| Instant::now() >= t) {
                return Ok(());
            }
            let cursor = self.cursor().await;
            let pull = self
                .remote
                .pull(cursor.as_deref(), None, caught_up.then_some(wait));
            let page = tokio::select! {
                page = pull => page?,
                () = self.resync.notified() => return Ok(()),
            };
            if caught_up && page.changes.is_empty() && wait < PLAIN_POLL_PAUSE {
                tokio::select! {
                    () = tokio::time::sleep(PLAIN_POLL_PAUSE) => {}
                    () = self.resync.notified() => return Ok(()),
                }
            }
            self.note_success();
            let has_more = page.has_more;
            let cursor = page.cursor.clone();
            self.apply_remote(page.changes, page.cursor, PullSource::Http)
                .await?;
            if !has_more && !caught_up {
                *attempt = 0;
                self.emit(Event::Synced { cursor });
            }
            caught_up = !has_more;
        }
    }
}
