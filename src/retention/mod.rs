//! Bounded storage: the retention policy, log compaction (a background task
//! and on demand) and erasure of rows and tenants.
//!
//! Compaction deletes a tenant's log entries at or below its horizon: the
//! snapshots already hold their effect (they are written in the same
//! transaction as the entries), so a client whose cursor is below the
//! horizon bootstraps again from the snapshot (`SYNC:CURSOR_STALE`) and
//! every other one pulls as before. See [`crate::storage::Retention`] for
//! the rule that keeps readers from skipping silently.

mod compact;
mod erase;

pub use self::compact::CompactionReport;
pub(crate) use self::compact::compact;
pub use self::erase::ErasureReport;
pub(crate) use self::erase::{erase_rows, erase_tenant};

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::storage::Storage;

/// How long the log keeps entries, and deleted rows their tombstones.
///
/// An entry goes when it is older than [`RetentionPolicy::max_age`] *or*
/// beyond the newest [`RetentionPolicy::max_entries`] of its tenant
/// (whichever is set; with neither, the log keeps everything). A client
/// whose cursor is older than what is kept bootstraps again from the
/// snapshot, keeping its queued changes.
///
/// ```
/// use std::time::Duration;
/// use better_sync::RetentionPolicy;
///
/// let policy = RetentionPolicy::default()
///     .max_age(Duration::from_secs(30 * 24 * 3600))
///     .max_entries(1_000_000)
///     .tombstones(Duration::from_secs(90 * 24 * 3600))
///     .every(Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_entries: Option<u64>,
    pub(crate) tombstones: Duration,
    pub(crate) interval: Duration,
    pub(crate) chunk: u64,
    pub(crate) pause: Duration,
}

impl Default for RetentionPolicy {
    /// Keeps every entry; tombstones for 30 days once their entries go;
    /// runs every 5 minutes in chunks of 1,000 rows, 10 ms apart.
    fn default() -> Self {
        Self {
            max_age: None,
            max_entries: None,
            tombstones: Duration::from_secs(30 * 24 * 3600),
            interval: Duration::from_secs(300),
            chunk: 1000,
            pause: Duration::from_millis(10),
        }
    }
}

impl RetentionPolicy {
    /// Delete log entries older than this (measured from their commit, to
    /// within one compaction interval).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Keep at most this many log entries per tenant (at least 1).
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n.max(1));
        self
    }

    /// Keep a deleted row's tombstone this long after its delete was
    /// committed, and at least until its log entries are compacted: until
    /// then a late write with an older clock still loses to the delete.
    /// After it, such a write (from a client offline that long) may bring
    /// the row back.
    pub fn tombstones(mut self, window: Duration) -> Self {
        self.tombstones = window;
        self
    }

    /// How often the background compaction runs.
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Rows deleted per transaction (default 1,000): smaller chunks hold
    /// the database's locks for less time.
    pub fn chunk(mut self, rows: u64) -> Self {
        self.chunk = rows.clamp(1, 100_000);
        self
    }

    /// Wait this long between chunks (default 10 ms), so that pushes get
    /// the database's write lock in between: compaction is background work
    /// and need not be fast (`Duration::ZERO`: as fast as it can).
    pub fn pause(mut self, between_chunks: Duration) -> Self {
        self.pause = between_chunks;
        self
    }

    /// Whether this policy deletes any log entry.
    pub fn compacts(&self) -> bool {
        self.max_age.is_some() || self.max_entries.is_some()
    }
}

/// The engine's background compaction: one task per engine, started with
/// the first request on a runtime, ending with the engine.
pub(crate) struct Compactor {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) policy: RetentionPolicy,
    /// Who holds the lease: this process and engine, at random.
    pub(crate) holder: String,
    task: OnceLock<()>,
}

impl Compactor {
    pub(crate) fn new(storage: Arc<dyn Storage>, policy: RetentionPolicy) -> Self {
        Self {
            storage,
            policy,
            holder: lease_holder(),
            task: OnceLock::new(),
        }
    }

    /// Start the background task if it is not running and a runtime is.
    pub(crate) fn ensure_started(self: &Arc<Self>) {
        if self.task.get().is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.task.get_or_init(|| {
            tokio::spawn(run(Arc::downgrade(self)));
        });
    }
}

/// A random holder id, so that instances tell their leases apart.
pub(crate) fn lease_holder() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness the time still tells instances apart well enough
    // for a lease that only needs them to differ.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = now_ms().to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", std::process::id())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn run(weak: Weak<Compactor>) {
    loop {
        let interval = match weak.upgrade() {
            Some(c) => {
                if let Err(e) = compact(c.storage.as_ref(), &c.policy, &c.holder, now_ms()).await {
                    tracing::warn!(error = %e, "compaction failed; it runs again at the next interval");
                }
                c.policy.interval
            }
            None => return,
        };
        tokio::time::sleep(interval).await;
    }
}
