//! Tests of the fan-out task: its poll under a stream of local commits.

use super::*;
use better_sync_core::protocol::Op;

/// The poll is a deadline that a steady stream of local commits does
/// not push back: the fan-out re-reads the head every poll interval,
/// which is how it notices other instances' commits when no listener
/// tells it (SQLite, MySQL, or a dead Postgres listener).
mod poll {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use migration::{Migrator, MigratorTrait};

    use crate::storage::{SnapshotRecord, StorageError, StorageTx, Writes};
    use crate::{BetterSync, Ctx, SeaOrmStorage, Storage};
    use better_sync_core::protocol::{Change, PushRequest};

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
        async fn tenant_snapshot_page(
            &self,
            tenant_id: &str,
            after: Option<(&str, &str)>,
            limit: u64,
        ) -> Result<Vec<SnapshotRecord>, StorageError> {
            self.inner
                .tenant_snapshot_page(tenant_id, after, limit)
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
        let fanout = &sync.inner.engine.fanout;
        fanout.ensure_started();
        fanout.wait_ready().await;
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
