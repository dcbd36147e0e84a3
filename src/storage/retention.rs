//! What a storage offers so that its log can be compacted and rows erased:
//! horizons, marks of the head in time, chunked deletions and a lease.
//!
//! # The horizon rule
//!
//! A tenant's horizon is raised, and committed, *before* any of its log
//! entries at or below it is deleted, and readers look at the horizon
//! *after* they read the log. A reader that missed an entry therefore sees a
//! horizon above its cursor and answers `SYNC:CURSOR_STALE`; it never skips
//! silently.

use async_trait::async_trait;

use super::StorageError;

/// Which of a tenant's log entries [`Retention::delete_log`] deletes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFilter<'a> {
    /// Only the entries of this `(model, pk)` row.
    pub row: Option<(&'a str, &'a str)>,
    /// Keep the entries of this actor (erasure keeps its own deletes).
    pub keep_actor: Option<&'a str>,
}

/// One step of a chunked deletion: how many rows went, and where the next
/// step starts (`None`: the range is done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<K> {
    /// Rows deleted by this step.
    pub deleted: u64,
    /// Where the next step starts, or `None` when nothing is left.
    pub next: Option<K>,
}

/// Bytes the sync tables take on disk, as the database reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceUsed {
    /// The whole database file (SQLite) or the sync tables with their
    /// indexes (Postgres, MySQL).
    pub bytes: u64,
    /// Of which free pages the database keeps for reuse, when it tells.
    pub free_bytes: u64,
}

/// Retention's storage side. Every call is its own short transaction: a
/// compaction made of them never holds the log lock, so pushes go on.
#[async_trait]
pub trait Retention: Send + Sync {
    /// The tenant's horizon: log entries at or below it may be gone; `0`
    /// when nothing was ever compacted.
    async fn horizon(&self, tenant_id: &str) -> Result<i64, StorageError>;

    /// Raise the tenant's horizon to `seq` (a lower `seq` changes nothing).
    async fn raise_horizon(&self, tenant_id: &str, seq: i64) -> Result<(), StorageError>;

    /// The smallest tenant id above `after` that has log entries or
    /// snapshots: tenants are walked one index seek at a time.
    async fn next_tenant(&self, after: Option<&str>) -> Result<Option<String>, StorageError>;

    /// The `seq` of the tenant's `n`-th newest log entry (`n = 1`: its
    /// newest), if it has that many.
    async fn nth_newest_seq(&self, tenant_id: &str, n: u64) -> Result<Option<i64>, StorageError>;

    /// Record that the log head was `head` at `at_ms` (milliseconds since
    /// the Unix epoch).
    async fn mark_head(&self, at_ms: i64, head: i64) -> Result<(), StorageError>;

    /// The head of the newest mark at or before `at_ms`.
    async fn head_at(&self, at_ms: i64) -> Result<Option<i64>, StorageError>;

    /// Delete marks older than `before_ms`, keeping the newest of them (it
    /// still answers [`Retention::head_at`] for any later time).
    async fn prune_marks(&self, before_ms: i64) -> Result<u64, StorageError>;

    /// Delete at most about `limit` of the tenant's log entries with
    /// `after < seq <= upto` that pass `filter`, oldest first, in one
    /// transaction.
    async fn delete_log(
        &self,
        tenant_id: &str,
        after: i64,
        upto: i64,
        filter: LogFilter<'_>,
        limit: u64,
    ) -> Result<Step<i64>, StorageError>;

    /// Delete the tenant's tombstones (deleted rows' snapshots) whose `seq`
    /// is at most `upto`, among at most `limit` snapshots after the key
    /// `after` (by model, then id), in one transaction.
    async fn purge_tombstones(
        &self,
        tenant_id: &str,
        upto: i64,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Step<(String, String)>, StorageError>;

    /// Take or renew the lease `name` for `holder` until `now_ms + ttl_ms`:
    /// `true` when it is `holder`'s now, `false` when another holder's lease
    /// has not ended.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StorageError>;

    /// Give the lease back if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StorageError>;

    /// Give freed space back to the file system where the database can do
    /// it online (SQLite in incremental auto-vacuum mode); elsewhere the
    /// database reuses it by itself.
    async fn reclaim_space(&self) -> Result<(), StorageError>;

    /// What the sync tables take on disk.
    async fn space_used(&self) -> Result<SpaceUsed, StorageError>;
}
