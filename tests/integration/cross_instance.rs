//! Scale-out: server processes sharing one database. A change accepted by
//! any instance reaches WebSocket and long-poll clients of every instance,
//! in cursor order, without gaps or duplicates.

use crate::common;

use std::time::Duration;

use better_sync::testing::dev_token;
use common::{Backend, Client, SECRET, TestDb, change, ws_connect, ws_next, ws_subscribe};
use serde_json::{Value, json};

const PER_PUSHER: usize = 60;

fn client(addr: &str, user: &str) -> Client {
    Client {
        http: reqwest::Client::new(),
        base: format!("http://{addr}/api/sync"),
        token: dev_token(SECRET, user, "acme", 3600),
    }
}

async fn changes_reach_every_instance(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut a, addr_a) = common::spawn_child_server(&db.url);
    let (mut b, addr_b) = common::spawn_child_server(&db.url);
    let ca = client(&addr_a, "alice");
    let cb = client(&addr_b, "bob");

    // Long-poll on A wakes for a change accepted by B.
    let (_, cursor) = ca.pull_all().await;
    let waiter = {
        let ca = ca.clone();
        tokio::spawn(async move { ca.pull(&format!("?cursor={cursor}&wait=30")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = cb
        .push(json!([change(
            "first",
            "todo",
            "0",
            "insert",
            json!({}),
            "2026-01-01T00:00:00.000Z",
            "b"
        )]))
        .await;
    assert_eq!(first.status, 200);
    let woke = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("long-poll woke")
        .expect("join");
    assert_eq!(woke.body["changes"][0]["op_id"], "first");

    // WebSocket subscribers on both instances; pushes to both, concurrently.
    let mut subs = Vec::new();
    for addr in [&addr_a, &addr_b] {
        let mut ws = ws_connect(
            addr.parse().expect("addr"),
            &dev_token(SECRET, "reader", "acme", 600),
        )
        .await;
        let (caught_up, _) = ws_subscribe(&mut ws, None).await;
        assert_eq!(caught_up.len(), 1);
        subs.push(ws);
    }
    let pushers = [ca.clone(), cb.clone()]
        .into_iter()
        .enumerate()
        .map(|(p, c)| {
            tokio::spawn(async move {
                for i in 0..PER_PUSHER {
                    let op = format!("p{p}-{i}");
                    let r = c
                        .push(json!([change(
                            &op,
                            "todo",
                            &i.to_string(),
                            "update",
                            json!({ "p": p }),
                            "2026-01-01T00:00:01.000Z",
                            "x"
                        )]))
                        .await;
                    assert_eq!(r.status, 200, "{:?}", r.body);
                }
            })
        });
    for p in pushers.collect::<Vec<_>>() {
        p.await.expect("pusher");
    }
    let total = 1 + 2 * PER_PUSHER;
    for (n, ws) in subs.iter_mut().enumerate() {
        let mut seqs: Vec<i64> = vec![1];
        while seqs.len() < total {
            let m = ws_next(ws, 30).await.unwrap_or_else(|| {
                panic!("instance {n}: stream stalled at {} of {total}", seqs.len())
            });
            assert_eq!(m["type"], "changes", "{m}");
            seqs.extend(
                m["changes"]
                    .as_array()
                    .expect("changes")
                    .iter()
                    .map(|c: &Value| c["seq"].as_i64().expect("seq")),
            );
        }
        assert_eq!(
            seqs,
            (1..=total as i64).collect::<Vec<_>>(),
            "instance {n}: every change once, in order"
        );
        assert!(
            ws_next(ws, 1).await.is_none(),
            "instance {n}: nothing extra"
        );
    }
    for child in [&mut a, &mut b] {
        child.kill().ok();
        child.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_share_changes_via_listen_notify() {
    changes_reach_every_instance(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_instances_share_changes_by_polling() {
    changes_reach_every_instance(Backend::MySql).await;
}
