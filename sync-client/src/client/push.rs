//! The push loop: the outbox in batches, with backoff; refusals set aside.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use better_sync_core::protocol::Change as WireChange;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::events::Event;
use crate::store::{OutboxEntry, Write};

use super::state::*;

impl Inner {
    /// The oldest outbox entries that fit one push.
    pub(crate) async fn next_batch(&self, max_count: usize, max_bytes: usize) -> Vec<OutboxEntry> {
        let st = self.state.lock().await;
        let mut bytes = 2;
        let mut batch = Vec::new();
        for e in st.outbox.iter().take(max_count) {
            if !batch.is_empty() && bytes + e.text.len() + 1 > max_bytes {
                break;
            }
            bytes += e.text.len() + 1;
            batch.push(e.clone());
        }
        batch
    }

    /// Push the outbox in batches; then wait for more while connected.
    /// Network and server failures keep the outbox and retry with backoff; a
    /// change the server refuses for its content is quarantined.
    pub(crate) async fn push_loop(self: Arc<Self>) {
        let mut attempt = 0u32;
        let mut split_limit = MAX_BATCH;
        loop {
            let limits = self
                .cached_metadata()
                .map(|m| m.limits.clone())
                .unwrap_or_default();
            let max_count = MAX_BATCH.min(limits.max_batch.max(1)).min(split_limit);
            let max_bytes = MAX_BATCH_BYTES.min(limits.max_body_bytes.saturating_sub(1024));
            let batch = self.next_batch(max_count, max_bytes).await;
            if batch.is_empty() {
                if self.stop_pushing_if_disconnected() {
                    return;
                }
                self.work.notified().await;
                continue;
            }
            // The server's limits and protocol version, before the first push.
            if let Err(e) = self.metadata().await {
                self.note_failure(&e);
                self.sleep_backoff("push", &mut attempt, e).await;
                continue;
            }
            lock(&self.status).in_flight = batch.len();
            let changes: Vec<WireChange> = batch.iter().map(|e| e.change.clone()).collect();
            let started = Instant::now();
            let result = self.remote.push(&self.actor, &changes).await;
            lock(&self.status).in_flight = 0;
            match result {
                Ok(answer) => {
                    let keys: HashSet<i64> = batch.iter().map(|e| e.key).collect();
                    let event = Event::Push {
                        changes: batch.len(),
                        duplicates: answer.results.iter().filter(|r| r.duplicate).count(),
                        duration: started.elapsed(),
                    };
                    if let Err(e) = self.acknowledge(&keys, event).await {
                        // The server has the changes; pushing them again is a replay.
                        self.note_failure(&e);
                        self.sleep_backoff("push", &mut attempt, e).await;
                        continue;
                    }
                    attempt = 0;
                    split_limit = MAX_BATCH;
                }
                Err(e) => {
                    self.note_failure(&e);
                    if !e.is_about_content() {
                        self.sleep_backoff("push", &mut attempt, e).await;
                    } else if let Some(i) = e.index().filter(|i| *i < batch.len()) {
                        self.reject_or_wait(&batch[i], e, &mut attempt).await;
                    } else if batch.len() > 1 {
                        // Which change is at fault is unknown: halve until it shows.
                        split_limit = batch.len().div_ceil(2);
                    } else {
                        self.reject_or_wait(&batch[0], e, &mut attempt).await;
                    }
                }
            }
        }
    }

    /// When disconnected, unregister this push loop (so that a `connect()`
    /// racing with its exit starts a new one) and say it should end.
    pub(crate) fn stop_pushing_if_disconnected(&self) -> bool {
        let mut tasks = lock(&self.tasks);
        if self.connected.load(Ordering::SeqCst) {
            return false;
        }
        let me = tokio::task::try_id();
        if tasks.push.as_ref().is_some_and(|h| Some(h.id()) == me) {
            tasks.push = None;
        }
        true
    }

    pub(crate) async fn reject_or_wait(
        &self,
        entry: &OutboxEntry,
        error: ClientError,
        attempt: &mut u32,
    ) {
        if let Err(e) = self.reject(entry, error).await {
            self.note_failure(&e);
            self.sleep_backoff("push", attempt, e).await;
        }
    }

    /// Take acknowledged changes out of the outbox; the acknowledgement's
    /// event is reported outside the state lock.
    pub(crate) async fn acknowledge(
        &self,
        keys: &HashSet<i64>,
        event: Event,
    ) -> Result<(), ClientError> {
        {
            let mut st = self.state.lock().await;
            self.store
                .write(&Write {
                    outbox_remove: keys.iter().copied().collect(),
                    ..Write::default()
                })
                .await?;
            st.remove_outbox(keys);
        }
        self.note_success();
        self.emit(event);
        let st = self.state.lock().await;
        self.report_outbox(st.outbox.len());
        Ok(())
    }

    /// Quarantine a change the server refused for its content: take it out
    /// of the outbox so that it cannot block the queue, keep it with the
    /// error, and rebuild local state so that its optimistic effect goes.
    pub(crate) async fn reject(
        &self,
        entry: &OutboxEntry,
        error: ClientError,
    ) -> Result<(), ClientError> {
        let mut st = self.state.lock().await;
        let rejected = Rejected {
            change: entry.change.clone(),
            error: error.clone(),
            at_ms: now_ms(),
        };
        let mut list = st.rejected.clone();
        list.push(rejected);
        let excess = list.len().saturating_sub(MAX_REJECTED_KEPT);
        list.drain(..excess);
        self.store
            .write(&Write {
                outbox_remove: vec![entry.key],
                meta: vec![
                    (
                        "rejected",
                        Value::Array(list.iter().map(Rejected::to_json).collect()),
                    ),
                    ("resync", json!(true)),
                ],
                ..Write::default()
            })
            .await?;
        st.remove_outbox(&HashSet::from([entry.key]));
        st.rejected = list;
        st.needs_resync = true;
        self.report_outbox(st.outbox.len());
        drop(st);
        tracing::warn!(op_id = %entry.change.op_id, %error, "sync client: change rejected by the server");
        self.emit(Event::Rejected {
            change: entry.change.clone(),
            error,
        });
        self.resync.notify_one();
        Ok(())
    }
}
