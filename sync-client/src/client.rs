//! The sync client: local writes with a persistent outbox, and the background
//! loops that push it and fold the server's changes in.
//!
//! Local state is a map of [`RowState`]s, the same join the server folds
//! (`better_sync_core::conflict`), so once the outbox is acknowledged and the
//! client has pulled to the head, its rows equal the server's. Every state
//! change is written through to the store in one transaction before it is
//! made visible, under one lock, so memory and disk never disagree about
//! what was acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use better_sync_core::hlc::{Hlc, HlcClock};
use better_sync_core::protocol::{self, Change as WireChange, Op, PulledChange};
use better_sync_core::{RowState, Stamp};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::backoff::backoff_delay;
use crate::builder::{ClientBuilder, Transport};
use crate::change::{Change, Filter, Row};
use crate::error::{ClientError, codes};
use crate::events::{Event, LiveMode, PullSource, QueueStats};
use crate::query::LiveQuery;
use crate::remote::{LiveMessage, Metadata, Remote};
use crate::store::{OutboxEntry, Store, Write};

/// Most changes per push, whatever the server allows.
pub(crate) const MAX_BATCH: usize = 1000;
/// Most bytes of changes per push, whatever the server allows.
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Rejected changes kept for [`SyncClient::rejected`].
const MAX_REJECTED_KEPT: usize = 100;
/// After this many WebSocket failures in a row, use long-poll for a while.
const WS_FAILURES_BEFORE_FALLBACK: u32 = 2;
/// Pause between empty polls when the server cannot hold a long-poll.
const PLAIN_POLL_PAUSE: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long to stay on long-poll before trying the WebSocket again.
const LONG_POLL_PERIOD: Duration = Duration::from_secs(60);

pub(crate) type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;

/// Settings fixed at build time.
pub(crate) struct Options {
    pub(crate) models: Option<Vec<String>>,
    pub(crate) transport: Transport,
    pub(crate) on_event: Option<EventHook>,
    pub(crate) back_off_at: usize,
    pub(crate) long_poll_wait: Duration,
}

/// A change the server refused for good.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The change as it was queued.
    pub change: WireChange,
    /// The server's answer.
    pub error: ClientError,
    /// When it was refused, milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl Rejected {
    fn to_json(&self) -> Value {
        json!({
            "change": self.change,
            "error": {
                "code": self.error.code(),
                "message": self.error.message(),
                "status": self.error.status(),
                "meta": self.error.meta(),
            },
            "at": self.at_ms,
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        let e = v.get("error")?;
        let mut error = ClientError::new(e.get("code")?.as_str()?, e.get("message")?.as_str()?)
            .with_status(u16::try_from(e.get("status")?.as_u64()?).ok()?);
        if let Some(meta) = e.get("meta").filter(|m| !m.is_null()) {
            error = error.with_meta(meta.clone());
        }
        Some(Self {
            change: serde_json::from_value(v.get("change")?.clone()).ok()?,
            error,
            at_ms: v.get("at")?.as_i64()?,
        })
    }
}

type Rows = HashMap<String, BTreeMap<String, RowState>>;

/// What the client knows, in memory; the store holds the same.
#[derive(Default)]
struct State {
    rows: Rows,
    outbox: VecDeque<OutboxEntry>,
    /// Queued changes per `(model, pk)`: rows with local writes in flight.
    pending: HashMap<(String, String), usize>,
    next_key: i64,
    cursor: Option<String>,
    needs_resync: bool,
    rejected: Vec<Rejected>,
}

impl State {
    fn row(&self, model: &str, id: &str) -> Option<&RowState> {
        self.rows.get(model)?.get(id)
    }

    fn put_row(&mut self, model: &str, id: &str, state: RowState) {
        self.rows
            .entry(model.to_owned())
            .or_default()
            .insert(id.to_owned(), state);
    }

    fn push_outbox(&mut self, entry: OutboxEntry) {
        *self
            .pending
            .entry((entry.change.model.clone(), entry.change.pk.clone()))
            .or_default() += 1;
        self.outbox.push_back(entry);
    }

    fn remove_outbox(&mut self, keys: &HashSet<i64>) {
        let pending = &mut self.pending;
        self.outbox.retain(|e| {
            if !keys.contains(&e.key) {
                return true;
            }
            let k = (e.change.model.clone(), e.change.pk.clone());
            if let Some(n) = pending.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(&k);
                }
            }
            false
        });
    }

    fn is_pending(&self, model: &str, pk: &str) -> bool {
        self.pending
            .contains_key(&(model.to_owned(), pk.to_owned()))
    }

    fn rows_json(&self, model: &str, filter: &Filter) -> Vec<Row> {
        let Some(rows) = self.rows.get(model) else {
            return Vec::new();
        };
        rows.iter()
            .filter(|(_, s)| s.is_live())
            .map(|(id, s)| Row {
                id: id.clone(),
                value: s.value(),
            })
            .filter(|r| filter.matches(r))
            .collect()
    }
}

#[derive(Default)]
struct Status {
    online: bool,
    last_error: Option<ClientError>,
    in_flight: usize,
    live: Option<LiveMode>,
    /// The server asked us to slow down until then.
    slow_down_until: Option<Instant>,
}

#[derive(Default)]
struct Tasks {
    sync: Option<JoinHandle<()>>,
    push: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    remote: Remote,
    store: Store,
    opts: Options,
    actor: String,
    clock: HlcClock,
    state: Mutex<State>,
    /// Models touched by a local or remote change: live queries re-run.
    touched: broadcast::Sender<Arc<HashSet<String>>>,
    queued: watch::Sender<usize>,
    /// Wakes the push loop (new outbox entries, drain).
    work: Notify,
    /// Cuts the live round short (local state must be rebuilt).
    resync: Notify,
    status: StdMutex<Status>,
    /// `sync.json` once read; a std mutex, never held across the fetch, so
    /// local writes never wait for the network.
    metadata: StdMutex<Option<Arc<Metadata>>>,
    tasks: StdMutex<Tasks>,
    connected: AtomicBool,
    closed: watch::Sender<bool>,
}

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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SyncClient {
    /// Start building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

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
        inner.queued.send_replace(st.outbox.len());
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

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server's checks (section 5.2 of the protocol) that a client can make
/// itself, so that a bad change fails here rather than after it was queued.
fn validate(
    model: &str,
    change: &Change,
    models: Option<&[String]>,
    max_payload_bytes: usize,
) -> Result<(), ClientError> {
    if !protocol::is_valid_model_name(model) {
        return Err(ClientError::invalid_change(
            "model",
            format!("model {model:?} must be 1 to 64 bytes of A-Za-z0-9_-"),
        ));
    }
    if let Some(models) = models
        && !models.iter().any(|m| m == model)
    {
        return Err(ClientError::new(
            codes::UNKNOWN_MODEL,
            format!("model {model:?} is not one of the client's models {models:?}"),
        ));
    }
    let id = &change.id;
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(ClientError::invalid_change(
            "pk",
            "the id must be 1 to 255 bytes without control characters",
        ));
    }
    match (change.op, &change.payload) {
        (Op::Insert, Value::Object(_)) | (Op::Delete, _) => {}
        (Op::Update, Value::Object(o)) if !o.is_empty() => {}
        (Op::Insert, _) => {
            return Err(ClientError::invalid_change(
                "payload",
                "an insert needs the row as an object",
            ));
        }
        (Op::Update, _) => {
            return Err(ClientError::invalid_change(
                "payload",
                "an update needs a non-empty object of changed fields",
            ));
        }
    }
    if change.op == Op::Delete {
        return Ok(());
    }
    if let Some(pid) = change.payload.get("id") {
        let same = match pid {
            Value::String(s) => s == id,
            Value::Number(n) => n.to_string() == *id,
            _ => false,
        };
        if !same {
            return Err(ClientError::invalid_change(
                "payload",
                format!("payload.id {pid} differs from the id {id:?}"),
            ));
        }
    }
    if protocol::payload_depth(&change.payload) > 32 {
        return Err(ClientError::new(
            "SYNC:PAYLOAD_TOO_DEEP",
            "the payload nests deeper than 32 levels",
        ));
    }
    let bytes = serde_json::to_vec(&change.payload)
        .map_err(|e| ClientError::invalid_change("payload", e))?
        .len();
    if bytes > max_payload_bytes {
        return Err(ClientError::new(
            "SYNC:CHANGE_TOO_LARGE",
            format!("the payload is {bytes} bytes, more than the server's {max_payload_bytes}"),
        ));
    }
    Ok(())
}

/// Fold the queued changes into `rows` (optimistic local state on top of
/// the server's).
fn fold_outbox(rows: &mut Rows, outbox: &VecDeque<OutboxEntry>) {
    for e in outbox {
        let c = &e.change;
        let Ok(clock) = c.updated_at.parse::<Hlc>() else {
            continue;
        };
        rows.entry(c.model.clone())
            .or_default()
            .entry(c.pk.clone())
            .or_default()
            .apply(
                c.op,
                &c.payload,
                &Stamp::new(clock, c.actor.clone(), c.op_id.clone()),
            );
    }
}

impl Inner {
    fn emit(&self, event: Event) {
        if let Some(hook) = &self.opts.on_event {
            // A panicking hook must not take the push or sync loop down with it.
            let run = std::panic::AssertUnwindSafe(|| hook(&event));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("sync client: the on_event hook panicked; event dropped");
            }
        }
    }

    fn notify_models(&self, models: impl IntoIterator<Item = String>) {
        let set: HashSet<String> = models.into_iter().collect();
        if !set.is_empty() {
            let _ = self.touched.send(Arc::new(set));
        }
    }

    pub(crate) async fn query(&self, model: &str, filter: &Filter) -> Vec<Row> {
        self.state.lock().await.rows_json(model, filter)
    }

    fn note_success(&self) {
        let changed = {
            let mut status = lock(&self.status);
            status.last_error = None;
            !std::mem::replace(&mut status.online, true)
        };
        if changed {
            self.emit(Event::Online(true));
        }
    }

    fn note_failure(&self, error: &ClientError) {
        let offline = error.code() == codes::NETWORK || error.status() >= 500;
        let changed = {
            let mut status = lock(&self.status);
            status.last_error = Some(error.clone());
            if error.status() == 429 {
                let pause = error
                    .retry_after()
                    .unwrap_or(Duration::from_secs(1))
                    .min(MAX_RETRY_AFTER);
                status.slow_down_until = Instant::now().checked_add(pause);
            }
            offline && std::mem::replace(&mut status.online, false)
        };
        if changed {
            self.emit(Event::Online(false));
        }
    }

    fn set_live(&self, mode: Option<LiveMode>) {
        let changed = {
            let mut status = lock(&self.status);
            std::mem::replace(&mut status.live, mode) != mode
        };
        if let (true, Some(mode)) = (changed, mode) {
            self.emit(Event::Live(mode));
        }
    }

    fn cached_metadata(&self) -> Option<Arc<Metadata>> {
        lock(&self.metadata).clone()
    }

    /// The server's `sync.json`, read once (two loops may both read it the
    /// first time; either answer will do).
    async fn metadata(&self) -> Result<Arc<Metadata>, ClientError> {
        if let Some(m) = self.cached_metadata() {
            return Ok(m);
        }
        let meta = Arc::new(self.remote.metadata().await?);
        self.note_success();
        *lock(&self.metadata) = Some(meta.clone());
        Ok(meta)
    }

    /// Whether remote changes of `model` belong in local state: pull has no
    /// model filter, the WebSocket and snapshots do.
    fn syncs_model(&self, model: &str) -> bool {
        self.opts
            .models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    async fn sleep_backoff(&self, operation: &'static str, attempt: &mut u32, error: ClientError) {
        // A server may ask for a pause, not for silence for ever.
        let asked = error.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER);
        let delay = backoff_delay(*attempt).max(asked);
        *attempt = attempt.saturating_add(1);
        tracing::debug!(operation, attempt = *attempt, ?delay, %error, "sync client: retrying");
        self.emit(Event::Retry {
            operation,
            attempt: *attempt,
            delay,
            error,
        });
        tokio::time::sleep(delay).await;
    }

    // -- push ---------------------------------------------------------------

    /// The oldest outbox entries that fit one push.
    async fn next_batch(&self, max_count: usize, max_bytes: usize) -> Vec<OutboxEntry> {
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
    async fn push_loop(self: Arc<Self>) {
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
    fn stop_pushing_if_disconnected(&self) -> bool {
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

    async fn reject_or_wait(&self, entry: &OutboxEntry, error: ClientError, attempt: &mut u32) {
        if let Err(e) = self.reject(entry, error).await {
            self.note_failure(&e);
            self.sleep_backoff("push", attempt, e).await;
        }
    }

    /// Take acknowledged changes out of the outbox. The event is reported
    /// before `drain()` can see the smaller outbox, and outside the state
    /// lock (a hook may call back into the client).
    async fn acknowledge(&self, keys: &HashSet<i64>, event: Event) -> Result<(), ClientError> {
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
        self.queued.send_replace(st.outbox.len());
        Ok(())
    }

    /// Quarantine a change the server refused for its content: take it out
    /// of the outbox so that it cannot block the queue, keep it with the
    /// error, and rebuild local state so that its optimistic effect goes.
    async fn reject(&self, entry: &OutboxEntry, error: ClientError) -> Result<(), ClientError> {
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
        self.queued.send_replace(st.outbox.len());
        drop(st);
        tracing::warn!(op_id = %entry.change.op_id, %error, "sync client: change rejected by the server");
        self.emit(Event::Rejected {
            change: entry.change.clone(),
            error,
        });
        self.resync.notify_one();
        Ok(())
    }

    // -- pull ---------------------------------------------------------------

    /// Rounds of bootstrap (when needed) and live changes; a failed round is
    /// retried with backoff, a cursor error rebuilds local state.
    async fn sync_loop(self: Arc<Self>) {
        let mut attempt = 0u32;
        let mut ws_failures = 0u32;
        let mut long_poll_until: Option<Instant> = None;
        loop {
            let result = self
                .sync_round(&mut attempt, &mut ws_failures, &mut long_poll_until)
                .await;
            if let Err(e) = result {
                if e.is_cursor_error()
                    && let Err(store) = self.mark_resync().await
                {
                    self.note_failure(&store);
                }
                self.note_failure(&e);
                self.sleep_backoff("sync", &mut attempt, e).await;
            }
        }
    }

    async fn mark_resync(&self) -> Result<(), ClientError> {
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

    async fn sync_round(
        &self,
        attempt: &mut u32,
        ws_failures: &mut u32,
        long_poll_until: &mut Option<Instant>,
    ) -> Result<(), ClientError> {
        let meta = self.metadata().await?;
        let (resync, bootstrap) = {
            let st = self.state.lock().await;
            (st.needs_resync, st.cursor.is_none())
        };
        if resync || bootstrap {
            self.bootstrap(&meta, resync).await?;
        }
        let ws_allowed = self.opts.transport == Transport::WebSocket && meta.has("websocket");
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
    async fn bootstrap(&self, meta: &Metadata, discard: bool) -> Result<(), ClientError> {
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
        if meta.has("snapshot") && !models.is_empty() {
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
        let mut st = self.state.lock().await;
        // A change refused while the snapshots were read: its optimistic
        // effect is in the old rows, so they go now rather than in a later round.
        let discard = discard || st.needs_resync;
        let mut rows = fresh;
        let mut models_touched: HashSet<String> = rows.keys().cloned().collect();
        models_touched.extend(st.rows.keys().cloned());
        if !discard {
            for (model, old) in &st.rows {
                let target = rows.entry(model.clone()).or_default();
                for (id, state) in old {
                    target.entry(id.clone()).or_default().merge(state);
                }
            }
        }
        fold_outbox(&mut rows, &st.outbox);
        let mut write = Write {
            clear_rows: true,
            meta: vec![
                ("cursor", cursor.clone().map_or(Value::Null, Value::String)),
                ("resync", Value::Null),
                ("clock", json!(self.clock.last().to_string())),
            ],
            ..Write::default()
        };
        for (model, by_id) in &rows {
            for (id, state) in by_id {
                write.rows.push((model.clone(), id.clone(), state.clone()));
            }
        }
        self.store.write(&write).await?;
        st.rows = rows;
        st.cursor = cursor;
        st.needs_resync = false;
        drop(st);
        self.notify_models(models_touched);
        self.note_success();
        self.emit(Event::Pull {
            changes: received,
            source,
        });
        Ok(())
    }

    fn observe_state(&self, state: &RowState) {
        let stamps = state
            .tombstone
            .iter()
            .chain(state.inserted.iter())
            .chain(state.fields.values().map(|(_, s)| s));
        for s in stamps {
            self.clock.observe(s.clock);
        }
    }

    fn stamp_of(&self, c: &PulledChange) -> Option<Stamp> {
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
    async fn apply_remote(
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

    async fn cursor(&self) -> Option<String> {
        self.state.lock().await.cursor.clone()
    }

    /// Follow live changes over a WebSocket until it fails or a resync is due.
    async fn live_ws(
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
    async fn live_poll(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_mirrors_the_server() {
        let models = vec!["todo".to_owned()];
        let ok = |m: &str, c: Change| validate(m, &c, Some(&models), 262_144);
        assert!(ok("todo", Change::insert("1", json!({"id": "1"}))).is_ok());
        assert!(ok("todo", Change::insert("1", json!({"id": 1}))).is_ok());
        assert!(ok("todo", Change::delete("1")).is_ok());
        assert_eq!(
            ok("note", Change::delete("1")).unwrap_err().code(),
            "SYNC:UNKNOWN_MODEL"
        );
        for bad in [
            ok("to do", Change::delete("1")),
            ok("todo", Change::delete("")),
            ok("todo", Change::delete("a\nb")),
            ok("todo", Change::insert("1", json!([1]))),
            ok("todo", Change::update("1", json!({}))),
            ok("todo", Change::insert("1", json!({"id": "2"}))),
        ] {
            assert_eq!(bad.unwrap_err().code(), "SYNC:INVALID_CHANGE");
        }
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "a": deep });
        }
        assert_eq!(
            ok("todo", Change::update("1", deep)).unwrap_err().code(),
            "SYNC:PAYLOAD_TOO_DEEP"
        );
        let big = json!({ "text": "x".repeat(300_000) });
        assert_eq!(
            ok("todo", Change::update("1", big)).unwrap_err().code(),
            "SYNC:CHANGE_TOO_LARGE"
        );
    }

    #[test]
    fn rejected_round_trips_through_json() {
        let r = Rejected {
            change: WireChange {
                op_id: "a".into(),
                model: "todo".into(),
                pk: "1".into(),
                op: Op::Insert,
                payload: json!({"id": "1"}),
                updated_at: "2026-11-25T10:00:00.000Z-0000".into(),
                actor: "me".into(),
            },
            error: ClientError::new("SYNC:FORBIDDEN", "no")
                .with_status(403)
                .with_meta(json!({"index": 0})),
            at_ms: 5,
        };
        assert_eq!(Rejected::from_json(&r.to_json()), Some(r));
    }
}
