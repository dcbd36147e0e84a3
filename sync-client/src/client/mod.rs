//! The sync client: local writes with a persistent outbox, and the background
//! loops that push it and fold the server's changes in.
//!
//! Local state is a map of [`RowState`]s, the same join the server folds
//! (`better_sync_core::conflict`), so once the outbox is acknowledged and the
//! client has pulled to the head, its rows equal the server's. Every state
//! change is written through to the store in one transaction before it is
//! made visible, under one lock, so memory and disk never disagree about
//! what was acknowledged.
//!
//! The room's files: `mod.rs` (the [`SyncClient`] handle and every public
//! method), `state.rs` (what the client knows, in memory and in the store),
//! `validate.rs` (the server's checks, made before a change is queued),
//! `push.rs` (the outbox loop), `pull.rs` (bootstrap and folding remote
//! changes in), `live.rs` (WebSocket and long-poll), `query.rs` (live
//! queries).

mod live;
mod pull;
mod push;
mod query;
mod shapes;
mod state;
#[cfg(test)]
mod tests;
mod validate;

pub use self::query::LiveQuery;
pub use self::state::Rejected;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use better_sync_core::hlc::{Hlc, HlcClock};
use better_sync_core::protocol::{Change as WireChange, Op};
use better_sync_core::{RowState, Stamp};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::change::{Change, Filter, Row};
use crate::error::ClientError;
use crate::events::QueueStats;
use crate::options::Options;
use crate::remote::Remote;
use crate::store::{OutboxEntry, Store, Write};

use self::state::{Inner, State, Status, Tasks, lock};
use self::validate::validate;

/// A local-first sync client. Cheap to clone (all clones share one client).
///
/// ```no_run
/// # async fn run() -> Result<(), better_sync_client::ClientError> {
/// use better_sync_client::{Auth, Change, Filter, Storage, SyncClient, Transport};
/// use serde_json::json;
///
/// let sync = SyncClient::builder()
///     .base_url("http://127.0.0.1:3000")
///     .models(["todo"])
///     .storage(Storage::sqlite("todo-sync.db"))
///     .transport(Transport::WebSocket)
///     .auth(Auth::bearer("a JWT"))
///     .build()
///     .await?;
/// sync.connect();
/// sync.apply_change("todo", Change::insert("1", json!({"id": "1", "title": "Write docs", "done": false})))
///     .await?;
/// let mut open = sync.subscribe_query("todo", Filter::eq("done", false));
/// while let Some(rows) = open.next().await {
///     println!("{} open todos", rows.len());
/// #   break;
/// }
/// sync.drain().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SyncClient {
    inner: Arc<Inner>,
    /// Shared by the clones the app holds (not by the background tasks):
    /// when the last one goes, the tasks stop.
    _alive: Arc<Alive>,
}

/// Stops the background tasks when the app drops its last [`SyncClient`];
/// the tasks hold the client's state themselves, so without this they
/// would run on for ever.
struct Alive(Arc<Inner>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.connected.store(false, Ordering::SeqCst);
        // Live queries the app still holds end.
        self.0.closed.send_replace(true);
        let mut tasks = lock(&self.0.tasks);
        for task in [tasks.sync.take(), tasks.push.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("remote", &self.inner.remote)
            .field("actor", &self.inner.actor)
            .finish_non_exhaustive()
    }
}

impl SyncClient {
    /// Open the store and restore rows, outbox, cursor and clock from it.
    pub(crate) async fn open(
        remote: Remote,
        store: Store,
        opts: Options,
        actor: Option<String>,
    ) -> Result<Self, ClientError> {
        let loaded = store.load().await?;
        let clock = HlcClock::new();
        if let Some(last) = loaded
            .meta
            .get("clock")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Hlc>().ok())
        {
            clock.observe(last);
        }
        let actor = match (actor, loaded.meta.get("actor").and_then(Value::as_str)) {
            (Some(a), _) => a,
            (None, Some(stored)) => stored.to_owned(),
            (None, None) => {
                let fresh = format!("client-{}", uuid::Uuid::now_v7().simple());
                store
                    .write(&Write {
                        meta: vec![("actor", json!(fresh))],
                        ..Write::default()
                    })
                    .await?;
                fresh
            }
        };
        let mut state = State {
            cursor: loaded
                .meta
                .get("cursor")
                .and_then(Value::as_str)
                .map(str::to_owned),
            needs_resync: loaded.meta.get("resync") == Some(&Value::Bool(true)),
            rejected: loaded
                .meta
                .get("rejected")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Rejected::from_json).collect())
                .unwrap_or_default(),
            ..State::default()
        };
        state.shapes = shapes::shapes_from_store(loaded.meta.get("shapes"), loaded.shape_rows);
        for (model, id, row) in loaded.rows {
            state.rows.entry(model).or_default().insert(id, row);
        }
        state.next_key = loaded.outbox.last().map_or(1, |e| e.key + 1);
        for entry in loaded.outbox {
            state.push_outbox(entry);
        }
        let (queued, _) = watch::channel(state.outbox.len());
        let (touched, _) = broadcast::channel(256);
        let (closed, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            remote,
            store,
            opts,
            actor,
            clock,
            state: Mutex::new(state),
            touched,
            queued,
            work: Notify::new(),
            resync: Notify::new(),
            shapes_changed: watch::channel(0).0,
            status: StdMutex::new(Status::default()),
            metadata: StdMutex::new(None),
            tasks: StdMutex::new(Tasks::default()),
            connected: AtomicBool::new(false),
            closed,
        });
        Ok(Self {
            _alive: Arc::new(Alive(inner.clone())),
            inner,
        })
    }

    /// This replica's actor id (the `actor` of its changes): the builder's,
    /// or one made up on first use and kept in the store.
    pub fn actor(&self) -> &str {
        &self.inner.actor
    }

    /// The server connection this client uses.
    pub fn remote(&self) -> &Remote {
        &self.inner.remote
    }

    /// Start syncing in the background: push the outbox, bootstrap when
    /// there is no cursor yet, then follow live changes (WebSocket, or
    /// long-poll). Failures are retried with backoff for as long as the
    /// client is connected. Calling it while connected does nothing.
    pub fn connect(&self) {
        if *self.inner.closed.borrow() {
            return;
        }
        self.inner.connected.store(true, Ordering::SeqCst);
        let mut tasks = lock(&self.inner.tasks);
        if tasks.sync.as_ref().is_none_or(JoinHandle::is_finished) {
            tasks.sync = Some(tokio::spawn(self.inner.clone().sync_loop()));
        }
        if tasks.push.as_ref().is_none_or(JoinHandle::is_finished) {
            tasks.push = Some(tokio::spawn(self.inner.clone().push_loop()));
        }
    }

    /// Stop the background loops. Local writes keep working and stay queued.
    pub async fn disconnect(&self) {
        self.inner.connected.store(false, Ordering::SeqCst);
        let (sync, push) = {
            let mut tasks = lock(&self.inner.tasks);
            (tasks.sync.take(), tasks.push.take())
        };
        for task in [sync, push].into_iter().flatten() {
            task.abort();
            let _ = task.await;
        }
        let mut status = lock(&self.inner.status);
        status.live = None;
        status.in_flight = 0;
    }

    /// Disconnect and close the store. Live queries end; later calls fail
    /// with [`codes::CLOSED`].
    pub async fn close(&self) {
        // Closed first: a concurrent drain() must not start a new push loop.
        self.inner.closed.send_replace(true);
        self.disconnect().await;
        // Wait for a local write under way to finish before closing the store.
        let _state = self.inner.state.lock().await;
        self.inner.store.close().await;
    }

    fn check_open(&self) -> Result<(), ClientError> {
        if *self.inner.closed.borrow() {
            return Err(ClientError::closed());
        }
        Ok(())
    }

    /// Write a change locally: the row and the outbox entry in one local
    /// transaction. Returns the change's op id at once, without waiting for
    /// the network; the push loop sends it.
    ///
    /// Fails (status 0) with `SYNC:INVALID_CHANGE`, `SYNC:UNKNOWN_MODEL`,
    /// `SYNC:PAYLOAD_TOO_DEEP` or `SYNC:CHANGE_TOO_LARGE` for a change the
    /// server would refuse, with `STORAGE` when the local store fails (then
    /// nothing was written), and with `CLOSED` after [`Self::close`].
    pub async fn apply_change(&self, model: &str, change: Change) -> Result<String, ClientError> {
        self.check_open()?;
        let limits = self.inner.cached_metadata().map(|m| m.limits.clone());
        validate(
            model,
            &change,
            self.inner.opts.models.as_deref(),
            limits.unwrap_or_default().max_payload_bytes,
        )?;
        let inner = &self.inner;
        let mut st = inner.state.lock().await;
        self.check_open()?;
        let clock = inner.clock.tick();
        let op_id = uuid::Uuid::now_v7().to_string();
        let payload = if change.op == Op::Delete {
            Value::Null
        } else {
            change.payload
        };
        let stamp = Stamp::new(clock, inner.actor.clone(), op_id.clone());
        let mut row = st.row(model, &change.id).cloned().unwrap_or_default();
        row.apply(change.op, &payload, &stamp);
        let entry = OutboxEntry::new(
            st.next_key,
            WireChange {
                op_id: op_id.clone(),
                model: model.to_owned(),
                pk: change.id.clone(),
                op: change.op,
                payload,
                updated_at: clock.to_string(),
                actor: inner.actor.clone(),
            },
        )?;
        inner
            .store
            .write(&Write {
                rows: vec![(model.to_owned(), change.id.clone(), row.clone())],
                outbox_add: vec![entry.clone()],
                meta: vec![("clock", json!(clock.to_string()))],
                ..Write::default()
            })
            .await?;
        st.next_key += 1;
        st.put_row(model, &change.id, row);
        st.push_outbox(entry);
        inner.report_outbox(st.outbox.len());
        drop(st);
        inner.notify_models([model.to_owned()]);
        inner.work.notify_one();
        Ok(op_id)
    }

    /// The live row `id` of `model`, if any.
    pub async fn get(&self, model: &str, id: &str) -> Option<Value> {
        let st = self.inner.state.lock().await;
        st.row(model, id)
            .filter(|r| r.is_live())
            .map(RowState::value)
    }

    /// The live rows of `model` matching `filter`, by id.
    pub async fn query(&self, model: &str, filter: &Filter) -> Vec<Row> {
        self.inner.query(model, filter).await
    }

    /// A live query: the rows of `model` matching `filter`, at once and
    /// again after every local or remote change that alters the result.
    pub fn subscribe_query(&self, model: &str, filter: Filter) -> LiveQuery {
        LiveQuery::new(
            self.inner.clone(),
            model.to_owned(),
            filter,
            self.inner.touched.subscribe(),
            self.inner.closed.subscribe(),
        )
    }

    /// Hold the rows of the server's shape `name` with `params` (a JSON
    /// object, or `Value::Null` for a shape without parameters) beside
    /// what the client holds already: they join the one local store, so
    /// [`Self::query`] and [`Self::subscribe_query`] see the union of every
    /// shape (and of the models replicated whole). Rows that leave the
    /// shape on the server (a field changed, a membership removed) leave
    /// the local store unless another subscription holds them; that is not
    /// a delete, nothing is pushed. Kept in the store across restarts;
    /// subscribing again to the same shape and params does nothing.
    ///
    /// Returns once the subscription is recorded, without the network:
    /// [`Event::ShapeSynced`] tells when its rows are in, and
    /// [`Event::ShapeRefused`] when the server does not know the shape or
    /// refuses the params (then the subscription is dropped).
    ///
    /// ```no_run
    /// # async fn run(sync: better_sync_client::SyncClient) -> Result<(), better_sync_client::ClientError> {
    /// use better_sync_client::Filter;
    /// use serde_json::json;
    ///
    /// sync.subscribe_shape("list_todos", json!({"list": "groceries"})).await?;
    /// sync.subscribe_shape("list_todos", json!({"list": "garden"})).await?;
    /// let mut open = sync.subscribe_query("todo", Filter::eq("done", false));
    /// let both_lists = open.next().await;
    /// # Ok(()) }
    /// ```
    ///
    /// Fails (status 0) with `SYNC:INVALID_SHAPE_PARAMS` when `params` is
    /// neither an object nor null, `SYNC:INVALID_QUERY` for a name that
    /// cannot be a shape's, `STORAGE` or `CLOSED`.
    pub async fn subscribe_shape(
        &self,
        name: &str,
        params: impl Into<Value>,
    ) -> Result<(), ClientError> {
        self.check_open()?;
        let params = params.into();
        check_shape_request(name, &params)?;
        self.inner.add_shape(name, params).await
    }

    /// Stop holding shape `name` with `params`: its rows leave the local
    /// store unless another subscription (or a model replicated whole)
    /// holds them. Nothing when not subscribed.
    pub async fn unsubscribe_shape(
        &self,
        name: &str,
        params: impl Into<Value>,
    ) -> Result<(), ClientError> {
        self.check_open()?;
        let key = shapes::shape_key(name, &params.into());
        self.inner.remove_shape(&key).await.map(drop)
    }

    /// The shape subscriptions, as `(name, params)`, in a stable order.
    pub async fn shapes(&self) -> Vec<(String, Value)> {
        self.inner
            .shape_keys()
            .await
            .into_iter()
            .map(|(_, name, params)| (name, params))
            .collect()
    }

    /// Wait until the outbox is empty: every queued change was acknowledged
    /// by the server or set aside as rejected (see [`Self::rejected`]).
    /// Pushes even when not connected; while the server is unreachable it
    /// keeps waiting (wrap it in a timeout to bound it), and under a steady
    /// stream of new writes it waits for a pause in them.
    pub async fn drain(&self) -> Result<(), ClientError> {
        self.check_open()?;
        let mut queued = self.inner.queued.subscribe();
        let mut closed = self.inner.closed.subscribe();
        loop {
            if *queued.borrow_and_update() == 0 {
                return Ok(());
            }
            self.ensure_pusher();
            tokio::select! {
                _ = queued.changed() => {}
                _ = closed.changed() => return Err(ClientError::closed()),
                // The push loop may have been finishing as we looked: look again.
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    fn ensure_pusher(&self) {
        if *self.inner.closed.borrow() {
            return;
        }
        let mut tasks = lock(&self.inner.tasks);
        if tasks.push.as_ref().is_none_or(JoinHandle::is_finished) {
            tasks.push = Some(tokio::spawn(self.inner.clone().push_loop()));
        }
        drop(tasks);
        self.inner.work.notify_one();
    }

    /// Outbox and connection statistics.
    pub async fn queue_stats(&self) -> QueueStats {
        let (queued, rejected, cursor) = {
            let st = self.inner.state.lock().await;
            (st.outbox.len(), st.rejected.len(), st.cursor.clone())
        };
        let status = lock(&self.inner.status);
        QueueStats {
            queued,
            in_flight: status.in_flight,
            rejected,
            online: status.online,
            cursor,
            last_error: status.last_error.clone(),
            auth_failed: status.auth_failed,
            version_unsupported: status.version_unsupported,
            live: if self.inner.connected.load(Ordering::SeqCst) {
                status.live
            } else {
                None
            },
        }
    }

    /// Whether the app should slow its writes down: the outbox holds at
    /// least the builder's `back_off_at` changes (default 10,000), or the
    /// server answered `429` and its `Retry-After` has not passed yet.
    pub fn should_back_off(&self) -> bool {
        if *self.inner.queued.borrow() >= self.inner.opts.back_off_at {
            return true;
        }
        lock(&self.inner.status)
            .slow_down_until
            .is_some_and(|t| Instant::now() < t)
    }

    /// Changes the server refused for good, oldest first (the last 100).
    pub async fn rejected(&self) -> Vec<Rejected> {
        self.inner.state.lock().await.rejected.clone()
    }

    /// Forget the rejected changes.
    pub async fn clear_rejected(&self) -> Result<(), ClientError> {
        let mut st = self.inner.state.lock().await;
        self.inner
            .store
            .write(&Write {
                meta: vec![("rejected", json!([]))],
                ..Write::default()
            })
            .await?;
        st.rejected.clear();
        Ok(())
    }
}

/// The checks of a shape subscription a client can make itself.
fn check_shape_request(name: &str, params: &Value) -> Result<(), ClientError> {
    if !better_sync_core::protocol::is_valid_model_name(name) {
        return Err(ClientError::new(
            "SYNC:INVALID_QUERY",
            format!("shape {name:?} must be 1 to 64 bytes of A-Za-z0-9_-"),
        ));
    }
    if !(params.is_object() || params.is_null()) {
        return Err(ClientError::new(
            "SYNC:INVALID_SHAPE_PARAMS",
            "a shape's params are a JSON object (or null when it has none)",
        ));
    }
    Ok(())
}
