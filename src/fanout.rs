//! Live fan-out: read each committed range of the log once, publish it to the
//! subscribers of each tenant.
//!
//! One task per engine, started by the first live subscriber or long-poll.
//! The engine's writer hands it every committed block of entries (a
//! [`Handoff`]), which it publishes without reading them back. It also wakes
//! on commits of other instances (Postgres `LISTEN/NOTIFY`, see
//! [`crate::Storage::listen_commits`]), on a gap in the handed-over blocks
//! and on a slow poll as a fallback; then it reads `(published, head]` from
//! the log. Either way it publishes in sequence order and sends each
//! tenant's share into a bounded broadcast channel. Because it publishes
//! every sequence number exactly once and in order, a subscriber that
//! subscribes first and then catches up by pull, skipping what it already
//! has by `seq`, sees no gap and no duplicate. A subscriber that falls more
//! than the channel's capacity behind is told so by the channel (`Lagged`)
//! and catches up by pull from its own cursor: memory stays bounded and
//! nobody else slows down.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, broadcast};

use crate::engine::{CurrentRows, ENTRY_OVERHEAD, Inner, current_rows};
use crate::protocol::PulledChange;
use crate::storage::{CommitSignal, LogEntry};

/// One tenant's share of one fan-out round, in sequence order.
pub(crate) struct Batch {
    pub(crate) changes: Vec<PulledChange>,
    /// The size the batch was cut to, estimated as pulls estimate it.
    pub(crate) bytes: usize,
    /// Current row values for `can_read`, read when the batch was published.
    pub(crate) rows: Arc<CurrentRows>,
    /// The `changes` frame every unfiltered subscriber sends, serialized once.
    frame: OnceLock<String>,
    /// The changes as JSON array elements (no brackets), serialized once,
    /// for frames that carry several batches.
    elements: OnceLock<String>,
}

impl Batch {
    fn new(changes: Vec<PulledChange>, rows: Arc<CurrentRows>, bytes: usize) -> Self {
        Self {
            changes,
            bytes,
            rows,
            frame: OnceLock::new(),
            elements: OnceLock::new(),
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

/// Entries handed over beyond this many are dropped, oldest first; the gap
/// is then read from the log.
const MAX_HANDOFF_ENTRIES: usize = 10_000;

/// Committed blocks of entries, from the engine's writer to the fan-out, so
/// that a local commit reaches subscribers without a read of the log.
///
/// Purely a shortcut: whatever is missing (commits of other instances, a
/// block dropped here, a commit made before the fan-out started) shows as a
/// gap in sequence numbers, and the fan-out reads the log instead.
#[derive(Default)]
pub(crate) struct Handoff {
    blocks: Mutex<VecDeque<Vec<LogEntry>>>,
    /// Set by the fan-out task when it starts, before it reads the head.
    active: AtomicBool,
    /// Woken after each handed-over commit.
    committed: Notify,
}

/// What the handoff holds right after a sequence number.
enum Next {
    /// The entries that follow it, in order.
    Block(Vec<LogEntry>),
    /// Entries that do not follow it: something in between must be read.
    Gap,
    /// Nothing.
    Empty,
}

impl Handoff {
    /// Hand over the entries of one commit, in sequence order.
    pub(crate) fn offer(&self, entries: Vec<LogEntry>) {
        // Before the fan-out starts nobody takes them; its first head read
        // covers them.
        if entries.is_empty() || !self.active.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            blocks.push_back(entries);
            let mut held: usize = blocks.iter().map(Vec::len).sum();
            while held > MAX_HANDOFF_ENTRIES && blocks.len() > 1 {
                held -= blocks.pop_front().map_or(0, |b| b.len());
            }
        }
        self.committed.notify_one();
    }

    /// The block that continues right after `after`, dropping what is at
    /// or below it.
    fn next(&self, after: i64) -> Next {
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut block) = blocks.pop_front() {
            block.retain(|e| e.seq > after);
            match block.first() {
                None => continue,
                Some(e) if e.seq == after + 1 => return Next::Block(block),
                Some(_) => {
                    blocks.push_front(block);
                    return Next::Gap;
                }
            }
        }
        Next::Empty
    }
}

pub(crate) struct Fanout {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Batch>>>>,
    /// Woken by the storage's commit listener (other instances' commits).
    pub(crate) kick: Arc<CommitSignal>,
    /// Local commits, from the engine's writer.
    pub(crate) handoff: Arc<Handoff>,
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
            handoff: Arc::default(),
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
                    bytes,
                )));
                bytes = 0;
            }
            bytes += size;
            batch.push(c);
        }
        if !batch.is_empty() {
            let _ = tx.send(Arc::new(Batch::new(batch, rows, bytes)));
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
    // Read the log on the first round, after a failed round, and whenever
    // something other than a local commit woke the task.
    let mut read_log = true;
    // The poll is a deadline, not a sleep restarted at every wake-up: under
    // a steady stream of local commits a sleep would never end, and commits
    // of other instances (or a dead commit listener) would go unnoticed.
    let mut next_poll = tokio::time::Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let kick = inner.fanout.kick.clone();
        let handoff = inner.fanout.handoff.clone();
        let poll = inner.fanout_config.poll_interval;
        if read_log {
            next_poll = tokio::time::Instant::now() + poll;
        }
        // A panic in a storage call fails this round only, like an error.
        let done = AssertUnwindSafe(round(&inner, &mut published, read_log))
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
        drop(inner);
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
    inner: &Inner,
    published: &mut Option<i64>,
    mut read_log: bool,
) -> Result<(), crate::SyncError> {
    let mut from = match *published {
        Some(p) => p,
        None => {
            // Accept handed-over commits first: any commit the head read
            // below misses is then handed over.
            inner.fanout.handoff.active.store(true, Ordering::SeqCst);
            // Subscribers catch up by pull to wherever they are; the fan-out
            // only needs to carry what commits after it started.
            let head = inner.storage.head().await?;
            *published = Some(head);
            inner.fanout.ready.send_replace(true);
            head
        }
    };
    loop {
        match inner.fanout.handoff.next(from) {
            Next::Block(rows) => {
                let last = rows.last().map_or(from, |r| r.seq);
                // Always published (tenants without subscribers are skipped
                // inside): a subscriber that arrived since the round began
                // has caught up only to a head read before this block.
                publish(inner, rows).await?;
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
        let head = inner.storage.head().await?;
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
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Op;

    /// The poll is a deadline that a steady stream of local commits does
    /// not push back: the fan-out re-reads the head every poll interval,
    /// which is how it notices other instances' commits when no listener
    /// tells it (SQLite, MySQL, or a dead Postgres listener).
    mod poll {
        use std::sync::atomic::AtomicUsize;

        use async_trait::async_trait;
        use migration::{Migrator, MigratorTrait};

        use crate::protocol::{Change, PushRequest};
        use crate::storage::{SnapshotRecord, StorageError, StorageTx, Writes};
        use crate::{BetterSync, Ctx, SeaOrmStorage, Storage};

        use super::*;

        /// The real storage, counting head reads, with no commit listener.
        struct CountingHeads {
            inner: SeaOrmStorage,
            heads: Arc<AtomicUsize>,
        }

        #[async_trait]
        impl Storage for CountingHeads {
            async fn begin(&self) -> Result<Box<dyn StorageTx>, StorageError> {
                self.inner.begin().await
            }
            async fn head(&self) -> Result<i64, StorageError> {
                self.heads.fetch_add(1, Ordering::SeqCst);
                self.inner.head().await
            }
            async fn commit_if_head(
                &self,
                expected_head: i64,
                writes: Writes<'_>,
            ) -> Result<bool, StorageError> {
                self.inner.commit_if_head(expected_head, writes).await
            }
            async fn select_changes_since(
                &self,
                tenant_id: &str,
                after: i64,
                upto: i64,
                limit: u64,
            ) -> Result<Vec<LogEntry>, StorageError> {
                self.inner
                    .select_changes_since(tenant_id, after, upto, limit)
                    .await
            }
            async fn select_all_since(
                &self,
                after: i64,
                upto: i64,
                limit: u64,
            ) -> Result<Vec<LogEntry>, StorageError> {
                self.inner.select_all_since(after, upto, limit).await
            }
            async fn read_snapshot(
                &self,
                tenant_id: &str,
                model: &str,
                id: &str,
            ) -> Result<Option<SnapshotRecord>, StorageError> {
                self.inner.read_snapshot(tenant_id, model, id).await
            }
            async fn read_snapshots(
                &self,
                tenant_id: &str,
                keys: &[(&str, &str)],
            ) -> Result<Vec<SnapshotRecord>, StorageError> {
                self.inner.read_snapshots(tenant_id, keys).await
            }
            async fn snapshot_page(
                &self,
                tenant_id: &str,
                model: &str,
                after: Option<&str>,
                limit: u64,
            ) -> Result<Vec<SnapshotRecord>, StorageError> {
                self.inner
                    .snapshot_page(tenant_id, model, after, limit)
                    .await
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_poll_fires_under_a_stream_of_local_commits() {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
            let db = SeaOrmStorage::connect(&url).await.expect("connect");
            Migrator::up(&db, None).await.expect("migrate");
            let heads = Arc::new(AtomicUsize::new(0));
            let sync = BetterSync::builder()
                .storage(CountingHeads {
                    inner: SeaOrmStorage::new(db),
                    heads: heads.clone(),
                })
                .authorize(|_| async { Ok(Ctx::new("u", "t")) })
                .poll_interval(Duration::from_millis(100))
                .build()
                .expect("build");
            sync.inner.fanout.ensure_started(&sync.inner);
            sync.inner.fanout.wait_ready().await;
            let ctx = Ctx::new("u", "t");
            let before = heads.load(Ordering::SeqCst);
            // A commit every 20 ms for 1.2 s: each wakes the fan-out
            // (pushes themselves read no head).
            let start = std::time::Instant::now();
            let mut n = 0;
            while start.elapsed() < Duration::from_millis(1200) {
                n += 1;
                let change = Change {
                    op_id: format!("o{n}"),
                    model: "todo".into(),
                    pk: format!("{n}"),
                    op: Op::Insert,
                    payload: serde_json::json!({}),
                    updated_at: "2026-01-01T00:00:00.000Z".into(),
                    actor: "a".into(),
                };
                let req = PushRequest {
                    client_id: "c".into(),
                    changes: vec![change],
                };
                sync.push(&ctx, req).await.expect("push");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let polls = heads.load(Ordering::SeqCst) - before;
            // About 12 at 100 ms; a restarted timer would give none.
            assert!(polls >= 4, "{polls} head reads in 1.2 s of commits");
        }
    }

    fn entries(seqs: std::ops::RangeInclusive<i64>) -> Vec<LogEntry> {
        seqs.map(|seq| LogEntry {
            seq,
            op_id: format!("o{seq}"),
            tenant_id: "t".into(),
            model: "todo".into(),
            pk: format!("{seq}"),
            op: Op::Insert,
            actor: "a".into(),
            updated_at: "2026-01-01T00:00:00.000Z-0000".into(),
            payload: "{}".into(),
        })
        .collect()
    }

    fn seqs(next: Next) -> Option<Vec<i64>> {
        match next {
            Next::Block(b) => Some(b.iter().map(|e| e.seq).collect()),
            Next::Gap => Some(Vec::new()),
            Next::Empty => None,
        }
    }

    #[test]
    fn nothing_is_held_before_the_fan_out_starts() {
        let h = Handoff::default();
        h.offer(entries(1..=3));
        assert!(matches!(h.next(0), Next::Empty));
    }

    #[test]
    fn blocks_follow_in_order_and_old_entries_are_dropped() {
        let h = Handoff::default();
        h.active.store(true, Ordering::SeqCst);
        h.offer(entries(1..=3));
        h.offer(entries(4..=5));
        h.offer(entries(6..=9));
        // Entries at or below `after` (already read from the log) are cut.
        assert_eq!(seqs(h.next(4)), Some(vec![5]));
        assert_eq!(seqs(h.next(5)), Some(vec![6, 7, 8, 9]));
        assert_eq!(seqs(h.next(9)), None);
    }

    #[test]
    fn a_gap_is_reported_and_the_block_kept() {
        let h = Handoff::default();
        h.active.store(true, Ordering::SeqCst);
        // 4..=5 committed by another instance, never handed over.
        h.offer(entries(6..=7));
        assert_eq!(seqs(h.next(3)), Some(vec![]), "gap");
        // After the log read covered 4..=7, the kept block is stale.
        assert_eq!(seqs(h.next(7)), None);
        h.offer(entries(8..=8));
        assert_eq!(seqs(h.next(5)), Some(vec![]), "6..=7 were dropped");
    }

    #[test]
    fn the_held_entries_are_bounded() {
        let h = Handoff::default();
        h.active.store(true, Ordering::SeqCst);
        let block = 1000;
        for b in 0..20 {
            h.offer(entries(b * block + 1..=(b + 1) * block));
        }
        let held: usize = h
            .blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(Vec::len)
            .sum();
        assert!(held <= MAX_HANDOFF_ENTRIES, "{held}");
        // The oldest were dropped: reading from the start finds a gap.
        assert_eq!(seqs(h.next(0)), Some(vec![]));
    }
}
