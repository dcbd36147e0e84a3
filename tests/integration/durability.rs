//! Acknowledged means durable: the server process is killed with SIGKILL
//! while clients push; after a restart every answered change is there exactly
//! once, no batch is half written, and clients that retry their unanswered
//! batches (same op ids) end with every change exactly once.
//!
//! The server runs as a child process (see `common::spawn_child_server`).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Backend, Client, SECRET, TestDb, change};
use serde_json::{Value, json};

const CLIENTS: usize = 6;
const BATCH: usize = 5;

fn client(addr: &str, user: &str) -> Client {
    Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        base: format!("http://{addr}/api/sync"),
        token: better_sync::testing::dev_token(SECRET, user, "acme", 3600),
    }
}

fn batch(c: usize, b: usize) -> Value {
    Value::Array(
        (0..BATCH)
            .map(|i| {
                change(
                    &format!("c{c}-b{b}-{i}"),
                    "todo",
                    &format!("c{c}-r{}", (b * BATCH + i) % 11),
                    if i == 0 { "insert" } else { "update" },
                    json!({ "b": b, "i": i }),
                    "2026-01-01T00:00:00.000Z",
                    &format!("c{c}"),
                )
            })
            .collect(),
    )
}

/// Push batches until one fails; return (answered batch numbers, first unanswered).
async fn push_until_failure(cl: Client, c: usize) -> (Vec<usize>, Option<usize>) {
    let mut answered = Vec::new();
    for b in 0..10_000 {
        let res = cl
            .http
            .post(format!("{}/push", cl.base))
            .bearer_auth(&cl.token)
            .body(json!({"changes": batch(c, b)}).to_string())
            .send()
            .await;
        // Acknowledged only once the answer is fully read.
        let acked = match res {
            Ok(r) => r.status() == 200 && r.text().await.is_ok(),
            Err(_) => false,
        };
        if !acked {
            return (answered, Some(b));
        }
        answered.push(b);
    }
    (answered, None)
}

async fn op_counts(db: &TestDb) -> BTreeMap<String, i64> {
    use better_sync::sea_orm::{ConnectionTrait, Statement};
    let stmt = Statement::from_string(
        db.db.get_database_backend(),
        "SELECT op_id FROM op_log".to_owned(),
    );
    let mut out = BTreeMap::new();
    for row in db.db.query_all_raw(stmt).await.expect("query") {
        let id: String = row.try_get_by_index(0).expect("op_id");
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

async fn killed_server_loses_no_acknowledged_change(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut server, addr) = common::spawn_child_server(&db.url);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(push_until_failure(
            client(&addr, &format!("c{c}")),
            c,
        )));
    }
    // Let pushes flow, then kill without warning.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("client stopped")
                .expect("join"),
        );
    }
    let acked: usize = outcomes.iter().map(|(a, _)| a.len()).sum();
    assert!(
        acked > 0,
        "no push was answered before the kill; the test proved nothing"
    );

    // Restart on the same database.
    let (mut server, addr) = common::spawn_child_server(&db.url);
    let counts = op_counts(&db).await;
    assert!(
        counts.values().all(|&n| n == 1),
        "an op id was logged twice"
    );
    for (c, (answered, unanswered)) in outcomes.iter().enumerate() {
        for &b in answered {
            for i in 0..BATCH {
                assert!(
                    counts.contains_key(&format!("c{c}-b{b}-{i}")),
                    "acknowledged c{c}-b{b}-{i} lost"
                );
            }
        }
        if let Some(b) = unanswered {
            let present = (0..BATCH)
                .filter(|i| counts.contains_key(&format!("c{c}-b{b}-{i}")))
                .count();
            assert!(
                present == 0 || present == BATCH,
                "batch c{c}-b{b} half written ({present}/{BATCH})"
            );
        }
    }

    // Clients retry what was not answered, with the same op ids.
    for (c, (_, unanswered)) in outcomes.iter().enumerate() {
        if let Some(b) = unanswered {
            let cl = client(&addr, &format!("c{c}"));
            let a = cl
                .push_raw(json!({"changes": batch(c, *b)}).to_string())
                .await;
            assert_eq!(a.status, 200, "{:?}", a.body);
        }
    }
    let counts = op_counts(&db).await;
    let mut expected = 0;
    for (c, (answered, unanswered)) in outcomes.iter().enumerate() {
        for b in answered.iter().chain(unanswered.iter()) {
            for i in 0..BATCH {
                assert_eq!(counts.get(&format!("c{c}-b{b}-{i}")), Some(&1));
                expected += 1;
            }
        }
    }
    assert_eq!(counts.len(), expected, "nothing beyond the pushed changes");
    // The log head and the op log agree after the crash.
    let (ops, _, head) = db.counts().await;
    assert_eq!(ops, head);
    server.kill().ok();
    server.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_during_pushes() {
    killed_server_loses_no_acknowledged_change(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_during_pushes() {
    killed_server_loses_no_acknowledged_change(Backend::Postgres).await;
}
