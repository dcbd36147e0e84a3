//! The `Storage` trait over SeaORM, on SQLite, Postgres and MariaDB.

use crate::common;

use std::time::Duration;

use better_sync::SeaOrmStorage;
use better_sync::protocol::Op;
use better_sync::storage::{LogEntry, SnapshotRecord, Storage, Writes};
use common::{Backend, TestDb};

fn entry(seq: i64, tenant: &str, op_id: &str) -> LogEntry {
    LogEntry {
        seq,
        op_id: op_id.into(),
        tenant_id: tenant.into(),
        model: "todo".into(),
        pk: format!("pk{seq}"),
        op: Op::Insert,
        actor: "a".into(),
        updated_at: "2026-01-01T00:00:00.000Z-0000".into(),
        payload: format!("{{\"n\":{seq}}}"),
    }
}

fn snap(tenant: &str, id: &str, value: &str, seq: i64) -> SnapshotRecord {
    SnapshotRecord {
        tenant_id: tenant.into(),
        model: "todo".into(),
        id: id.into(),
        value: value.into(),
        clocks: "{}".into(),
        deleted: false,
        seq,
    }
}

fn writes<'a>(
    entries: &'a [LogEntry],
    created: &'a [SnapshotRecord],
    updated: &'a [SnapshotRecord],
    last_seq: i64,
) -> Writes<'a> {
    Writes {
        entries,
        created,
        updated,
        last_seq,
        materialized: &[],
    }
}

/// The storage under test over the test database's pool; on SQLite its hot
/// statements go direct unless `direct` is false.
fn storage_over(db: &TestDb, direct: bool) -> SeaOrmStorage {
    SeaOrmStorage::new(db.db.clone()).sqlite_direct(direct)
}

async fn trait_round_trip(backend: Backend) {
    trait_round_trip_on(backend, true).await;
}

async fn trait_round_trip_on(backend: Backend, direct: bool) {
    let db = TestDb::new(backend).await;
    let storage = storage_over(&db, direct);
    assert_eq!(storage.head().await.expect("head"), 0);

    let mut tx = storage.begin().await.expect("begin");
    assert_eq!(tx.last_seq(), 0);
    let rows = [
        entry(1, "t1", "a"),
        entry(2, "t2", "a"),
        entry(3, "t1", "b"),
    ];
    tx.insert_changes(&rows).await.expect("insert");
    tx.write_snapshots(&[
        snap("t1", "x", "{\"v\":1}", 1),
        snap("t1", "y", "{}", 3),
        snap("t2", "x", "{}", 2),
    ])
    .await
    .expect("snapshots");
    // Upsert replaces.
    tx.write_snapshots(&[snap("t1", "x", "{\"v\":2}", 3)])
        .await
        .expect("upsert");
    assert_eq!(
        tx.find_ops("t1", &["a", "b", "zzz"])
            .await
            .expect("find")
            .len(),
        2
    );
    assert_eq!(
        tx.find_ops("t2", &["b"]).await.expect("find").len(),
        0,
        "op ids are per tenant"
    );
    tx.commit(3).await.expect("commit");
    assert_eq!(storage.head().await.expect("head"), 3);

    let t1 = storage
        .select_changes_since("t1", 0, 3, 10)
        .await
        .expect("select");
    assert_eq!(t1, vec![rows[0].clone(), rows[2].clone()]);
    assert_eq!(
        storage
            .select_changes_since("t1", 1, 3, 10)
            .await
            .expect("select"),
        vec![rows[2].clone()]
    );
    assert_eq!(
        storage
            .select_changes_since("t1", 0, 2, 10)
            .await
            .expect("select"),
        vec![rows[0].clone()]
    );
    assert_eq!(
        storage
            .select_changes_since("t1", 0, 3, 1)
            .await
            .expect("select")
            .len(),
        1
    );

    let x = storage
        .read_snapshot("t1", "todo", "x")
        .await
        .expect("read")
        .expect("row");
    assert_eq!((x.value.as_str(), x.seq), ("{\"v\":2}", 3));
    assert!(
        storage
            .read_snapshot("t3", "todo", "x")
            .await
            .expect("read")
            .is_none()
    );
    let page = storage
        .snapshot_page("t1", "todo", None, 1)
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["x"]
    );
    let page = storage
        .snapshot_page("t1", "todo", Some("x"), 10)
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["y"]
    );
}

async fn dropped_transaction_writes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = SeaOrmStorage::new(db.db.clone());
    {
        let mut tx = storage.begin().await.expect("begin");
        tx.insert_changes(&[entry(1, "t", "a")])
            .await
            .expect("insert");
        tx.write_snapshots(&[snap("t", "x", "{}", 1)])
            .await
            .expect("write");
        // Dropped without commit.
    }
    assert_eq!(db.counts().await, (0, 0, 0));
    // The lock was released: the next writer proceeds.
    let tx = storage.begin().await.expect("begin after rollback");
    tx.commit(0).await.expect("commit");
}

async fn writers_queue_on_the_log_lock(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = SeaOrmStorage::new(db.db.clone());
    let mut first = storage.begin().await.expect("begin");
    first
        .insert_changes(&[entry(1, "t", "a")])
        .await
        .expect("insert");
    let second = {
        let storage = storage.clone();
        tokio::spawn(async move {
            let tx = storage.begin().await.expect("second begin");
            let seen = tx.last_seq();
            tx.commit(seen).await.expect("commit");
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a second writer must wait for the first to commit"
    );
    first.commit(1).await.expect("commit");
    let seen = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("second ran")
        .expect("join");
    assert_eq!(
        seen, 1,
        "the second writer sees the first one's sequence numbers"
    );
}

/// `insert_new_changes` writes everything when no op id is logged, and
/// reports (and does not insert) an op id the tenant already logged.
async fn insert_new_changes_skips_logged_op_ids(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = SeaOrmStorage::new(db.db.clone());
    let mut tx = storage.begin().await.expect("begin");
    let rows = [entry(1, "t1", "a"), entry(2, "t1", "b")];
    assert_eq!(tx.insert_new_changes(&rows).await.expect("insert"), 0);
    tx.commit(2).await.expect("commit");

    // Another tenant may use the same op ids.
    let mut tx = storage.begin().await.expect("begin");
    assert_eq!(
        tx.insert_new_changes(&[entry(3, "t2", "a")])
            .await
            .expect("insert"),
        0
    );
    tx.commit(3).await.expect("commit");

    // A batch with one logged op id is reported; the caller drops it.
    let mut tx = storage.begin().await.expect("begin");
    let skipped = tx
        .insert_new_changes(&[entry(4, "t1", "c"), entry(5, "t1", "b")])
        .await
        .expect("insert");
    assert!(skipped >= 1, "the logged op id is reported: {skipped}");
    drop(tx);
    assert_eq!(storage.head().await.expect("head"), 3);
    let t1 = storage
        .select_changes_since("t1", 0, 10, 10)
        .await
        .expect("select");
    let ids: Vec<&str> = t1.iter().map(|e| e.op_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"], "nothing of the dropped attempt is kept");
    assert_eq!(t1[1].seq, 2, "the logged entry is untouched");
}

/// A pool from `SeaOrmStorage::connect` has the settings the engine needs;
/// a plain SeaORM pool is told what it lacks.
async fn connection_settings_are_checked(backend: Backend) {
    let db = TestDb::new(backend).await;
    let ours = SeaOrmStorage::new(db.db.clone());
    assert_eq!(
        ours.check_settings().await.expect("check"),
        Vec::<String>::new()
    );

    // On SQLite a fresh file: WAL is a property of the file, and the
    // test's own file is WAL already.
    let url = match backend {
        Backend::Sqlite => {
            let path = db
                .url
                .trim_start_matches("sqlite://")
                .trim_end_matches("?mode=rwc");
            format!("sqlite://{path}.plain?mode=rwc")
        }
        _ => db.url.clone(),
    };
    let plain = better_sync::sea_orm::Database::connect(&url)
        .await
        .expect("connect");
    let problems = SeaOrmStorage::new(plain)
        .check_settings()
        .await
        .expect("check");
    let expected: &[&str] = match backend {
        Backend::Sqlite => &["journal_mode", "auto_vacuum"],
        Backend::Postgres => &["plan_cache_mode"],
        Backend::MySql => &[],
    };
    assert_eq!(problems.len(), expected.len(), "{problems:?}");
    for (problem, setting) in problems.iter().zip(expected) {
        assert!(problem.contains(setting), "{problems:?}");
    }
}

/// `commit_new_changes` commits log, snapshots and head together, and
/// commits nothing when an op id is already logged.
async fn commit_new_changes_is_all_or_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = SeaOrmStorage::new(db.db.clone());
    let tx = storage.begin().await.expect("begin");
    let skipped = tx
        .commit_new_changes(
            &[entry(1, "t1", "a"), entry(2, "t1", "b")],
            &[snap("t1", "x", "{\"v\":1}", 2)],
            2,
        )
        .await
        .expect("commit");
    assert_eq!(skipped, 0);
    assert_eq!(storage.head().await.expect("head"), 2);
    assert_eq!(
        storage
            .read_snapshot("t1", "todo", "x")
            .await
            .expect("read")
            .map(|r| r.value),
        Some("{\"v\":1}".to_owned())
    );

    // An upsert of an existing snapshot beside new entries.
    let tx = storage.begin().await.expect("begin");
    let skipped = tx
        .commit_new_changes(
            &[entry(3, "t1", "c")],
            &[snap("t1", "x", "{\"v\":2}", 3), snap("t1", "y", "{}", 3)],
            3,
        )
        .await
        .expect("commit");
    assert_eq!(skipped, 0);
    assert_eq!(storage.head().await.expect("head"), 3);

    // One logged op id: nothing of the batch is committed.
    let tx = storage.begin().await.expect("begin");
    let skipped = tx
        .commit_new_changes(
            &[entry(4, "t1", "d"), entry(5, "t1", "a")],
            &[snap("t1", "x", "{\"v\":3}", 5)],
            5,
        )
        .await
        .expect("commit");
    assert!(skipped >= 1, "{skipped}");
    assert_eq!(storage.head().await.expect("head"), 3);
    let ids: Vec<String> = storage
        .select_changes_since("t1", 0, 10, 10)
        .await
        .expect("select")
        .into_iter()
        .map(|e| e.op_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(
        storage
            .read_snapshot("t1", "todo", "x")
            .await
            .expect("read")
            .map(|r| r.value),
        Some("{\"v\":2}".to_owned())
    );

    // Nothing to write: a commit that changes nothing.
    let tx = storage.begin().await.expect("begin");
    assert_eq!(tx.commit_new_changes(&[], &[], 3).await.expect("commit"), 0);
    assert_eq!(storage.head().await.expect("head"), 3);
}

/// `commit_if_head` commits only when the head, the op ids and the rows
/// taken for new are as the caller says; otherwise it writes nothing and
/// leaves the connections usable (on SQLite the refused statement list
/// stopped inside its transaction).
async fn commit_if_head_checks_what_it_assumes(backend: Backend) {
    commit_if_head_checks_on(backend, true).await;
}

async fn commit_if_head_checks_on(backend: Backend, direct: bool) {
    let db = TestDb::new(backend).await;
    let storage = storage_over(&db, direct);
    let committed = storage
        .commit_if_head(
            0,
            writes(
                &[entry(1, "t1", "a"), entry(2, "t1", "b")],
                &[snap("t1", "x", "{\"v\":1}", 2)],
                &[],
                2,
            ),
        )
        .await
        .expect("commit");
    assert!(committed);
    assert_eq!(db.counts().await, (2, 1, 2));

    // Refused, each for one wrong assumption; nothing is written.
    type Refusal = (
        &'static str,
        i64,
        Vec<LogEntry>,
        Vec<SnapshotRecord>,
        Vec<SnapshotRecord>,
    );
    let refusals: [Refusal; 3] = [
        (
            // (Sequence numbers past the real head: only the head check
            // can refuse it.)
            "the head moved",
            1,
            vec![entry(3, "t1", "c")],
            vec![],
            vec![snap("t1", "x", "{\"v\":9}", 2)],
        ),
        (
            "an op id is logged",
            2,
            vec![entry(3, "t1", "c"), entry(4, "t1", "a")],
            vec![snap("t1", "y", "{}", 4)],
            vec![],
        ),
        (
            "a row taken for new exists",
            2,
            vec![entry(3, "t1", "c")],
            vec![snap("t1", "x", "{\"v\":9}", 3)],
            vec![],
        ),
    ];
    for (why, head, entries, created, updated) in refusals {
        let last = entries.last().map_or(head, |e| e.seq);
        let committed = storage
            .commit_if_head(head, writes(&entries, &created, &updated, last))
            .await
            .unwrap_or_else(|e| panic!("{why}: {e}"));
        assert!(!committed, "{why}");
        assert_eq!(db.counts().await, (2, 1, 2), "{why}: nothing written");
        assert_eq!(
            storage
                .read_snapshot("t1", "todo", "x")
                .await
                .expect("read")
                .map(|r| r.value),
            Some("{\"v\":1}".to_owned()),
            "{why}"
        );
    }

    // Still usable: many more commits than the pool has connections, each
    // a refused one followed by one that goes through.
    for (i, head) in (2..22).enumerate() {
        assert!(
            !storage
                .commit_if_head(
                    head + 1,
                    writes(
                        &[entry(head + 2, "t1", &format!("r{i}"))],
                        &[],
                        &[],
                        head + 2
                    )
                )
                .await
                .expect("refused commit")
        );
        let e = entry(head + 1, "t1", &format!("ok{i}"));
        assert!(
            storage
                .commit_if_head(
                    head,
                    writes(
                        std::slice::from_ref(&e),
                        &[],
                        &[snap("t1", "x", &format!("{{\"v\":{i}}}"), head + 1)],
                        head + 1
                    )
                )
                .await
                .expect("commit")
        );
    }
    assert_eq!(db.counts().await, (22, 1, 22));
    let tx = storage.begin().await.expect("begin after refusals");
    assert_eq!(tx.last_seq(), 22);
}

per_backend!(
    commit_if_head_checks_what_it_assumes,
    trait_round_trip,
    commit_new_changes_is_all_or_nothing,
    connection_settings_are_checked,
    insert_new_changes_skips_logged_op_ids,
    dropped_transaction_writes_nothing,
    writers_queue_on_the_log_lock
);

/// SQLite's two ways to its file: the storage's own connections (the hot
/// statements) and the SeaORM pool (transactions, and everything when
/// direct is off or the database is in memory).
mod sqlite_paths {
    use super::*;
    use migration::{Migrator, MigratorTrait};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wal_file_goes_direct_unless_turned_off() {
        let db = TestDb::new(Backend::Sqlite).await;
        assert!(
            storage_over(&db, true)
                .is_sqlite_direct()
                .await
                .expect("open")
        );
        assert!(
            !storage_over(&db, false)
                .is_sqlite_direct()
                .await
                .expect("open")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trip_through_the_pool_only() {
        trait_round_trip_on(Backend::Sqlite, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_if_head_through_the_pool_only() {
        commit_if_head_checks_on(Backend::Sqlite, false).await;
    }

    /// A pool that keeps the file to itself (`locking_mode=EXCLUSIVE`)
    /// leaves no room for connections of the storage's own: it stays on
    /// the pool, and works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exclusive_pool_stays_on_the_pool() {
        use better_sync::sea_orm::ConnectionTrait;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
        let mut opts = better_sync::sea_orm::ConnectOptions::new(url);
        opts.max_connections(1).min_connections(1);
        let db = better_sync::sea_orm::Database::connect(opts)
            .await
            .expect("connect");
        db.execute_unprepared("PRAGMA journal_mode=WAL")
            .await
            .expect("wal");
        db.execute_unprepared("PRAGMA locking_mode=EXCLUSIVE")
            .await
            .expect("exclusive");
        Migrator::up(&db, None).await.expect("migrate");
        let storage = SeaOrmStorage::new(db);
        assert!(!storage.is_sqlite_direct().await.expect("open"));
        let rows = [entry(1, "t", "a")];
        assert!(
            storage
                .commit_if_head(0, writes(&rows, &[], &[], 1))
                .await
                .expect("commit")
        );
        assert_eq!(
            storage
                .select_changes_since("t", 0, 1, 10)
                .await
                .expect("read"),
            rows.to_vec()
        );
    }

    /// An in-memory database lives inside sqlx's connection: it stays on
    /// the pool, and works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_memory_database_stays_on_the_pool() {
        let db = SeaOrmStorage::connect("sqlite::memory:")
            .await
            .expect("connect");
        Migrator::up(&db, None).await.expect("migrate");
        let storage = SeaOrmStorage::new(db);
        assert!(!storage.is_sqlite_direct().await.expect("open"));
        let rows = [entry(1, "t", "a"), entry(2, "t", "b")];
        assert!(
            storage
                .commit_if_head(0, writes(&rows, &[snap("t", "x", "{}", 2)], &[], 2))
                .await
                .expect("commit")
        );
        assert_eq!(storage.head().await.expect("head"), 2);
        assert_eq!(
            storage.select_all_since(0, 2, 10).await.expect("read"),
            rows.to_vec()
        );
    }

    /// Log entries `from..=to` of tenant `t` with 4 KB payloads.
    fn big_entries(from: i64, to: i64) -> Vec<LogEntry> {
        let filler = "x".repeat(4000);
        (from..=to)
            .map(|i| LogEntry {
                payload: format!("{{\"n\":{i},\"filler\":\"{filler}\"}}"),
                ..entry(i, "t", &format!("o{i}"))
            })
            .collect()
    }

    async fn page_count(db: &TestDb) -> i64 {
        use better_sync::sea_orm::ConnectionTrait;
        let row = db
            .db
            .query_one_raw(better_sync::sea_orm::Statement::from_string(
                better_sync::sea_orm::DatabaseBackend::Sqlite,
                "PRAGMA page_count",
            ))
            .await
            .expect("page_count")
            .expect("a row");
        row.try_get_by_index(0).expect("a number")
    }

    /// Move the WAL into the database file and truncate the WAL; the
    /// readers must not hold it up.
    async fn checkpoint(db: &TestDb) {
        use better_sync::sea_orm::ConnectionTrait;
        let row = db
            .db
            .query_one_raw(better_sync::sea_orm::Statement::from_string(
                better_sync::sea_orm::DatabaseBackend::Sqlite,
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ))
            .await
            .expect("checkpoint")
            .expect("a row");
        assert_eq!(
            row.try_get_by_index::<i64>(0).expect("busy"),
            0,
            "the checkpoint was blocked"
        );
    }

    /// The readers map the file: when compaction gives space back (the
    /// file shrinks under their map) they read what is left, and then
    /// what is written after it grows again; with the map off they read
    /// the same.
    async fn readers_follow_the_file(read_mmap_bytes: u64) {
        use better_sync::sea_orm::ConnectionTrait;
        let db = TestDb::new(Backend::Sqlite).await;
        let storage = storage_over(&db, true).sqlite_read_mmap(read_mmap_bytes);
        assert!(storage.is_sqlite_direct().await.expect("open"));
        let first = big_entries(1, 500);
        assert!(
            storage
                .commit_if_head(0, writes(&first, &[], &[], 500))
                .await
                .expect("commit")
        );
        // Into the file, so that the readers read it (through the map).
        checkpoint(&db).await;
        let all = storage
            .select_changes_since("t", 0, 500, 1000)
            .await
            .expect("read");
        assert_eq!(all, first);
        let full = page_count(&db).await;
        let file = {
            let row = db
                .db
                .query_one_raw(better_sync::sea_orm::Statement::from_string(
                    better_sync::sea_orm::DatabaseBackend::Sqlite,
                    "SELECT file FROM pragma_database_list WHERE name = 'main'",
                ))
                .await
                .expect("database_list")
                .expect("a row");
            row.try_get_by_index::<String>(0).expect("a file")
        };
        let full_bytes = std::fs::metadata(&file).expect("the file").len();
        for sql in [
            "DELETE FROM op_log WHERE seq <= 490",
            "PRAGMA incremental_vacuum",
        ] {
            db.db.execute_unprepared(sql).await.expect(sql);
        }
        // The checkpoint moves the vacuumed pages into the file and
        // truncates it, under the readers' map.
        checkpoint(&db).await;
        assert!(
            page_count(&db).await < full / 2,
            "the database did not shrink"
        );
        let bytes = std::fs::metadata(&file).expect("the file").len();
        assert!(
            bytes < full_bytes / 2,
            "the file did not shrink: {full_bytes} -> {bytes} bytes"
        );
        let left = storage
            .select_changes_since("t", 0, 500, 1000)
            .await
            .expect("read after the shrink");
        assert_eq!(left, first[490..].to_vec());
        let more = big_entries(501, 800);
        assert!(
            storage
                .commit_if_head(500, writes(&more, &[], &[], 800))
                .await
                .expect("commit after the shrink")
        );
        let after = storage
            .select_changes_since("t", 490, 800, 1000)
            .await
            .expect("read after growing");
        assert_eq!(after.len(), 310);
        assert_eq!(after[10..], more[..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mapped_readers_follow_the_file_as_it_shrinks_and_grows() {
        readers_follow_the_file(256 << 20).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unmapped_readers_read_the_same() {
        readers_follow_the_file(0).await;
    }

    /// Writers on both paths at once (the writer's direct commits, the
    /// optimistic path's pool transactions) order on the one counter: the
    /// log ends with every sequence number once, and a reader that reads
    /// the head and then up to it never sees a hole, whichever path wrote.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_and_pool_writers_order_on_one_counter() {
        const EACH: usize = 25;
        let db = TestDb::new(Backend::Sqlite).await;
        let storage = storage_over(&db, true);
        assert!(storage.is_sqlite_direct().await.expect("open"));
        let mut writers = Vec::new();
        for w in 0..4 {
            let storage = storage.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..EACH {
                    let op_id = format!("w{w}-{i}");
                    let id = format!("row{w}");
                    if w % 2 == 0 {
                        // Direct: retry from the head until nothing moved.
                        loop {
                            let head = storage.head().await.expect("head");
                            let e = entry(head + 1, "t", &op_id);
                            let s = snap("t", &id, &format!("{{\"i\":{i}}}"), head + 1);
                            if storage
                                .commit_if_head(
                                    head,
                                    writes(std::slice::from_ref(&e), &[], &[s], head + 1),
                                )
                                .await
                                .expect("direct commit")
                            {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                    } else {
                        let mut tx = storage.begin().await.expect("begin");
                        let seq = tx.last_seq() + 1;
                        tx.insert_changes(&[entry(seq, "t", &op_id)])
                            .await
                            .expect("insert");
                        tx.write_snapshots(&[snap("t", &id, &format!("{{\"i\":{i}}}"), seq)])
                            .await
                            .expect("snapshot");
                        tx.commit(seq).await.expect("commit");
                    }
                }
            }));
        }
        let reader = {
            let storage = storage.clone();
            tokio::spawn(async move {
                let mut seen = 0;
                let mut reads = 0;
                while seen < (4 * EACH) as i64 {
                    let head = storage.head().await.expect("head");
                    let rows = storage
                        .select_all_since(seen, head, 10_000)
                        .await
                        .expect("read");
                    let seqs: Vec<i64> = rows.iter().map(|e| e.seq).collect();
                    let expected: Vec<i64> = (seen + 1..=head).collect();
                    assert_eq!(seqs, expected, "every change up to the head, no hole");
                    seen = head;
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                reads
            })
        };
        for w in writers {
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("writers finish")
                .expect("writer");
        }
        let reads = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("reader finishes")
            .expect("reader");
        assert!(reads > 1, "the reader read while the writers wrote");
        assert_eq!(db.counts().await, ((4 * EACH) as i64, 4, (4 * EACH) as i64));
        let all = storage
            .select_all_since(0, (4 * EACH) as i64, 10_000)
            .await
            .expect("read");
        let mut ids: Vec<&str> = all.iter().map(|e| e.op_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4 * EACH, "every write once");
    }
}
