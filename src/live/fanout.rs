//! Live fan-out: read each committed range of the log once, publish it to the
//! subscribers of each tenant.
//!
//! One task per engine, started by the first live subscriber or long-poll.
//! The engine's writer hands it every committed block of entries (a
//! [`Handoff`]), which it publishes without reading them back. It also wakes
//! on commits of other instances (Postgres `LISTEN/NOTIFY`, see
//! [`crate::storage::Storage::listen_commits`]), on a gap in the handed-over blocks
//! and on a slow poll as a fallback; then it reads `(published, head]` from
//! the log. Either way it publishes in sequence order and sends each
//! tenant's share into a bounded broadcast channel. Because it publishes
//! every sequence number exactly once and in order, a subscriber that
//! subscribes first and then catches up by pull, skipping what it already
//! has by `seq`, sees no gap and no duplicate. A subscriber that falls more
//! than the channel's capacity behind is told so by the channel (`Lagged`)
//! and catches up by pull from its own cursor: memory stays bounded and
//! nobody else slows down.

use std::collections::HashMap;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::handoff::{Handoff, Next};
use crate::access::{CurrentRows, ReadFilter, current_rows};
use crate::limits::ENTRY_OVERHEAD;
use crate::model::WireCodecs;
use crate::storage::{CommitSignal, LogEntry, SnapshotRecord, Storage};
use better_sync_core::protocol::PulledChange;

/// One tenant's share of one fan-out round, in sequence order.
pub(crate) struct Batch {
    pub(crate) changes: Vec<PulledChange>,
    /// The size the batch was cut to, estimated as pulls estimate it.
    pub(crate) bytes: usize,
    /// Current row values for `can_read`, read when the batch was published.
    pub(crate) rows: Arc<CurrentRows>,
    /// When its commit reached this instance (handed over by the writer, or
    /// found in the log), for the fan-out lag metric.
    pub(crate) published: Instant,
    /// The `changes` frame every unfiltered subscriber sends, serialized once.
    frame: OnceLock<String>,
    /// The changes as JSON array elements (no brackets), serialized once,
    /// for frames that carry several batches.
    elements: OnceLock<String>,
    /// The log missed entries before this batch (compacted or erased since
    /// they committed): subscribers catch up by pull, which tells them if
    /// their cursor went stale.
    pub(crate) gap: bool,
    /// The current records of the rows it touched, read by the first shape
    /// subscription that needs them and shared by all (one read a commit,
    /// not one a subscriber).
    touched: tokio::sync::OnceCell<Arc<TouchedRecords>>,
}

/// Current records by `(model, id)`; a row with none is gone (erased).
pub(crate) type TouchedRecords = HashMap<(String, String), SnapshotRecord>;

impl Batch {
    fn new(
        changes: Vec<PulledChange>,
        rows: Arc<CurrentRows>,
        bytes: usize,
        published: Instant,
    ) -> Self {
        Self {
            changes,
            bytes,
            rows,
            published,
            frame: OnceLock::new(),
            elements: OnceLock::new(),
            gap: false,
            touched: tokio::sync::OnceCell::new(),
        }
    }

    /// The current records of the rows this batch touched (read once, after
    /// its commit: they reflect it, and maybe later commits too).
    pub(crate) async fn touched_records(
        &self,
        storage: &dyn Storage,
        tenant: &str,
    ) -> Result<Arc<TouchedRecords>, crate::error::SyncError> {
        self.touched
            .get_or_try_init(|| async {
                let mut keys: Vec<(&str, &str)> = self
                    .changes
                    .iter()
                    .map(|c| (c.model.as_str(), c.pk.as_str()))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let records = storage.read_snapshots(tenant, &keys).await?;
                Ok(Arc::new(
                    records
                        .into_iter()
                        .map(|r| ((r.model.clone(), r.id.clone()), r))
                        .collect(),
                ))
            })
            .await
            .cloned()
    }

    /// A batch without changes that only says the log had a gap.
    fn gap() -> Self {
        Self {
            gap: true,
            ..Self::new(Vec::new(), Arc::default(), 0, Instant::now())
        }
    }

    /// The last sequence number in the batch.
    pub(crate) fn last_seq(&self) -> i64 {
        self.changes.last().map_or(0, |c| c.seq)
    }

    pub(crate) fn shared_frame(&self, make: impl FnOnce() -> String) -> &str {
        self.frame.get_or_init(make)
    }

    /// The changes as the comma-separated elements of a JSON array (made
    /// only for frames that join batches).
    pub(crate) fn elements(&self) -> &str {
        self.elements.get_or_init(|| {
            // A change is plain data, so the array always serializes; the
            // brackets are dropped.
            let array = serde_json::to_string(&self.changes).unwrap_or_default();
            array
                .get(1..array.len().saturating_sub(1))
                .unwrap_or_default()
                .to_owned()
        })
    }
}

/// How a fan-out behaves; set on the builder.
#[derive(Debug, Clone)]
pub(crate) struct FanoutConfig {
    /// Batches a subscriber may fall behind before it must catch up by pull.
    pub(crate) capacity: usize,
    /// How often the head is re-read when nothing announced a commit.
    pub(crate) poll_interval: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            capacity: 256,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What the fan-out reads from and publishes to, given by the engine.
pub(crate) struct FanoutDeps {
    pub(crate) storage: Arc<dyn Storage>,
    /// `can_read`: with a hook, each batch carries its rows' current values.
    pub(crate) read: ReadFilter,
    /// Largest batch (one WebSocket message), as pulls size pages.
    pub(crate) max_bytes: usize,
    pub(crate) config: FanoutConfig,
    /// The models' wire serializers: batches carry what readers receive.
    pub(crate) wire: WireCodecs,
}

/// The live fan-out: per-tenant broadcast channels, fed by one task that
/// starts with the first live subscriber or long-poll and ends when the
/// engine (the only owner of this handle) is dropped.
pub(crate) struct Fanout(Arc<FanoutState>);

impl Deref for Fanout {
    type Target = FanoutState;

    fn deref(&self) -> &FanoutState {
        &self.0
    }
}

pub(crate) struct FanoutState {
    deps: FanoutDeps,
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Batch>>>>,
    /// Woken by the storage's commit listener (other instances' commits).
    kick: Arc<CommitSignal>,
    /// Local commits, from the engine's writer.
    handoff: Arc<Handoff>,
    started: AtomicBool,
    /// Times a subscriber fell behind the live buffer and caught up by pull.
    pub(crate) resyncs: AtomicU64,
    /// Set once the task has fixed where it starts publishing.
    ready: watch::Sender<bool>,
    /// Highest sequence number known committed (by any instance), for
    /// long-polls; moved by local commits and by every fan-out round.
    pub(crate) head: watch::Sender<i64>,
    /// Whether the task runs (for health checks).
    running: AtomicBool,
    /// The commit listener's state, a [`Listener`].
    listener: std::sync::atomic::AtomicU8,
}

/// The state of the storage's commit listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Listener {
    /// Not started, or the storage has none (it is polled).
    None = 0,
    /// The storage has one, connected or not (`CommitSignal::is_listening`).
    Present = 1,
}

/// What `B/health` reports of the live fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FanoutHealth {
    /// The task was started (by a subscriber or a long-poll).
    pub(crate) started: bool,
    /// The task runs.
    pub(crate) running: bool,
    /// The storage has a commit listener (Postgres).
    pub(crate) has_listener: bool,
    /// That listener is connected.
    pub(crate) listening: bool,
}

impl Fanout {
    pub(crate) fn new(deps: FanoutDeps) -> Self {
        Self(Arc::new(FanoutState {
            deps,
            channels: Mutex::default(),
            kick: Arc::default(),
            handoff: Arc::default(),
            started: AtomicBool::default(),
            resyncs: AtomicU64::default(),
            ready: watch::channel(false).0,
            head: watch::channel(0).0,
            running: AtomicBool::new(false),
            listener: std::sync::atomic::AtomicU8::new(Listener::None as u8),
        }))
    }

    /// The task's state, for health checks.
    pub(crate) fn health(&self) -> FanoutHealth {
        let listening = self.0.kick.is_listening();
        FanoutHealth {
            started: self.0.started.load(Ordering::SeqCst),
            running: self.0.running.load(Ordering::SeqCst),
            has_listener: listening
                || self.0.listener.load(Ordering::SeqCst) != Listener::None as u8,
            listening,
        }
    }

    /// Where the writer hands committed entries over.
    pub(crate) fn handoff(&self) -> Arc<Handoff> {
        self.0.handoff.clone()
    }

    /// Start the fan-out task once; it ends when the engine is dropped.
    pub(crate) fn ensure_started(&self) {
        if self.0.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(run(weak.clone()));
        tokio::spawn(listen(weak));
    }
}

impl FanoutState {
    /// A receiver of `tenant`'s batches from now on.
    pub(crate) fn subscribe(
        &self,
        tenant: &str,
        capacity: usize,
    ) -> broadcast::Receiver<Arc<Batch>> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        match channels.get(tenant) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(capacity.max(1));
                channels.insert(tenant.to_owned(), tx);
                rx
            }
        }
    }

    /// Receivers across all tenants.
    pub(crate) fn receivers(&self) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum()
    }

    /// Wait until the task knows where it starts publishing. A subscriber
    /// must catch up only after this: its catch-up then reaches at least the
    /// start, and everything after the start comes through its channel.
    pub(crate) async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    fn has_subscribers(&self) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.values().any(|tx| tx.receiver_count() > 0)
    }

    /// `rows` parsed and grouped by tenant, for tenants with subscribers.
    fn group(&self, rows: Vec<LogEntry>) -> HashMap<String, Vec<(PulledChange, usize)>> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, tx| tx.receiver_count() > 0);
        let mut by_tenant: HashMap<String, Vec<(PulledChange, usize)>> = HashMap::new();
        for r in rows {
            if !channels.contains_key(&r.tenant_id) {
                continue;
            }
            let size = r.payload.len() + ENTRY_OVERHEAD;
            let (seq, tenant) = (r.seq, r.tenant_id.clone());
            match r.into_pulled() {
                Ok(mut c) => {
                    self.deps.wire.encode(&c.model, &mut c.payload);
                    by_tenant.entry(tenant).or_default().push((c, size));
                }
                Err(e) => {
                    tracing::error!(seq, error = %e, "op_log payload is not JSON; skipped in live fan-out");
                }
            }
        }
        by_tenant
    }

    /// Tell every subscribed tenant's sessions that the log had a gap.
    fn send_gap(&self) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let gap = Arc::new(Batch::gap());
        for tx in channels.values() {
            let _ = tx.send(gap.clone());
        }
    }

    /// Send one tenant's changes as batches of at most `max_bytes` each
    /// (one batch is one WebSocket message).
    fn send(
        &self,
        tenant: &str,
        changes: Vec<(PulledChange, usize)>,
        rows: Arc<CurrentRows>,
        max_bytes: usize,
        committed: Instant,
    ) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = channels.get(tenant) else {
            return;
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (c, size) in changes {
            if !batch.is_empty() && bytes + size > max_bytes {
                let _ = tx.send(Arc::new(Batch::new(
                    std::mem::take(&mut batch),
                    rows.clone(),
                    bytes,
                    committed,
                )));
                bytes = 0;
            }
            bytes += size;
            batch.push(c);
        }
        if !batch.is_empty() {
            let _ = tx.send(Arc::new(Batch::new(batch, rows, bytes, committed)));
        }
    }
}

/// Publish committed rows to the subscribed tenants. With a `can_read` hook,
/// each batch carries the current values of its rows, read once here.
///
/// Fails closed: if the current rows cannot be read, nothing of the page is
/// sent and the round fails, to be retried (subscribers skip by `seq`
/// whatever they get twice).
async fn publish(
    state: &FanoutState,
    rows: Vec<LogEntry>,
    committed: Instant,
) -> Result<(), crate::error::SyncError> {
    let mut ready = Vec::new();
    for (tenant, changes) in state.group(rows) {
        let current = if state.deps.read.filters() {
            let plain: Vec<PulledChange> = changes.iter().map(|(c, _)| c.clone()).collect();
            current_rows(state.deps.storage.as_ref(), &tenant, &plain).await?
        } else {
            CurrentRows::new()
        };
        ready.push((tenant, changes, current));
    }
    for (tenant, changes, current) in ready {
        state.send(
            &tenant,
            changes,
            Arc::new(current),
            state.deps.max_bytes,
            committed,
        );
    }
    Ok(())
}

/// Page size of the fan-out's log reads.
const PAGE: u64 = 1000;

async fn run(weak: Weak<FanoutState>) {
    /// Clears `running` however the task ends.
    struct Running(Weak<FanoutState>);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(state) = self.0.upgrade() {
                state.running.store(false, Ordering::SeqCst);
            }
        }
    }
    let Some(state) = weak.upgrade() else { return };
    state.running.store(true, Ordering::SeqCst);
    drop(state);
    let _running = Running(weak.clone());
    let mut published: Option<i64> = None;
    // Read the log on the first round, after a failed round, and whenever
    // something other than a local commit woke the task.
    let mut read_log = true;
    // The poll is a deadline, not a sleep restarted at every wake-up: under
    // a steady stream of local commits a sleep would never end, and commits
    // of other instances (or a dead commit listener) would go unnoticed.
    let mut next_poll = tokio::time::Instant::now();
    loop {
        let Some(state) = weak.upgrade() else { return };
        let kick = state.kick.clone();
        let handoff = state.handoff.clone();
        let poll = state.deps.config.poll_interval;
        if read_log {
            next_poll = tokio::time::Instant::now() + poll;
        }
        // A panic in a storage call fails this round only, like an error.
        let done = AssertUnwindSafe(round(&state, &mut published, read_log))
            .catch_unwind()
            .await;
        match done {
            Ok(Ok(())) => read_log = false,
            Ok(Err(e)) => {
                read_log = true;
                tracing::warn!(error = %e, "live fan-out could not read the log; retrying");
            }
            Err(_) => {
                read_log = true;
                tracing::error!("live fan-out panicked in a round; retrying");
            }
        }
        drop(state);
        tokio::select! {
            _ = handoff.committed.notified() => {}
            // Announcements of what is already published (on Postgres, this
            // instance's own commits) need no read.
            _ = kick.notified() => read_log |= kick.beyond(published),
            _ = tokio::time::sleep_until(next_poll) => {}
        }
        if tokio::time::Instant::now() >= next_poll {
            read_log = true;
        }
    }
}

async fn round(
    state: &FanoutState,
    published: &mut Option<i64>,
    mut read_log: bool,
) -> Result<(), crate::error::SyncError> {
    let mut from = match *published {
        Some(p) => p,
        None => {
            // Accept handed-over commits first: any commit the head read
            // below misses is then handed over.
            state.handoff.active.store(true, Ordering::SeqCst);
            // Subscribers catch up by pull to wherever they are; the fan-out
            // only needs to carry what commits after it started.
            let head = state.deps.storage.head().await?;
            *published = Some(head);
            state.ready.send_replace(true);
            head
        }
    };
    loop {
        match state.handoff.next(from) {
            Next::Block(handed) => {
                let rows = handed.entries;
                let last = rows.last().map_or(from, |r| r.seq);
                // A push can be followed from its commit to its publication.
                let span = tracing::info_span!("sync.fanout", changes = rows.len(), head = last);
                span.follows_from(&handed.span);
                // Always published (tenants without subscribers are skipped
                // inside): a subscriber that arrived since the round began
                // has caught up only to a head read before this block.
                publish(state, rows, handed.at).instrument(span).await?;
                from = last;
                *published = Some(from);
            }
            Next::Gap => {
                read_log = true;
                break;
            }
            Next::Empty => break,
        }
    }
    if read_log {
        let head = state.deps.storage.head().await?;
        if !state.has_subscribers() {
            // Long-polls only need the head; nobody needs the rows.
            from = from.max(head);
        }
        while from < head {
            let rows = state
                .deps
                .storage
                .select_all_since(from, head, PAGE)
                .await?;
            // Sequence numbers are dense: fewer rows than numbers means
            // entries were deleted under a horizon since they committed.
            let last = rows.last().map_or(head, |r| r.seq);
            let full = rows.len() as u64 == PAGE;
            if rows.len() as i64 != last - from || (!full && last < head) {
                state.send_gap();
            }
            if rows.is_empty() {
                from = head;
                break;
            }
            publish(state, rows, Instant::now()).await?;
            from = last;
            *published = Some(from);
        }
        *published = Some(from);
    }
    let moved = state.head.send_if_modified(|h| {
        let moved = from > *h;
        if moved {
            *h = from;
        }
        moved
    });
    if moved {
        metrics::gauge!(crate::telemetry::LOG_HEAD).set(from as f64);
    }
    Ok(())
}

/// Keep the storage's commit listener running (if it has one).
async fn listen(weak: Weak<FanoutState>) {
    loop {
        let Some(state) = weak.upgrade() else { return };
        let storage = state.deps.storage.clone();
        let kick = state.kick.clone();
        drop(state);
        let weak_state = weak.clone();
        let set = |listener: Listener| {
            if let Some(state) = weak_state.upgrade() {
                state.listener.store(listener as u8, Ordering::SeqCst);
            }
        };
        set(Listener::Present);
        let listened = storage.listen_commits(kick.clone()).await;
        kick.listening(false);
        match listened {
            Ok(false) => {
                set(Listener::None);
                return;
            }
            Ok(true) => set(Listener::Present),
            Err(e) => {
                set(Listener::Present);
                tracing::warn!(error = %e, "commit listener failed; reconnecting");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
