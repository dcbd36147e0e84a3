//! Live fan-out: read each committed range of the log once, publish it to the
//! subscribers of each tenant.
//!
//! One task per engine, started by the first live subscriber or long-poll. It
//! wakes on local commits, on commits of other instances (Postgres
//! `LISTEN/NOTIFY`, see [`crate::Storage::listen_commits`]) and on a slow poll
//! as a fallback, then reads `(published, head]` in sequence order and sends
//! each tenant's share into a bounded broadcast channel. Because it publishes
//! every sequence number exactly once and in order, a subscriber that
//! subscribes first and then catches up by pull, skipping what it already
//! has by `seq`, sees no gap and no duplicate. A subscriber that falls more
//! than the channel's capacity behind is told so by the channel (`Lagged`)
//! and catches up by pull from its own cursor: memory stays bounded and
//! nobody else slows down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::engine::{CurrentRows, ENTRY_OVERHEAD, Inner, current_rows};
use crate::protocol::PulledChange;
use crate::storage::LogEntry;

/// One tenant's share of one fan-out round, in sequence order.
pub(crate) struct Batch {
    pub(crate) changes: Vec<PulledChange>,
    /// Current row values for `can_read`, read when the batch was published.
    pub(crate) rows: Arc<CurrentRows>,
    /// The `changes` frame every unfiltered subscriber sends, serialized once.
    frame: OnceLock<String>,
}

impl Batch {
    fn new(changes: Vec<PulledChange>, rows: Arc<CurrentRows>) -> Self {
        Self {
            changes,
            rows,
            frame: OnceLock::new(),
        }
    }

    /// The last sequence number in the batch.
    pub(crate) fn last_seq(&self) -> i64 {
        self.changes.last().map_or(0, |c| c.seq)
    }

    pub(crate) fn shared_frame(&self, make: impl FnOnce() -> String) -> &str {
        self.frame.get_or_init(make)
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

pub(crate) struct Fanout {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Batch>>>>,
    /// Woken by local commits and by the storage's commit listener.
    pub(crate) kick: Arc<Notify>,
    started: AtomicBool,
    /// Times a subscriber fell behind the live buffer and caught up by pull.
    pub(crate) resyncs: AtomicU64,
    /// Set once the task has fixed where it starts publishing.
    ready: tokio::sync::watch::Sender<bool>,
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            channels: Mutex::default(),
            kick: Arc::default(),
            started: AtomicBool::default(),
            resyncs: AtomicU64::default(),
            ready: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Fanout {
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

    /// Start the fan-out task once; it ends when the engine is dropped.
    pub(crate) fn ensure_started(&self, inner: &Arc<Inner>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(inner);
        tokio::spawn(run(weak.clone()));
        tokio::spawn(listen(weak));
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
                Ok(c) => by_tenant.entry(tenant).or_default().push((c, size)),
                Err(e) => {
                    tracing::error!(seq, error = %e, "op_log payload is not JSON; skipped in live fan-out");
                }
            }
        }
        by_tenant
    }

    /// Send one tenant's changes as batches of at most `max_bytes` each
    /// (one batch is one WebSocket message).
    fn send(
        &self,
        tenant: &str,
        changes: Vec<(PulledChange, usize)>,
        rows: Arc<CurrentRows>,
        max_bytes: usize,
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
                )));
                bytes = 0;
            }
            bytes += size;
            batch.push(c);
        }
        if !batch.is_empty() {
            let _ = tx.send(Arc::new(Batch::new(batch, rows)));
        }
    }
}

/// Publish committed rows to the subscribed tenants. With a `can_read` hook,
/// each batch carries the current values of its rows, read once here.
///
/// Fails closed: if the current rows cannot be read, nothing of the page is
/// sent and the round fails, to be retried (subscribers skip by `seq`
/// whatever they get twice).
async fn publish(inner: &Inner, rows: Vec<LogEntry>) -> Result<(), crate::SyncError> {
    let mut ready = Vec::new();
    for (tenant, changes) in inner.fanout.group(rows) {
        let current = if inner.can_read.is_some() {
            let plain: Vec<PulledChange> = changes.iter().map(|(c, _)| c.clone()).collect();
            current_rows(inner, &tenant, &plain).await?
        } else {
            CurrentRows::new()
        };
        ready.push((tenant, changes, current));
    }
    for (tenant, changes, current) in ready {
        inner.fanout.send(
            &tenant,
            changes,
            Arc::new(current),
            inner.limits.max_pull_bytes,
        );
    }
    Ok(())
}

/// Page size of the fan-out's log reads.
const PAGE: u64 = 1000;

async fn run(weak: Weak<Inner>) {
    let mut published: Option<i64> = None;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let kick = inner.fanout.kick.clone();
        let poll = inner.fanout_config.poll_interval;
        match round(&inner, &mut published).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "live fan-out could not read the log; retrying"),
        }
        drop(inner);
        let _ = tokio::time::timeout(poll, kick.notified()).await;
    }
}

async fn round(inner: &Inner, published: &mut Option<i64>) -> Result<(), crate::SyncError> {
    let head = inner.storage.head().await?;
    // Subscribers catch up by pull to wherever they are; the fan-out only
    // needs to carry what commits after it started.
    let mut from = *published.get_or_insert(head);
    inner.fanout.ready.send_replace(true);
    if !inner.fanout.has_subscribers() {
        // Long-polls only need the head; nobody needs the rows.
        from = from.max(head);
    }
    while from < head {
        let rows = inner.storage.select_all_since(from, head, PAGE).await?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            from = head;
            break;
        };
        publish(inner, rows).await?;
        from = last;
        *published = Some(from);
    }
    *published = Some(from);
    inner.head.send_if_modified(|h| {
        let moved = from > *h;
        if moved {
            *h = from;
        }
        moved
    });
    Ok(())
}

/// Keep the storage's commit listener running (if it has one).
async fn listen(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let storage = inner.storage.clone();
        let kick = inner.fanout.kick.clone();
        drop(inner);
        match storage.listen_commits(kick).await {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => tracing::warn!(error = %e, "commit listener failed; reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
