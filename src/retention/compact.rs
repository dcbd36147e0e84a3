//! One compaction run: raise each tenant's horizon as the policy says,
//! delete the log below it and the tombstones past their window, in small
//! transactions, under a lease so that one compactor runs at a time.
//!
//! A run killed at any point leaves a consistent database: a horizon is
//! committed before anything under it is deleted, and whatever is left
//! under it is deleted by the next run.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::RetentionPolicy;
use crate::storage::{LogFilter, Storage, StorageError};
use crate::telemetry;

/// The lease compactors take (one row of `sync_leases`).
const LEASE: &str = "compaction";
/// How long a lease lasts unless renewed; a run renews it every quarter of
/// that, so a killed compactor holds it at most this long.
const LEASE_TTL_MS: i64 = 60_000;

/// What one compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Another compactor held the lease: nothing was done.
    pub skipped: bool,
    /// Tenants looked at.
    pub tenants: u64,
    /// Tenants whose horizon was raised.
    pub horizons_raised: u64,
    /// Log entries deleted.
    pub log_deleted: u64,
    /// Tombstones deleted.
    pub tombstones_deleted: u64,
    /// How long the run took.
    pub elapsed: std::time::Duration,
}

/// Run one compaction with `policy` at time `now_ms` (milliseconds since
/// the Unix epoch) as lease holder `holder`.
pub(crate) async fn compact(
    storage: &dyn Storage,
    policy: &RetentionPolicy,
    holder: &str,
    now_ms: i64,
) -> Result<CompactionReport, StorageError> {
    let started = Instant::now();
    let Some(r) = storage.retention() else {
        return Err(StorageError::Corrupt(
            "this storage does not support compaction".into(),
        ));
    };
    let mut report = CompactionReport::default();
    if !r.try_lease(LEASE, holder, now_ms, LEASE_TTL_MS).await? {
        report.skipped = true;
        metrics::counter!(telemetry::COMPACTIONS, "outcome" => "skipped").increment(1);
        return Ok(report);
    }
    let result = compact_holding_lease(storage, policy, holder, now_ms, &mut report).await;
    // A lease not given back ends by itself.
    let _ = r.release_lease(LEASE, holder).await;
    report.elapsed = started.elapsed();
    let outcome = if result.is_ok() { "done" } else { "failed" };
    metrics::counter!(telemetry::COMPACTIONS, "outcome" => outcome).increment(1);
    result.map(|()| report)
}

async fn compact_holding_lease(
    storage: &dyn Storage,
    policy: &RetentionPolicy,
    holder: &str,
    now_ms: i64,
    report: &mut CompactionReport,
) -> Result<(), StorageError> {
    let Some(r) = storage.retention() else {
        return Ok(());
    };
    let head = storage.head().await?;
    r.mark_head(now_ms, head).await?;
    let ms = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as i64;
    let aged = match policy.max_age {
        Some(age) => r.head_at(now_ms.saturating_sub(ms(age))).await?,
        None => None,
    };
    let tombstones_upto = r
        .head_at(now_ms.saturating_sub(ms(policy.tombstones)))
        .await?
        .unwrap_or(0);
    // After a chunk that deleted something: the policy's pause, so that
    // pushes get the write lock, and the lease renewed when a quarter of it
    // has passed (a run over many idle tenants writes nothing per tenant).
    let renewed = std::sync::atomic::AtomicI64::new(super::now_ms());
    let after_chunk = |deleted: u64| {
        let renewed = &renewed;
        async move {
            if deleted > 0 && !policy.pause.is_zero() {
                tokio::time::sleep(policy.pause).await;
            }
            let now = super::now_ms();
            if now - renewed.load(Ordering::Relaxed) < LEASE_TTL_MS / 4 {
                return Ok(());
            }
            renewed.store(now, Ordering::Relaxed);
            if r.try_lease(LEASE, holder, now, LEASE_TTL_MS).await? {
                Ok(())
            } else {
                Err(StorageError::Corrupt(
                    "the compaction lease was taken over (this run was slower than its lease); \
                     stopping"
                        .into(),
                ))
            }
        }
    };
    let mut tenant: Option<String> = None;
    while let Some(t) = r.next_tenant(tenant.as_deref()).await? {
        report.tenants += 1;
        let mut target = aged.unwrap_or(0);
        if let Some(n) = policy.max_entries
            && let Some(seq) = r.nth_newest_seq(&t, n + 1).await?
        {
            target = target.max(seq);
        }
        let target = target.min(head);
        let current = r.horizon(&t).await?;
        if target > current {
            // Committed before anything under it goes (the horizon rule).
            r.raise_horizon(&t, target).await?;
            report.horizons_raised += 1;
        }
        let horizon = current.max(target);
        let mut next = (horizon > 0).then_some(0);
        while let Some(after) = next {
            let step = r
                .delete_log(&t, after, horizon, LogFilter::default(), policy.chunk)
                .await?;
            report.log_deleted += step.deleted;
            metrics::counter!(telemetry::COMPACTED, "what" => "log").increment(step.deleted);
            after_chunk(step.deleted).await?;
            next = step.next;
        }
        let upto = horizon.min(tombstones_upto);
        let mut next: Option<Option<(String, String)>> = (upto > 0).then_some(None);
        while let Some(key) = next {
            let after = key.as_ref().map(|(m, id)| (m.as_str(), id.as_str()));
            let step = r.purge_tombstones(&t, upto, after, policy.chunk).await?;
            report.tombstones_deleted += step.deleted;
            metrics::counter!(telemetry::COMPACTED, "what" => "tombstones").increment(step.deleted);
            after_chunk(step.deleted).await?;
            next = step.next.map(Some);
        }
        tenant = Some(t);
    }
    // Marks older than anything the policy still asks about are not needed
    // (the newest of them is kept to answer for later times).
    let keep = policy.max_age.unwrap_or_default().max(policy.tombstones);
    r.prune_marks(now_ms.saturating_sub(ms(keep))).await?;
    if report.log_deleted + report.tombstones_deleted > 0 {
        r.reclaim_space().await?;
    }
    if report.log_deleted + report.tombstones_deleted + report.horizons_raised > 0 {
        tracing::info!(
            tenants = report.tenants,
            horizons_raised = report.horizons_raised,
            log_deleted = report.log_deleted,
            tombstones_deleted = report.tombstones_deleted,
            "compaction"
        );
    }
    Ok(())
}
