//! Bounded storage: compaction by count and by age, stale cursors on every
//! read path, tombstone purging, the compactor's lease, and erasure of rows
//! and tenants, on SQLite, Postgres and MariaDB.

use crate::common;

use std::time::Duration;

use better_sync::RetentionPolicy;
use better_sync::sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use better_sync::storage::Storage;
use common::{Backend, Client, TestDb, TestServer, change, ws_connect, ws_next, ws_send};
use serde_json::{Value, json};

fn at(n: usize) -> String {
    format!("2026-11-25T10:{:02}:{:02}.000Z", n / 60 % 60, n % 60)
}

/// Push `n` changes to `rows` rows of `todo` (inserts first, then updates),
/// one per request; the cursor of each push's answer.
async fn push_changes(c: &Client, prefix: &str, rows: usize, n: usize) -> Vec<String> {
    let mut cursors = Vec::new();
    for i in 0..n {
        let pk = format!("{prefix}{}", i % rows);
        let op = if i < rows { "insert" } else { "update" };
        let a = c
            .push(json!([change(
                &format!("{prefix}-op{i}"),
                "todo",
                &pk,
                op,
                json!({"title": format!("{prefix} v{i}")}),
                &at(i),
                "dev"
            )]))
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        cursors.push(a.body["cursor"].as_str().expect("cursor").to_owned());
    }
    cursors
}

/// The one number a `SELECT COUNT(*) ..` answers.
async fn count(db: &TestDb, sql: String) -> i64 {
    let stmt = Statement::from_string(db.db.get_database_backend(), sql);
    let row = db
        .db
        .query_one_raw(stmt)
        .await
        .expect("count")
        .expect("row");
    row.try_get_by_index::<i64>(0).expect("int")
}

async fn log_rows(db: &TestDb, tenant: &str) -> i64 {
    count(
        db,
        format!("SELECT COUNT(*) FROM op_log WHERE tenant_id = '{tenant}'"),
    )
    .await
}

fn stale(a: &common::Answer) -> bool {
    a.status == 409 && a.code() == "SYNC:CURSOR_STALE"
}

/// Rows of a snapshot of `todo`, by id, with every page.
async fn snapshot_rows(c: &Client) -> (Vec<Value>, String) {
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    let mut cursor = None;
    loop {
        let q = match &after {
            Some(a) => format!("?model=todo&limit=7&after={a}"),
            None => "?model=todo&limit=7".into(),
        };
        let a = c.snapshot(&q).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        cursor.get_or_insert_with(|| a.body["cursor"].as_str().expect("cursor").to_owned());
        rows.extend(a.body["rows"].as_array().expect("rows").iter().cloned());
        if !a.body["has_more"].as_bool().unwrap_or(false) {
            return (rows, cursor.unwrap_or_default());
        }
        after = Some(
            a.body["next_after"]
                .as_str()
                .expect("next_after")
                .to_owned(),
        );
    }
}

/// Wait until the background compactor's first run (it starts with the
/// engine) has read the head: it read 0 before any push, and so deletes
/// nothing of what the test pushes after. (Found with faster pushes: a run
/// that read the head late took one entry of the test's compaction.)
async fn first_background_run_read_the_head(db: &TestDb) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // The run marks the head it read before it looks at any tenant.
        if count(db, "SELECT COUNT(*) FROM sync_marks".to_owned()).await > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the background compaction did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn compaction_by_count_makes_old_cursors_stale(backend: Backend) {
    let db = TestDb::new(backend).await;
    let policy = RetentionPolicy::default()
        .max_entries(5)
        .tombstones(Duration::ZERO)
        .chunk(4);
    let sync = common::builder(&db.db)
        .retention(policy.clone().every(Duration::from_secs(3600)))
        .build()
        .expect("build");
    let server = TestServer::start(sync.clone()).await;
    first_background_run_read_the_head(&db).await;
    let a = server.client("ann", "acme");
    let b = server.client("bob", "other");
    let cursors = push_changes(&a, "r", 10, 30).await;
    push_changes(&b, "s", 3, 4).await;

    let report = sync.compact_with(&policy).await.expect("compact");
    assert!(!report.skipped);
    assert_eq!(report.log_deleted, 25, "{report:?}");
    assert_eq!(log_rows(&db, "acme").await, 5);
    assert_eq!(log_rows(&db, "other").await, 4, "under the limit: kept");

    // Below the horizon, on every read path: from the start, from the middle.
    assert!(stale(&a.pull("").await));
    assert!(stale(&a.pull(&format!("?cursor={}", cursors[10])).await));
    assert!(stale(
        &a.pull(&format!("?cursor={}&wait=1", cursors[3])).await
    ));
    // At the horizon (the cursor after the 25th change) and above: served.
    let at_horizon = a.pull(&format!("?cursor={}", cursors[24])).await;
    assert_eq!(at_horizon.status, 200, "{:?}", at_horizon.body);
    assert_eq!(at_horizon.body["changes"].as_array().map(Vec::len), Some(5));
    assert!(stale(&a.pull(&format!("?cursor={}", cursors[23])).await));
    let message = a.pull("").await.body["error"]["message"].clone();
    assert!(
        message.as_str().is_some_and(|m| m.contains("bootstrap")),
        "{message}"
    );
    // Another tenant is untouched.
    assert_eq!(b.pull("").await.status, 200);

    // The WebSocket's catch-up says so too, and closes.
    let mut ws = ws_connect(server.addr, &a.token).await;
    ws_send(&mut ws, json!({"type": "subscribe", "cursor": cursors[2]})).await;
    let m = ws_next(&mut ws, 10).await.expect("an error frame");
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["error"]["code"], "SYNC:CURSOR_STALE", "{m}");

    // Bootstrap again: the snapshot holds every row, and its cursor pulls.
    let (rows, cursor) = snapshot_rows(&a).await;
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().any(|r| r["value"]["title"] == "r v29"));
    let after = a.pull(&format!("?cursor={cursor}")).await;
    assert_eq!(after.status, 200, "{:?}", after.body);

    // sync.json: the policy for everyone, the horizon for a tenant's token.
    let public = server.public_json("/sync.json").await;
    assert_eq!(public["retention"]["maxEntriesPerTenant"], 5, "{public}");
    assert!(
        public.get("horizon").is_none(),
        "no tenant data without a token"
    );
    let refused = server
        .http
        .get(server.url("/api/sync/sync.json"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("sync.json");
    assert_eq!(
        refused.status(),
        200,
        "a refused token gets the public document"
    );
    let refused: Value = refused.json().await.expect("json");
    assert!(refused.get("horizon").is_none(), "{refused}");
    let mine = a
        .send(server.http.get(server.url("/api/sync/sync.json")))
        .await;
    let horizon = mine.body["horizon"].as_str().expect("horizon").to_owned();
    assert_eq!(a.pull(&format!("?cursor={horizon}")).await.status, 200);

    // A second run finds nothing more to do.
    let again = sync.compact_with(&policy).await.expect("compact");
    assert_eq!(again.log_deleted, 0, "{again:?}");
}

async fn compaction_by_age_keeps_what_is_younger(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = common::builder(&db.db).build().expect("build");
    let server = TestServer::start(sync.clone()).await;
    let a = server.client("ann", "acme");
    let policy = RetentionPolicy::default().max_age(Duration::from_millis(1));
    let first = push_changes(&a, "old", 4, 8).await;
    // The first run only marks where the head is now: nothing is old yet.
    let r1 = sync.compact_with(&policy).await.expect("compact");
    assert_eq!(r1.log_deleted, 0, "{r1:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = push_changes(&a, "new", 4, 6).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Now the first eight are older than the mark of the first run.
    let r2 = sync.compact_with(&policy).await.expect("compact");
    assert_eq!(r2.log_deleted, 8, "{r2:?}");
    assert_eq!(log_rows(&db, "acme").await, 6);
    assert!(stale(&a.pull(&format!("?cursor={}", first[5])).await));
    let kept = a.pull(&format!("?cursor={}", first[7])).await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.body["changes"].as_array().map(Vec::len), Some(6));
    assert_eq!(a.pull(&format!("?cursor={}", second[5])).await.status, 200);
}

async fn tombstones_go_after_their_window_and_the_horizon(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = common::builder(&db.db).build().expect("build");
    let server = TestServer::start(sync.clone()).await;
    let a = server.client("ann", "acme");
    push_changes(&a, "r", 6, 6).await;
    for (i, pk) in ["r0", "r1", "r2"].iter().enumerate() {
        let d = a
            .push(json!([change(
                &format!("del{i}"),
                "todo",
                pk,
                "delete",
                json!(null),
                &at(100 + i),
                "dev"
            )]))
            .await;
        assert_eq!(d.status, 200, "{:?}", d.body);
    }
    // A long window keeps them even below the horizon.
    let keep_long = RetentionPolicy::default().max_entries(1);
    let r = sync.compact_with(&keep_long).await.expect("compact");
    assert_eq!(r.tombstones_deleted, 0, "{r:?}");
    assert_eq!(db.counts().await.1, 6);
    // No window: tombstones at or below the horizon go, the newest (its
    // delete is the one entry kept) stays.
    let no_window = RetentionPolicy::default()
        .max_entries(1)
        .tombstones(Duration::ZERO);
    let r = sync.compact_with(&no_window).await.expect("compact");
    assert_eq!(r.tombstones_deleted, 2, "{r:?}");
    assert_eq!(db.counts().await.1, 4);
    let (rows, _) = snapshot_rows(&a).await;
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["r2", "r3", "r4", "r5"]);
}

async fn one_compactor_at_a_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = better_sync::SeaOrmStorage::new(db.db.clone());
    let r = storage.retention().expect("retention");
    assert!(
        r.try_lease("compaction", "a", 1_000, 100)
            .await
            .expect("lease")
    );
    assert!(
        r.try_lease("compaction", "a", 1_050, 100)
            .await
            .expect("renew")
    );
    assert!(
        !r.try_lease("compaction", "b", 1_100, 100)
            .await
            .expect("held")
    );
    // A holder that died: its lease ends by itself.
    assert!(
        r.try_lease("compaction", "b", 1_151, 100)
            .await
            .expect("expired")
    );
    r.release_lease("compaction", "a").await.expect("not a's");
    assert!(
        !r.try_lease("compaction", "a", 1_200, 100)
            .await
            .expect("b's")
    );
    r.release_lease("compaction", "b").await.expect("release");
    assert!(
        r.try_lease("compaction", "a", 1_200, 100)
            .await
            .expect("free")
    );

    // An engine finds the lease taken and skips.
    let sync = common::builder(&db.db).build().expect("build");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    assert!(
        r.try_lease("compaction", "other", now, 60_000)
            .await
            .expect("take")
    );
    let report = sync
        .compact_with(&RetentionPolicy::default().max_entries(1))
        .await
        .expect("compact");
    assert!(report.skipped);

    // Horizons only rise; marks keep the newest before the cut.
    r.raise_horizon("t", 10).await.expect("raise");
    r.raise_horizon("t", 4).await.expect("lower is ignored");
    assert_eq!(r.horizon("t").await.expect("horizon"), 10);
    assert_eq!(r.horizon("nobody").await.expect("horizon"), 0);
    for (at, head) in [(100, 1), (200, 5), (300, 9)] {
        r.mark_head(at, head).await.expect("mark");
    }
    assert_eq!(r.head_at(250).await.expect("at"), Some(5));
    assert_eq!(r.head_at(50).await.expect("at"), None);
    r.prune_marks(290).await.expect("prune");
    assert_eq!(
        r.head_at(250).await.expect("at"),
        Some(5),
        "kept: newest before"
    );
    assert_eq!(r.head_at(150).await.expect("at"), None, "pruned");
}

/// Every value of every sync table as text, to look for erased values.
async fn all_text(db: &TestDb) -> String {
    let backend = db.db.get_database_backend();
    let mut out = String::new();
    for (table, cols) in [
        (
            "op_log",
            "tenant_id, model, pk, op, actor, updated_at, payload, op_id",
        ),
        ("snapshots", "tenant_id, model, id, value, clocks"),
        ("sync_horizons", "tenant_id"),
    ] {
        let concat = match backend {
            DatabaseBackend::MySql => format!("CONCAT_WS('|', {cols})"),
            _ => cols.replace(", ", " || '|' || "),
        };
        let stmt = Statement::from_string(backend, format!("SELECT {concat} AS v FROM {table}"));
        for row in db.db.query_all_raw(stmt).await.expect("scan") {
            out.push_str(&row.try_get::<String>("", "v").expect("text"));
            out.push('\n');
        }
    }
    out
}

async fn erasing_a_row_leaves_none_of_its_values(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = common::builder(&db.db).build().expect("build");
    let server = TestServer::start(sync.clone()).await;
    let a = server.client("ann", "acme");
    for (i, title) in ["secret-one", "secret-two", "secret-three"]
        .iter()
        .enumerate()
    {
        let op = if i == 0 { "insert" } else { "update" };
        let r = a
            .push(json!([change(
                &format!("e{i}"),
                "todo",
                "victim",
                op,
                json!({"title": title, "n": i}),
                &at(i),
                "dev"
            )]))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let r = a
        .push(json!([change(
            "k",
            "todo",
            "bystander",
            "insert",
            json!({"title": "keep-me"}),
            &at(9),
            "dev"
        )]))
        .await;
    assert_eq!(r.status, 200);
    let mut ws = ws_connect(server.addr, &a.token).await;
    let (_, cursor) = common::ws_subscribe(&mut ws, None).await;

    let report = sync.erase("acme", "todo", "victim").await.expect("erase");
    assert_eq!(report.rows, 1);
    assert_eq!(report.log_deleted, 3);

    // The subscriber receives the delete.
    let m = ws_next(&mut ws, 10).await.expect("live delete");
    assert_eq!(m["type"], "changes", "{m}");
    assert_eq!(m["changes"][0]["pk"], "victim");
    assert_eq!(m["changes"][0]["op"], "delete");

    let text = all_text(&db).await;
    assert!(!text.contains("secret-"), "erased values remain:\n{text}");
    assert!(text.contains("keep-me"));
    let ctx = better_sync::Ctx::new("ann", "acme");
    assert_eq!(sync.get(&ctx, "todo", "victim").await.expect("get"), None);
    // A reader from the start sees the row's delete and nothing before it.
    let (changes, _) = a.pull_all().await;
    let victim: Vec<&Value> = changes.iter().filter(|c| c["pk"] == "victim").collect();
    assert_eq!(victim.len(), 1);
    assert_eq!(victim[0]["op"], "delete");
    // A late write of an offline client (an older clock) loses to it.
    let late = a
        .push(json!([change(
            "late",
            "todo",
            "victim",
            "update",
            json!({"title": "secret-late"}),
            &at(3),
            "dev"
        )]))
        .await;
    assert_eq!(late.status, 200);
    assert_eq!(sync.get(&ctx, "todo", "victim").await.expect("get"), None);
    // Erasing again, or a row that never existed, is harmless.
    assert_eq!(
        sync.erase("acme", "todo", "nobody")
            .await
            .expect("erase")
            .rows,
        0
    );
    let pulled = a.pull(&format!("?cursor={cursor}")).await;
    assert_eq!(
        pulled.status, 200,
        "no cursor went stale: {:?}",
        pulled.body
    );
}

async fn erasing_a_tenant_leaves_none_of_its_values(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = common::builder(&db.db).build().expect("build");
    let server = TestServer::start(sync.clone()).await;
    let a = server.client("ann", "gone");
    let b = server.client("bob", "stays");
    push_changes(&a, "private", 12, 30).await;
    let d = a
        .push(json!([change(
            "d",
            "todo",
            "private3",
            "delete",
            json!(null),
            &at(200),
            "dev"
        )]))
        .await;
    assert_eq!(d.status, 200);
    push_changes(&b, "public", 3, 5).await;
    let mut ws = ws_connect(server.addr, &a.token).await;
    common::ws_subscribe(&mut ws, None).await;

    let report = sync.erase_tenant("gone").await.expect("erase tenant");
    assert_eq!(report.rows, 12, "{report:?}");

    let mut deleted = std::collections::BTreeSet::new();
    while deleted.len() < 12 {
        let m = ws_next(&mut ws, 10).await.expect("live deletes");
        for c in m["changes"].as_array().expect("changes") {
            assert_eq!(c["op"], "delete", "{c}");
            deleted.insert(c["pk"].as_str().expect("pk").to_owned());
        }
    }
    let text = all_text(&db).await;
    assert!(!text.contains("private v"), "erased values remain:\n{text}");
    assert!(text.contains("public v"));
    let (changes, _) = a.pull_all().await;
    assert_eq!(changes.len(), 12);
    assert!(changes.iter().all(|c| c["op"] == "delete"));
    let (rows, _) = snapshot_rows(&a).await;
    assert!(
        rows.iter()
            .all(|r| r["deleted"] == true && r["value"] == json!({}))
    );
    assert_eq!(b.pull_all().await.0.len(), 5);
    // Again: nothing left to erase.
    assert_eq!(sync.erase_tenant("gone").await.expect("again").rows, 0);
}

/// Compaction runs again and again while 16 writers push and pullers
/// follow: every puller sees every change above its cursor exactly once,
/// or is told its cursor is stale and bootstraps again; all end equal to
/// the database's final state.
async fn no_change_is_skipped_across_compaction(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = common::builder(&db.db).build().expect("build");
    let server = TestServer::start(sync.clone()).await;
    let policy = RetentionPolicy::default()
        .max_entries(40)
        .tombstones(Duration::ZERO)
        .chunk(7);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let c = server.client(&format!("w{w}"), "acme");
            tokio::spawn(async move {
                for i in 0..15 {
                    let pk = format!("w{w}-{}", i % 4);
                    let op = if i < 4 { "insert" } else { "update" };
                    let r = c
                        .push(json!([change(
                            &format!("w{w}-{i}"),
                            "todo",
                            &pk,
                            op,
                            json!({"v": i}),
                            &at(i),
                            &format!("w{w}")
                        )]))
                        .await;
                    assert_eq!(r.status, 200, "{:?}", r.body);
                }
            })
        })
        .collect();
    let compactor = {
        let sync = sync.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            for _ in 0..40 {
                sync.compact_with(&policy).await.expect("compact");
                runs += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            runs
        })
    };
    let pullers: Vec<_> = (0..3)
        .map(|p| {
            let c = server.client(&format!("p{p}"), "acme");
            let p = p as u64;
            tokio::spawn(async move {
                // pk -> value, as a replica holds them.
                let mut state: std::collections::BTreeMap<String, Value> = Default::default();
                let mut cursor: Option<String> = None;
                let mut seen = std::collections::HashSet::new();
                let mut rebootstraps = 0;
                for _ in 0..400 {
                    let q = match &cursor {
                        Some(c) => format!("?cursor={c}&limit=9"),
                        None => "?limit=9".into(),
                    };
                    let a = c.pull(&q).await;
                    if stale(&a) {
                        rebootstraps += 1;
                        let (rows, snap_cursor) = snapshot_rows(&c).await;
                        state = rows
                            .into_iter()
                            .filter(|r| r["deleted"] != true)
                            .map(|r| {
                                (
                                    r["id"].as_str().unwrap_or("").to_owned(),
                                    r["value"].clone(),
                                )
                            })
                            .collect();
                        cursor = Some(snap_cursor);
                        seen.clear();
                        continue;
                    }
                    assert_eq!(a.status, 200, "{:?}", a.body);
                    for ch in a.body["changes"].as_array().expect("changes") {
                        let seq = ch["seq"].as_i64().expect("seq");
                        assert!(seen.insert(seq), "seq {seq} delivered twice");
                        let pk = ch["pk"].as_str().expect("pk").to_owned();
                        let entry = state.entry(pk).or_insert_with(|| json!({}));
                        for (k, v) in ch["payload"].as_object().expect("payload") {
                            entry[k] = v.clone();
                        }
                    }
                    cursor = Some(a.body["cursor"].as_str().expect("cursor").to_owned());
                    // Puller 0 keeps up; the others lag behind the horizon
                    // now and then.
                    let pause = if a.body["has_more"].as_bool().unwrap_or(false) {
                        p * 10
                    } else {
                        3 + p * 10
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                (state, cursor, rebootstraps)
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    assert!(compactor.await.expect("compactor") > 0);
    let oracle_client = server.client("oracle", "acme");
    let (oracle_rows, _) = snapshot_rows(&oracle_client).await;
    let oracle: std::collections::BTreeMap<String, Value> = oracle_rows
        .into_iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_owned(),
                r["value"].clone(),
            )
        })
        .collect();
    assert_eq!(oracle.len(), 64);
    let mut rebootstrapped = 0;
    for p in pullers {
        let (mut state, cursor, rebootstraps) = p.await.expect("puller");
        rebootstrapped += rebootstraps;
        // Finish: whatever is left after the last compaction.
        let mut cursor = cursor;
        loop {
            let q = match &cursor {
                Some(c) => format!("?cursor={c}"),
                None => String::new(),
            };
            let a = oracle_client.pull(&q).await;
            if stale(&a) {
                let (rows, c) = snapshot_rows(&oracle_client).await;
                state = rows
                    .into_iter()
                    .map(|r| {
                        (
                            r["id"].as_str().unwrap_or("").to_owned(),
                            r["value"].clone(),
                        )
                    })
                    .collect();
                cursor = Some(c);
                continue;
            }
            for ch in a.body["changes"].as_array().expect("changes") {
                let entry = state
                    .entry(ch["pk"].as_str().expect("pk").to_owned())
                    .or_insert_with(|| json!({}));
                for (k, v) in ch["payload"].as_object().expect("payload") {
                    entry[k] = v.clone();
                }
            }
            cursor = Some(a.body["cursor"].as_str().expect("cursor").to_owned());
            if !a.body["has_more"].as_bool().unwrap_or(false) {
                break;
            }
        }
        assert_eq!(state, oracle, "a puller diverged from the final state");
    }
    // Compaction did run under their feet (with 240 changes and 40 kept).
    assert!(log_rows(&db, "acme").await <= 240);
    // How often a lagging puller went stale depends on timing; the
    // convergence above is what must hold either way.
    let _ = rebootstrapped;
}

/// The builder's policy compacts in the background, on its own.
async fn the_background_task_compacts_on_its_own(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = common::builder(&db.db)
        .retention(
            RetentionPolicy::default()
                .max_entries(2)
                .every(Duration::from_millis(50)),
        )
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let a = server.client("ann", "acme");
    push_changes(&a, "r", 3, 12).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while log_rows(&db, "acme").await > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the background compaction did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stale(&a.pull("").await));
}

/// A compactor killed between raising a horizon and deleting under it (or
/// halfway through the deletes) leaves a database every reader handles,
/// and the next run finishes the work.
async fn a_killed_compactor_leaves_nothing_half_done(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = common::builder(&db.db).build().expect("build");
    let server = TestServer::start(sync.clone()).await;
    let a = server.client("ann", "acme");
    let cursors = push_changes(&a, "r", 5, 20).await;
    let storage = better_sync::SeaOrmStorage::new(db.db.clone());
    let r = storage.retention().expect("retention");
    let head = storage.head().await.expect("head");
    // The run raised the horizon to 15 entries below the head, deleted one
    // chunk of 4, and died.
    let horizon = head - 5;
    r.raise_horizon("acme", horizon).await.expect("raise");
    let step = r
        .delete_log("acme", 0, horizon, Default::default(), 4)
        .await
        .expect("one chunk");
    assert_eq!(step.deleted, 4);
    assert!(step.next.is_some());
    assert_eq!(log_rows(&db, "acme").await, 16);
    // Readers: below the horizon stale (with or without the rows still
    // there), at it served in full.
    assert!(stale(&a.pull(&format!("?cursor={}", cursors[10])).await));
    assert!(stale(&a.pull(&format!("?cursor={}", cursors[2])).await));
    let at = a.pull(&format!("?cursor={}", cursors[14])).await;
    assert_eq!(at.status, 200);
    assert_eq!(at.body["changes"].as_array().map(Vec::len), Some(5));
    // The next run (whatever its policy) deletes what is left under it.
    let report = sync
        .compact_with(&RetentionPolicy::default())
        .await
        .expect("compact");
    assert_eq!(report.log_deleted, 11, "{report:?}");
    assert_eq!(log_rows(&db, "acme").await, 5);
}

crate::per_backend!(
    the_background_task_compacts_on_its_own,
    a_killed_compactor_leaves_nothing_half_done,
    compaction_by_count_makes_old_cursors_stale,
    compaction_by_age_keeps_what_is_younger,
    tombstones_go_after_their_window_and_the_horizon,
    one_compactor_at_a_time,
    erasing_a_row_leaves_none_of_its_values,
    erasing_a_tenant_leaves_none_of_its_values,
    no_change_is_skipped_across_compaction,
);
