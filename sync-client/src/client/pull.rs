//! Sync rounds: bootstrap from snapshots when needed, then remote changes
//! folded into local state.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use better_sync_core::hlc::Hlc;
use better_sync_core::protocol::PulledChange;
use better_sync_core::{RowState, Stamp};
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::events::{Event, PullSource};
use crate::options::Transport;
use crate::remote::Metadata;
use crate::store::Write;

use super::state::*;

impl Inner {
    /// Rounds of bootstrap (when needed) and live changes; a failed round is
    /// retried with backoff, a cursor error rebuilds local state.
    pub(crate) async fn sync_loop(self: Arc<Self>) {
        let mut attempt = 0u32;
        let mut ws_failures = 0u32;
        let mut long_poll_until: Option<Instant> = None;
        loop {
            let result = self
                .sync_round(&mut attempt, &mut ws_failures, &mut long_poll_until)
                .await;
            if let Err(e) = result {
                if e.is_cursor_error() {
                    self.emit(Event::Resync {
                        reason: e.code().to_owned(),
                    });
                    if let Err(store) = self.mark_resync().await {
                        self.note_failure(&store);
                    }
                }
                self.note_failure(&e);
                self.sleep_backoff("sync", &mut attempt, e).await;
            }
        }
    }

    pub(crate) async fn mark_resync(&self) -> Result<(), ClientError> {
        let mut st = self.state.lock().await;
        self.store
            .write(&Write {
                meta: vec![("resync", json!(true))],
                ..Write::default()
            })
            .await?;
        st.needs_resync = true;
        Ok(())
    }

    pub(crate) async fn sync_round(
        &self,
        attempt: &mut u32,
        ws_failures: &mut u32,
        long_poll_until: &mut Option<Instant>,
    ) -> Result<(), ClientError> {
        let meta = self.metadata().await?;
        let (resync, bootstrap) = {
            let st = self.state.lock().await;
            (
                st.needs_resync,
                st.cursor.is_none() && !self.opts.shapes_only,
            )
        };
        if resync || bootstrap {
            self.bootstrap(&meta, resync).await?;
        }
        let has_shapes = !self.state.lock().await.shapes.is_empty();
        let ws_allowed = self.opts.transport == Transport::WebSocket
            && meta.has("websocket")
            && (!has_shapes || meta.has("shape-subscribe"));
        if ws_allowed && long_poll_until.is_none_or(|t| Instant::now() >= t) {
            *long_poll_until = None;
            let mut synced = false;
            let result = self.live_ws(&meta, attempt, &mut synced).await;
            if synced {
                *ws_failures = 0;
            } else if let Err(e) = &result
                && e.status() != 401
                && e.status() != 429
            {
                *ws_failures += 1;
                if *ws_failures >= WS_FAILURES_BEFORE_FALLBACK {
                    tracing::info!(error = %e, "sync client: WebSocket failing, long-polling for a while");
                    *ws_failures = 0;
                    *long_poll_until = Some(Instant::now() + LONG_POLL_PERIOD);
                }
            }
            result
        } else {
            let until = if ws_allowed { *long_poll_until } else { None };
            self.live_poll(&meta, attempt, until).await
        }
    }

    /// Fill local state from the server: snapshots of every model (or a
    /// pull from the log's start when there are none to read), then the
    /// queued changes on top. With `discard`, local rows are replaced
    /// (after a rejection or a cursor error); else joined.
    pub(crate) async fn bootstrap(
        &self,
        meta: &Metadata,
        discard: bool,
    ) -> Result<(), ClientError> {
        let models = self
            .opts
            .models
            .clone()
            .or_else(|| meta.models.clone())
            .unwrap_or_default();
        let mut fresh = Rows::new();
        let mut cursor: Option<String> = None;
        let mut received = 0usize;
        let source;
        if self.opts.shapes_only {
            source = PullSource::Snapshot;
        } else if meta.has("snapshot") && !models.is_empty() {
            source = PullSource::Snapshot;
            for model in &models {
                let mut after: Option<String> = None;
                loop {
                    let page = self.remote.snapshot(model, after.as_deref(), None).await?;
                    // The first page's cursor: every change after it is pulled
                    // again, and the join makes the overlap harmless.
                    cursor.get_or_insert(page.cursor.clone());
                    received += page.rows.len();
                    let rows = fresh.entry(model.clone()).or_default();
                    for row in &page.rows {
                        let Some(state) = RowState::from_parts(&row.value, &row.clocks) else {
                            tracing::warn!(
                                model,
                                id = row.id,
                                "sync client: snapshot row skipped, value and clocks do not fit"
                            );
                            continue;
                        };
                        self.observe_state(&state);
                        rows.entry(row.id.clone()).or_default().merge(&state);
                    }
                    match (page.has_more, page.next_after) {
                        (true, Some(next)) => after = Some(next),
                        (true, None) => {
                            return Err(ClientError::bad_response(
                                "snapshot page with has_more but no next_after",
                            ));
                        }
                        (false, _) => break,
                    }
                }
            }
        } else {
            source = PullSource::Http;
            let mut at: Option<String> = None;
            loop {
                let page = self.remote.pull(at.as_deref(), None, None).await?;
                received += page.changes.len();
                for c in page.changes.iter().filter(|c| self.syncs_model(&c.model)) {
                    if let Some(stamp) = self.stamp_of(c) {
                        fresh
                            .entry(c.model.clone())
                            .or_default()
                            .entry(c.pk.clone())
                            .or_default()
                            .apply(c.op, &c.payload, &stamp);
                    }
                }
                at = Some(page.cursor);
                if !page.has_more {
                    break;
                }
            }
            cursor = at;
        }
        // The shapes' rows, read again: what each holds from now on.
        let mut shape_reads = Vec::new();
        for (key, name, params) in self.shape_keys().await {
            match self.read_shape(&name, &params).await {
                Ok(read) => shape_reads.push((key, read)),
                Err(e) if super::shapes::refuses_shape(&e) => self.refuse_shape(&key, e).await?,
                Err(e) => return Err(e),
            }
        }
        let mut st = self.state.lock().await;
        // A change refused while the snapshots were read: its optimistic
        // effect is in the old rows, so they go now rather than in a later round.
        let discard = discard || st.needs_resync;
        let mut rows = fresh;
        let mut shapes = st.shapes.clone();
        let mut held_now: HashSet<(&str, &str)> = HashSet::new();
        for (key, read) in &shape_reads {
            let Some(sub) = shapes.get_mut(key) else {
                continue;
            };
            sub.model = Some(read.model.clone());
            sub.cursor = Some(read.cursor.clone());
            sub.held = read.rows.iter().map(|r| r.id.clone()).collect();
            let target = rows.entry(read.model.clone()).or_default();
            for r in &read.rows {
                received += 1;
                if let Some(state) = RowState::from_parts(&r.value, &r.clocks) {
                    self.observe_state(&state);
                    target.entry(r.id.clone()).or_default().merge(&state);
                    held_now.insert((read.model.as_str(), r.id.as_str()));
                }
            }
        }
        let mut models_touched: HashSet<String> = rows.keys().cloned().collect();
        models_touched.extend(st.rows.keys().cloned());
        if !discard {
            for (model, old) in &st.rows {
                let whole = self.whole_model(model);
                let target = rows.entry(model.clone()).or_default();
                for (id, state) in old {
                    // A row no shape holds any more leaves with the reset.
                    if whole || held_now.contains(&(model.as_str(), id.as_str())) {
                        target.entry(id.clone()).or_default().merge(state);
                    }
                }
            }
        }
        fold_outbox(&mut rows, &st.outbox);
        let mut write = Write {
            clear_rows: true,
            shape_clear: shapes.keys().cloned().collect(),
            meta: vec![
                ("cursor", cursor.clone().map_or(Value::Null, Value::String)),
                ("resync", Value::Null),
                ("clock", json!(self.clock.last().to_string())),
                ("shapes", super::shapes::shapes_json(&shapes)),
            ],
            ..Write::default()
        };
        for (key, sub) in &shapes {
            if let Some(model) = &sub.model {
                for id in &sub.held {
                    write
                        .shape_hold
                        .push((key.clone(), model.clone(), id.clone()));
                }
            }
        }
        for (model, by_id) in &rows {
            for (id, state) in by_id {
                write.rows.push((model.clone(), id.clone(), state.clone()));
            }
        }
        self.store.write(&write).await?;
        st.rows = rows;
        st.cursor = cursor;
        st.needs_resync = false;
        std::mem::swap(&mut st.shapes, &mut shapes);
        drop(st);
        self.notify_models(models_touched);
        self.note_success();
        self.emit(Event::Pull {
            changes: received,
            source,
        });
        Ok(())
    }

    pub(crate) fn observe_state(&self, state: &RowState) {
        let stamps = state
            .tombstone
            .iter()
            .chain(state.inserted.iter())
            .chain(state.fields.values().map(|(_, s)| s));
        for s in stamps {
            self.clock.observe(s.clock);
        }
    }

    pub(crate) fn stamp_of(&self, c: &PulledChange) -> Option<Stamp> {
        match c.updated_at.parse::<Hlc>() {
            Ok(clock) => {
                self.clock.observe(clock);
                Some(Stamp::new(clock, c.actor.clone(), c.op_id.clone()))
            }
            Err(e) => {
                tracing::warn!(op_id = c.op_id, error = %e, "sync client: pulled change skipped, bad clock");
                None
            }
        }
    }

    /// Fold remote changes into local rows and store the cursor after them,
    /// in one transaction. Own changes coming back change nothing (the join
    /// is idempotent).
    pub(crate) async fn apply_remote(
        &self,
        changes: Vec<PulledChange>,
        cursor: String,
        source: PullSource,
    ) -> Result<(), ClientError> {
        let mut st = self.state.lock().await;
        if changes.is_empty() && st.cursor.as_deref() == Some(cursor.as_str()) {
            return Ok(());
        }
        let mut touched: BTreeMap<(String, String), (RowState, bool)> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for c in &changes {
            if !self.syncs_model(&c.model) {
                continue;
            }
            let Some(stamp) = self.stamp_of(c) else {
                continue;
            };
            let key = (c.model.clone(), c.pk.clone());
            let (row, dirty) = touched
                .entry(key)
                .or_insert_with(|| (st.row(&c.model, &c.pk).cloned().unwrap_or_default(), false));
            let changed = row.apply(c.op, &c.payload, &stamp);
            *dirty |= changed;
            if c.actor != self.actor && st.is_pending(&c.model, &c.pk) {
                conflicts.push(Event::Conflict {
                    model: c.model.clone(),
                    pk: c.pk.clone(),
                    op_id: c.op_id.clone(),
                    remote_lost: !changed,
                });
            }
        }
        let mut write = Write {
            meta: vec![("cursor", json!(cursor))],
            ..Write::default()
        };
        if !changes.is_empty() {
            write
                .meta
                .push(("clock", json!(self.clock.last().to_string())));
        }
        let mut models = HashSet::new();
        for ((model, id), (state, dirty)) in &touched {
            if *dirty {
                write.rows.push((model.clone(), id.clone(), state.clone()));
                models.insert(model.clone());
            }
        }
        self.store.write(&write).await?;
        for (model, id, state) in write.rows {
            st.put_row(&model, &id, state);
        }
        st.cursor = Some(cursor);
        drop(st);
        self.notify_models(models);
        if !changes.is_empty() {
            self.emit(Event::Pull {
                changes: changes.len(),
                source,
            });
        }
        for event in conflicts {
            self.emit(event);
        }
        Ok(())
    }

    pub(crate) async fn cursor(&self) -> Option<String> {
        self.state.lock().await.cursor.clone()
    }
}
