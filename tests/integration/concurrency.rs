//! No skipped changes under concurrency: several engine instances on one
//! database, 16 concurrent pushers, and a puller that must see every
//! committed change exactly once, in cursor order.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Backend, TestDb, TestServer, builder, change};
use serde_json::{Value, json};

const PUSHERS: usize = 16;
const BATCHES: usize = 25;
const INSTANCES: usize = 4;

async fn no_skips(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Separate engines with separate pools, as separate server processes
    // would have: their writes only meet in the database.
    let mut servers = Vec::new();
    for _ in 0..INSTANCES {
        let pool = better_sync::SeaOrmStorage::connect(&db.url)
            .await
            .expect("connect");
        servers.push(TestServer::start(builder(&pool).build().expect("build")).await);
    }
    let done = Arc::new(AtomicBool::new(false));

    let puller = {
        let client = servers[INSTANCES - 1].client("reader", "acme");
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(i64, String)> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let q = cursor
                    .as_ref()
                    .map(|c| format!("?cursor={c}&limit=7"))
                    .unwrap_or("?limit=7".into());
                let page = client.pull(&q).await;
                assert_eq!(page.status, 200, "{:?}", page.body);
                for c in page.body["changes"].as_array().expect("changes") {
                    seen.push((
                        c["seq"].as_i64().expect("seq"),
                        c["op_id"].as_str().expect("id").to_owned(),
                    ));
                }
                cursor = Some(page.body["cursor"].as_str().expect("cursor").to_owned());
                let more = page.body["has_more"].as_bool().expect("has_more");
                // One last full drain after the pushers stop.
                if finished && !more {
                    return seen;
                }
            }
        })
    };

    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let client = servers[p % INSTANCES].client(&format!("user{p}"), "acme");
        pushers.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            for b in 0..BATCHES {
                let n = 1 + (p + b) % 3;
                let changes: Vec<Value> = (0..n)
                    .map(|i| {
                        change(
                            &format!("p{p}-b{b}-{i}"),
                            "todo",
                            &format!("row{}", (p * 7 + b + i) % 20),
                            "update",
                            json!({ format!("f{p}"): b }),
                            "2026-01-01T00:00:00.000Z",
                            &format!("user{p}"),
                        )
                    })
                    .collect();
                let a = client.push(Value::Array(changes)).await;
                assert_eq!(a.status, 200, "{:?}", a.body);
                for r in a.body["results"].as_array().expect("results") {
                    acked.insert(
                        r["op_id"].as_str().expect("id").to_owned(),
                        r["seq"].as_i64().expect("seq"),
                    );
                }
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for p in pushers {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(300), p)
                .await
                .expect("pusher finished")
                .expect("join"),
        );
    }
    done.store(true, Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(120), puller)
        .await
        .expect("puller finished")
        .expect("join");

    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "cursor order, no duplicates"
    );
    let by_id: BTreeMap<String, i64> = seen.iter().map(|(s, id)| (id.clone(), *s)).collect();
    assert_eq!(by_id.len(), seen.len(), "every change exactly once");
    assert_eq!(
        by_id, acked,
        "the puller saw exactly the acknowledged changes, at their seqs"
    );
    let expected: usize = (0..PUSHERS)
        .map(|p| (0..BATCHES).map(|b| 1 + (p + b) % 3).sum::<usize>())
        .sum();
    assert_eq!(seen.len(), expected);
    // Sequence numbers are dense: no gap where a change could hide.
    assert_eq!(seen.first().map(|s| s.0), Some(1));
    assert_eq!(seen.last().map(|s| s.0), Some(expected as i64));
    assert_eq!(db.counts().await.0, expected as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sixteen_pushers_one_puller_no_skips() {
    no_skips(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_sixteen_pushers_one_puller_no_skips() {
    no_skips(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_sixteen_pushers_one_puller_no_skips() {
    no_skips(Backend::Sqlite).await;
}
