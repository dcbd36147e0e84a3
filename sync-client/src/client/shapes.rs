//! Shape subscriptions (PROTOCOL.md 16): the rows of server-defined subsets
//! of a model, held per subscription in the one local store.
//!
//! Every subscription remembers the ids of the rows it holds. Rows the
//! server sends are joined like snapshot rows (LWW by their stamps, so an
//! old answer never undoes a newer local or remote write) and held; a
//! retraction releases a row, and the row leaves the local store when no
//! other subscription holds it and its model is not replicated whole. A
//! reset (a fresh subscription, a restart, a membership change seen by
//! pull) releases the rows it does not send again. Over the WebSocket the
//! server tracks the shape; over HTTP the client bootstraps it from its
//! snapshot and follows it by shape pulls from that cursor.

use std::collections::HashSet;

use better_sync_core::RowState;
use better_sync_core::protocol::SnapshotRow;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::events::{Event, PullSource};
use crate::store::Write;

use super::state::{Inner, ShapeSub, ShapeSubs, State};

/// A subscription's key: the name and the parameters with their object
/// keys sorted, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are one shape.
pub(crate) fn shape_key(name: &str, params: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&o[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut key = format!("{name} ");
    canonical(params, &mut key);
    key
}

/// The subscriptions as stored in the meta table (held rows are in their
/// own table).
pub(crate) fn shapes_json(shapes: &ShapeSubs) -> Value {
    Value::Array(
        shapes
            .values()
            .map(|s| json!({"name": s.name, "params": s.params, "model": s.model, "cursor": s.cursor}))
            .collect(),
    )
}

/// The stored subscriptions, with the rows each holds.
pub(crate) fn shapes_from_store(
    meta: Option<&Value>,
    held: Vec<(String, String, String)>,
) -> ShapeSubs {
    let mut shapes = ShapeSubs::new();
    for s in meta.and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = s.get("name").and_then(Value::as_str) else {
            continue;
        };
        let params = s.get("params").cloned().unwrap_or(Value::Null);
        shapes.insert(
            shape_key(name, &params),
            ShapeSub {
                name: name.to_owned(),
                params,
                model: s.get("model").and_then(Value::as_str).map(str::to_owned),
                cursor: s.get("cursor").and_then(Value::as_str).map(str::to_owned),
                held: HashSet::new(),
            },
        );
    }
    for (key, model, id) in held {
        if let Some(sub) = shapes.get_mut(&key) {
            sub.model.get_or_insert(model);
            sub.held.insert(id);
        }
    }
    shapes
}

impl State {
    /// Whether a subscription other than `except` holds row `id` of `model`.
    pub(crate) fn held_elsewhere(&self, except: &str, model: &str, id: &str) -> bool {
        self.shapes.iter().any(|(key, s)| {
            key != except && s.model.as_deref() == Some(model) && s.held.contains(id)
        })
    }
}

/// A shape's rows as its snapshot gave them.
pub(crate) struct ShapeRead {
    pub(crate) model: String,
    pub(crate) cursor: String,
    pub(crate) rows: Vec<SnapshotRow>,
}

/// What one shape answer does to local state, written in one transaction
/// and then made visible.
#[derive(Default)]
struct ShapeUpdate {
    write: Write,
    hold: Vec<String>,
    release: Vec<String>,
    models: HashSet<String>,
}

impl Inner {
    /// Whether `model` is replicated whole (not only through shapes).
    pub(crate) fn whole_model(&self, model: &str) -> bool {
        !self.opts.shapes_only && self.syncs_model(model)
    }

    /// Join a shape answer's rows and hold them, release its retractions,
    /// and (with `replace`) release every held row not among `rows`: a
    /// reset's end. With `cursor`, the shape's pulls go on from there.
    pub(crate) async fn apply_shape_rows(
        &self,
        key: &str,
        model: &str,
        rows: &[SnapshotRow],
        retracts: &[String],
        replace: Option<&HashSet<String>>,
        cursor: Option<String>,
    ) -> Result<(), ClientError> {
        let mut st = self.state.lock().await;
        let Some(sub) = st.shapes.get(key) else {
            // Unsubscribed meanwhile: its rows went with it.
            return Ok(());
        };
        let mut up = ShapeUpdate::default();
        for r in rows {
            let Some(state) = RowState::from_parts(&r.value, &r.clocks) else {
                tracing::warn!(
                    model,
                    id = r.id,
                    "sync client: shape row skipped, value and clocks do not fit"
                );
                continue;
            };
            self.observe_state(&state);
            let before = st.row(model, &r.id);
            let mut row = before.cloned().unwrap_or_default();
            row.merge(&state);
            if before != Some(&row) {
                up.write.rows.push((model.to_owned(), r.id.clone(), row));
                up.models.insert(model.to_owned());
            }
            if !sub.held.contains(&r.id) {
                up.hold.push(r.id.clone());
            }
        }
        let mut released: Vec<&String> = Vec::new();
        // A retraction of a row this subscription does not hold (a pull
        // names every touched row): the server says it is not in the shape.
        let mut unheld: Vec<&String> = Vec::new();
        for id in retracts {
            if sub.held.contains(id) {
                released.push(id);
            } else {
                unheld.push(id);
            }
        }
        if let Some(keep) = replace {
            released.extend(sub.held.iter().filter(|id| !keep.contains(*id)));
        }
        released.sort_unstable();
        released.dedup();
        let whole = self.whole_model(model);
        let mut dropped: HashSet<&str> = HashSet::new();
        for id in released {
            up.release.push(id.clone());
            if !whole && !st.held_elsewhere(key, model, id) {
                dropped.insert(id);
            }
        }
        if !whole {
            for id in unheld {
                if !st.held_elsewhere(key, model, id) && !st.is_pending(model, id) {
                    dropped.insert(id);
                }
            }
        }
        if replace.is_some() && !whole {
            // The shape's rows are all known now: a row no subscription
            // holds and no queued write keeps (a local write acknowledged
            // before its shape sent it, a row of an old subscription) goes.
            let held_after: HashSet<&str> = sub
                .held
                .iter()
                .map(String::as_str)
                .chain(up.hold.iter().map(String::as_str))
                .filter(|id| !up.release.iter().any(|r| r == id))
                .collect();
            for id in st.rows.get(model).into_iter().flat_map(|rows| rows.keys()) {
                if !held_after.contains(id.as_str())
                    && !st.held_elsewhere(key, model, id)
                    && !st.is_pending(model, id)
                {
                    dropped.insert(id);
                }
            }
        }
        for id in dropped {
            up.write.rows_delete.push((model.to_owned(), id.to_owned()));
            up.models.insert(model.to_owned());
        }
        let mut shapes = st.shapes.clone();
        let entry = shapes.get_mut(key).expect("looked up above");
        let meta_changed = entry.model.as_deref() != Some(model) || cursor.is_some();
        entry.model = Some(model.to_owned());
        if let Some(c) = cursor {
            entry.cursor = Some(c);
        }
        if meta_changed {
            up.write.meta.push(("shapes", shapes_json(&shapes)));
        }
        if !rows.is_empty() {
            up.write
                .meta
                .push(("clock", json!(self.clock.last().to_string())));
        }
        up.write.shape_hold = up
            .hold
            .iter()
            .map(|id| (key.to_owned(), model.to_owned(), id.clone()))
            .collect();
        up.write.shape_release = up
            .release
            .iter()
            .map(|id| (key.to_owned(), id.clone()))
            .collect();
        self.store.write(&up.write).await?;
        let entry = shapes.get_mut(key).expect("looked up above");
        for id in up.release {
            entry.held.remove(&id);
        }
        entry.held.extend(up.hold);
        st.shapes = shapes;
        for (model, id, row) in up.write.rows {
            st.put_row(&model, &id, row);
        }
        for (model, id) in &up.write.rows_delete {
            if let Some(rows) = st.rows.get_mut(model) {
                rows.remove(id);
            }
        }
        drop(st);
        self.notify_models(up.models);
        Ok(())
    }

    /// Read a shape's rows from its snapshot (every page) and make them the
    /// rows it holds; its pulls go on from the first page's cursor.
    pub(crate) async fn bootstrap_shape(&self, key: &str) -> Result<(), ClientError> {
        let Some((name, params)) = self.shape_request(key).await else {
            return Ok(());
        };
        let read = self.read_shape(&name, &params).await?;
        let keep: HashSet<String> = read.rows.iter().map(|r| r.id.clone()).collect();
        let rows = read.rows;
        self.apply_shape_rows(key, &read.model, &rows, &[], Some(&keep), Some(read.cursor))
            .await?;
        self.emit(Event::Pull {
            changes: rows.len(),
            source: PullSource::Snapshot,
        });
        Ok(())
    }

    /// Every page of a shape's snapshot.
    pub(crate) async fn read_shape(
        &self,
        name: &str,
        params: &Value,
    ) -> Result<ShapeRead, ClientError> {
        let mut after: Option<String> = None;
        let mut cursor: Option<String> = None;
        let mut rows = Vec::new();
        let model = loop {
            let page = self
                .remote
                .snapshot_shape(name, params, after.as_deref(), None)
                .await?;
            // The first page's cursor: pulling from it misses nothing.
            cursor.get_or_insert(page.cursor);
            rows.extend(page.rows);
            match (page.has_more, page.next_after) {
                (true, Some(next)) => after = Some(next),
                (true, None) => {
                    return Err(ClientError::bad_response(
                        "snapshot page with has_more but no next_after",
                    ));
                }
                (false, _) => break page.model,
            }
        };
        Ok(ShapeRead {
            model,
            cursor: cursor.unwrap_or_default(),
            rows,
        })
    }

    /// One shape pull from the shape's cursor (bootstrapping it first when
    /// it has none, or when the server answers `reset`). Answers whether
    /// the shape is caught up.
    pub(crate) async fn pull_shape_once(
        &self,
        key: &str,
        wait: Option<std::time::Duration>,
    ) -> Result<bool, ClientError> {
        let Some((name, params)) = self.shape_request(key).await else {
            return Ok(true);
        };
        let cursor = self
            .state
            .lock()
            .await
            .shapes
            .get(key)
            .and_then(|s| s.cursor.clone());
        let Some(cursor) = cursor else {
            self.bootstrap_shape(key).await?;
            return Ok(false);
        };
        let page = self
            .remote
            .pull_shape(&name, &params, Some(&cursor), wait)
            .await?;
        if page.reset {
            self.bootstrap_shape(key).await?;
            return Ok(false);
        }
        let changed = page.rows.len() + page.retracts.len();
        self.apply_shape_rows(
            key,
            &page.model,
            &page.rows,
            &page.retracts,
            None,
            Some(page.cursor),
        )
        .await?;
        if changed > 0 {
            self.emit(Event::Pull {
                changes: changed,
                source: PullSource::Http,
            });
        }
        Ok(!page.has_more)
    }

    /// The server refused a subscription for good (an unknown shape, bad
    /// parameters): it is dropped with its rows, and the app is told.
    pub(crate) async fn refuse_shape(
        &self,
        key: &str,
        error: ClientError,
    ) -> Result<(), ClientError> {
        let Some(sub) = self.remove_shape(key).await? else {
            return Ok(());
        };
        tracing::warn!(shape = sub.name, %error, "sync client: shape subscription refused");
        self.emit(Event::ShapeRefused {
            name: sub.name,
            params: sub.params,
            error,
        });
        Ok(())
    }

    /// Forget a subscription and drop the rows only it held.
    pub(crate) async fn remove_shape(&self, key: &str) -> Result<Option<ShapeSub>, ClientError> {
        let mut st = self.state.lock().await;
        let Some(sub) = st.shapes.get(key).cloned() else {
            return Ok(None);
        };
        let mut shapes = st.shapes.clone();
        shapes.remove(key);
        let mut write = Write {
            shape_clear: vec![key.to_owned()],
            meta: vec![("shapes", shapes_json(&shapes))],
            ..Write::default()
        };
        if let Some(model) = sub.model.as_deref().filter(|m| !self.whole_model(m)) {
            // Its rows, and rows no subscription holds (a local write
            // acknowledged before its shape sent it back), unless queued.
            for id in st.rows.get(model).into_iter().flat_map(|rows| rows.keys()) {
                let held = sub.held.contains(id);
                if !st.held_elsewhere(key, model, id) && (held || !st.is_pending(model, id)) {
                    write.rows_delete.push((model.to_owned(), id.clone()));
                }
            }
        }
        self.store.write(&write).await?;
        for (model, id) in &write.rows_delete {
            if let Some(rows) = st.rows.get_mut(model) {
                rows.remove(id);
            }
        }
        st.shapes = shapes;
        drop(st);
        self.notify_models(sub.model.clone());
        self.shapes_changed
            .send_modify(|generation| *generation += 1);
        Ok(Some(sub))
    }

    /// Add a subscription (nothing when it exists); the live round starts
    /// again to include it.
    pub(crate) async fn add_shape(&self, name: &str, params: Value) -> Result<(), ClientError> {
        let key = shape_key(name, &params);
        let mut st = self.state.lock().await;
        if st.shapes.contains_key(&key) {
            return Ok(());
        }
        let mut shapes = st.shapes.clone();
        shapes.insert(
            key,
            ShapeSub {
                name: name.to_owned(),
                params,
                model: None,
                cursor: None,
                held: HashSet::new(),
            },
        );
        self.store
            .write(&Write {
                meta: vec![("shapes", shapes_json(&shapes))],
                ..Write::default()
            })
            .await?;
        st.shapes = shapes;
        drop(st);
        self.shapes_changed
            .send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// The name and params of a subscription, if it still exists.
    pub(crate) async fn shape_request(&self, key: &str) -> Option<(String, Value)> {
        let st = self.state.lock().await;
        st.shapes
            .get(key)
            .map(|s| (s.name.clone(), s.params.clone()))
    }

    /// The keys of the current subscriptions.
    pub(crate) async fn shape_keys(&self) -> Vec<(String, String, Value)> {
        let st = self.state.lock().await;
        st.shapes
            .iter()
            .map(|(k, s)| (k.clone(), s.name.clone(), s.params.clone()))
            .collect()
    }

    /// A shape caught up: tell the app.
    pub(crate) async fn shape_synced(&self, key: &str) {
        let request = self.shape_request(key).await;
        if let Some((name, params)) = request {
            self.emit(Event::ShapeSynced { name, params });
        }
    }
}

/// Whether an error refuses a shape subscription for good.
pub(crate) fn refuses_shape(error: &ClientError) -> bool {
    matches!(
        error.code(),
        "SYNC:UNKNOWN_SHAPE" | "SYNC:INVALID_SHAPE_PARAMS"
    )
}
