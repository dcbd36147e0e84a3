//! The writer's known rows: a group whose rows the writer holds commits
//! without reading, and every way that knowledge can be wrong (another
//! instance committed, a row it took for new exists, an op id is replayed)
//! falls back to reading, on every backend.

use crate::common;

use better_sync::protocol::{Change, ChangeResult, Op, PushRequest};
use better_sync::{BetterSync, Ctx, ErrorCode, SeaOrmStorage};
use common::{Backend, TestDb, builder};
use serde_json::{Value, json};

fn ctx() -> Ctx {
    Ctx::new("alice", "acme")
}

/// A change of `todo/pk` at second `at` of a fixed minute.
fn change(op_id: &str, pk: &str, op: Op, payload: Value, at: u32) -> Change {
    Change {
        op_id: op_id.into(),
        model: "todo".into(),
        pk: pk.into(),
        op,
        payload,
        updated_at: format!("2026-11-25T10:00:{at:02}.000Z"),
        actor: "device".into(),
    }
}

async fn push(sync: &BetterSync, changes: Vec<Change>) -> Vec<ChangeResult> {
    sync.push(
        &ctx(),
        PushRequest {
            client_id: "device".into(),
            changes,
        },
    )
    .await
    .expect("push")
    .results
}

/// An engine with a pool of its own, as a separate server process has.
async fn instance(db: &TestDb) -> BetterSync {
    let pool = SeaOrmStorage::connect(&db.url).await.expect("connect");
    builder(&pool).build().expect("build")
}

async fn row(sync: &BetterSync, pk: &str) -> Option<(Value, bool)> {
    let page = sync
        .snapshot(&ctx(), "todo", None, None)
        .await
        .expect("snapshot");
    page.rows
        .into_iter()
        .find(|r| r.id == pk)
        .map(|r| (r.value, r.deleted))
}

/// Two instances take turns writing fields of one row: each commit after
/// the other's must see it, although the writer last knew the row as it
/// wrote it itself.
async fn instances_taking_turns_keep_each_others_fields(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = (instance(&db).await, instance(&db).await);
    push(&a, vec![change("i", "r", Op::Insert, json!({"f0": 0}), 0)]).await;
    let mut expected = json!({"f0": 0});
    for round in 1..=12u32 {
        let (writer, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let field = format!("f{round}");
        let value = json!({ &field: round });
        push(
            writer,
            vec![change(&format!("u{round}"), "r", Op::Update, value, round)],
        )
        .await;
        expected[&field] = json!(round);
        // And a field both write, the later write winning.
        push(
            other,
            vec![change(
                &format!("s{round}"),
                "r",
                Op::Update,
                json!({"shared": round}),
                round,
            )],
        )
        .await;
        expected["shared"] = json!(round);
        assert_eq!(
            row(&a, "r").await,
            Some((expected.clone(), false)),
            "round {round}"
        );
    }
    assert_eq!(db.counts().await, (25, 1, 25));
}

/// A row written before this writer knew anything is not taken for new:
/// an insert of it merges with what is stored.
async fn an_insert_of_a_row_the_writer_never_saw_merges(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = (instance(&db).await, instance(&db).await);
    push(
        &a,
        vec![change("a1", "r", Op::Insert, json!({"x": 1, "y": 1}), 1)],
    )
    .await;
    // b learns the head with a commit of its own, without learning `r`.
    push(&b, vec![change("b1", "other", Op::Insert, json!({}), 2)]).await;
    push(&b, vec![change("b2", "r", Op::Insert, json!({"x": 2}), 3)]).await;
    assert_eq!(row(&a, "r").await, Some((json!({"x": 2, "y": 1}), false)));
    // A delete and a re-insert through the other instance.
    push(&a, vec![change("a2", "r", Op::Delete, Value::Null, 4)]).await;
    push(&b, vec![change("b3", "r", Op::Insert, json!({"z": 3}), 5)]).await;
    assert_eq!(row(&b, "r").await, Some((json!({"z": 3}), false)));
    // An update of a deleted row the writer knows stays deleted.
    push(&b, vec![change("b4", "r", Op::Delete, Value::Null, 6)]).await;
    push(&b, vec![change("b5", "r", Op::Update, json!({"z": 4}), 7)]).await;
    assert_eq!(row(&a, "r").await.map(|(_, deleted)| deleted), Some(true));
}

/// Replays are answered with the original sequence numbers and written
/// once, whether they come one after another or in one group; a reused op
/// id with other content is refused and writes nothing.
async fn replays_are_applied_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = instance(&db).await;
    let batch = vec![
        change("c1", "r1", Op::Insert, json!({"n": 1}), 1),
        change("c2", "r2", Op::Insert, json!({"n": 2}), 1),
    ];
    let first = push(&sync, batch.clone()).await;
    assert!(first.iter().all(|r| !r.duplicate));
    let again = push(&sync, batch.clone()).await;
    assert!(again.iter().all(|r| r.duplicate), "{again:?}");
    assert_eq!(
        again.iter().map(|r| r.seq).collect::<Vec<_>>(),
        first.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    // A replay beside a new change: the new one is applied.
    let mixed = push(
        &sync,
        vec![
            batch[0].clone(),
            change("c3", "r1", Op::Update, json!({"n": 3}), 2),
        ],
    )
    .await;
    assert!(mixed[0].duplicate && !mixed[1].duplicate, "{mixed:?}");
    let err = sync
        .push(
            &ctx(),
            PushRequest {
                client_id: "device".into(),
                changes: vec![change("c1", "r9", Op::Insert, json!({}), 3)],
            },
        )
        .await
        .expect_err("reused op id");
    assert_eq!(err.code(), ErrorCode::OpIdConflict);
    assert_eq!(row(&sync, "r9").await, None);

    // The same batch sent many times at once: some of the copies share a
    // group, the rest come after it; all agree, one is written.
    let batch: Vec<Change> = (0..5)
        .map(|i| {
            change(
                &format!("d{i}"),
                &format!("d{i}"),
                Op::Insert,
                json!({"i": i}),
                4,
            )
        })
        .collect();
    let copies = futures_util::future::join_all((0..8).map(|_| push(&sync, batch.clone()))).await;
    let seqs: Vec<Vec<i64>> = copies
        .iter()
        .map(|rs| rs.iter().map(|r| r.seq).collect())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1]), "{seqs:?}");
    let fresh = copies
        .iter()
        .filter(|rs| rs.iter().all(|r| !r.duplicate))
        .count();
    assert_eq!(fresh, 1, "{copies:?}");
    assert_eq!(db.counts().await, (8, 7, 8));
}

/// Instances writing the same rows at the same time lose nothing: every
/// field ends with its last write, the shared one with the latest clock.
async fn concurrent_instances_on_shared_rows_lose_no_field(backend: Backend) {
    const INSTANCES: usize = 3;
    const TASKS: usize = 4;
    const WRITES: usize = 8;
    const ROWS: usize = 3;
    let db = TestDb::new(backend).await;
    let mut engines = Vec::new();
    for _ in 0..INSTANCES {
        engines.push(instance(&db).await);
    }
    let mut tasks = Vec::new();
    for (i, sync) in engines.iter().enumerate() {
        for t in 0..TASKS {
            let sync = sync.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..WRITES {
                    let at = format!("2026-11-25T10:00:00.{:03}Z", k * 100 + i * 10 + t);
                    let changes = (0..ROWS)
                        .map(|r| {
                            let mut c = change(
                                &format!("{i}-{t}-{k}-{r}"),
                                &format!("r{r}"),
                                if k == 0 { Op::Insert } else { Op::Update },
                                json!({ format!("w{i}{t}"): k, "s": format!("{i}{t}{k}") }),
                                0,
                            );
                            c.updated_at = at.clone();
                            c
                        })
                        .collect();
                    push(&sync, changes).await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("pusher");
    }
    let mut expected = serde_json::Map::new();
    for i in 0..INSTANCES {
        for t in 0..TASKS {
            expected.insert(format!("w{i}{t}"), json!(WRITES - 1));
        }
    }
    // The latest clock: the last write of the highest instance and task.
    expected.insert(
        "s".into(),
        json!(format!("{}{}{}", INSTANCES - 1, TASKS - 1, WRITES - 1)),
    );
    for r in 0..ROWS {
        assert_eq!(
            row(&engines[0], &format!("r{r}")).await,
            Some((Value::Object(expected.clone()), false)),
            "row r{r}"
        );
    }
    let n = (INSTANCES * TASKS * WRITES * ROWS) as i64;
    assert_eq!(db.counts().await, (n, ROWS as i64, n));
}

per_backend!(
    concurrent_instances_on_shared_rows_lose_no_field,
    instances_taking_turns_keep_each_others_fields,
    an_insert_of_a_row_the_writer_never_saw_merges,
    replays_are_applied_once
);
