//! The writer's commit paths on a real SQLite database.

use super::row_cache::RowCache;
use super::strategy::*;
use super::*;
use crate::error::ErrorCode;
use crate::storage::Storage;
use better_sync_core::protocol::Op;

/// The writer's two paths on a real SQLite database: what it holds and
/// what it must read.
mod paths {
    use super::*;
    use crate::storage::SeaOrmStorage;
    use migration::{Migrator, MigratorTrait};
    use serde_json::{Value, json};

    async fn storage(dir: &tempfile::TempDir) -> SeaOrmStorage {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let db = SeaOrmStorage::connect(&url).await.expect("connect");
        Migrator::up(&db, None).await.expect("migrate");
        SeaOrmStorage::new(db)
    }

    /// One batch; the receivers are dropped, which `try_commit` does not
    /// look at (the writer's loop does).
    fn batch(changes: &[(&str, &str, Op, Value, u32)]) -> Pending {
        let changes = changes
            .iter()
            .map(|(op_id, pk, op, payload, at)| {
                let updated_at = format!("2026-11-25T10:00:{at:02}.000Z-0000");
                ValidChange {
                    change: Change {
                        op_id: (*op_id).into(),
                        model: "todo".into(),
                        pk: (*pk).into(),
                        op: *op,
                        payload: payload.clone(),
                        updated_at: updated_at.clone(),
                        actor: "a".into(),
                    },
                    clock: updated_at.parse().expect("clock"),
                    updated_at,
                    payload_text: payload.to_string(),
                }
            })
            .collect();
        Pending {
            tenant: "t".into(),
            changes,
            reply: oneshot::channel().0,
            span: tracing::Span::none(),
        }
    }

    async fn value(storage: &SeaOrmStorage, pk: &str) -> Value {
        let r = storage
            .read_snapshot("t", "todo", pk)
            .await
            .expect("read")
            .expect("row");
        serde_json::from_str(&r.value).expect("json")
    }

    #[tokio::test]
    async fn held_rows_commit_without_reads_and_refusals_fall_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = storage(&dir).await;
        let mut known = RowCache::default();
        let group = [batch(&[("o1", "r", Op::Insert, json!({"a": 1}), 1)])];
        assert!(
            commit_known(&storage, &Materializers::default(), &mut known, &group)
                .await
                .expect("commit")
                .is_none(),
            "nothing known yet"
        );
        try_commit(&storage, &Materializers::default(), &mut known, &group)
            .await
            .expect("commit");
        // The row it committed, and a row it has not seen, go without reads.
        let group = [batch(&[
            ("o2", "r", Op::Update, json!({"b": 2}), 2),
            ("o3", "s", Op::Insert, json!({"c": 3}), 2),
        ])];
        let done = commit_known(&storage, &Materializers::default(), &mut known, &group)
            .await
            .expect("commit");
        assert_eq!(done.map(|d| d.head), Some(3));
        assert_eq!(value(&storage, "r").await, json!({"a": 1, "b": 2}));
        // A replay is refused there and answered by the path that reads.
        let group = [batch(&[("o3", "s", Op::Insert, json!({"c": 3}), 2)])];
        assert!(
            commit_known(&storage, &Materializers::default(), &mut known, &group)
                .await
                .expect("commit")
                .is_none()
        );
        assert!(!known.fast);
        let done = try_commit(&storage, &Materializers::default(), &mut known, &group)
            .await
            .expect("commit");
        let results = done
            .outcomes
            .into_iter()
            .next()
            .expect("batch")
            .expect("ok");
        assert!(results[0].duplicate);
        assert!(known.fast, "the head had not moved");
    }

    /// A row taken for new whose only change was refused must not be
    /// held as empty: it exists, and a later update would be merged
    /// into nothing.
    #[tokio::test]
    async fn a_row_whose_only_change_was_refused_is_not_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = storage(&dir).await;
        let mut known = RowCache::default();
        let group = [batch(&[(
            "o1",
            "r",
            Op::Insert,
            json!({"a": 1, "b": 1}),
            1,
        )])];
        try_commit(&storage, &Materializers::default(), &mut known, &group)
            .await
            .expect("commit");
        known
            .recent
            .remove(&("t".into(), "todo".into(), "r".into()));
        // Batch 2 reuses batch 1's op id for a change of `r`: refused.
        let group = [
            batch(&[("x", "s", Op::Insert, json!({}), 2)]),
            batch(&[("x", "r", Op::Insert, json!({"a": 9}), 2)]),
        ];
        let done = commit_known(&storage, &Materializers::default(), &mut known, &group)
            .await
            .expect("commit")
            .expect("without reads");
        assert!(matches!(&done.outcomes[1], Err(e) if e.code() == ErrorCode::OpIdConflict));
        assert!(
            known
                .get(&("t".into(), "todo".into(), "r".into()))
                .is_none()
        );
        let group = [batch(&[("o3", "r", Op::Update, json!({"a": 3}), 3)])];
        try_commit(&storage, &Materializers::default(), &mut known, &group)
            .await
            .expect("commit");
        assert_eq!(value(&storage, "r").await, json!({"a": 3, "b": 1}));
    }
}
