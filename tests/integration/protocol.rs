//! The protocol over real HTTP (axum + BetterSyncLayer on 127.0.0.1), on
//! SQLite, Postgres and MariaDB.

use crate::common;

use better_sync::conflict::{RowState, Stamp};
use better_sync::protocol::Op;
use common::{Backend, TestDb, TestServer, builder, change};
use serde_json::{Value, json};

const T0: &str = "2026-01-01T00:00:00.000Z";

fn at(ms: u64) -> String {
    format!("2026-01-01T00:00:{:02}.{:03}Z", ms / 1000, ms % 1000)
}

async fn setup(backend: Backend) -> (TestDb, TestServer) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    (db, server)
}

/// Fold pulled changes into per-row states, as a replica would.
fn replay(changes: &[Value]) -> std::collections::BTreeMap<String, RowState> {
    let mut rows = std::collections::BTreeMap::<String, RowState>::new();
    for c in changes {
        let op = Op::parse(c["op"].as_str().expect("op")).expect("op");
        let stamp = Stamp::new(
            c["updated_at"].as_str().expect("at").parse().expect("hlc"),
            c["actor"].as_str().expect("actor"),
            c["op_id"].as_str().expect("op_id"),
        );
        let key = format!(
            "{}/{}",
            c["model"].as_str().expect("m"),
            c["pk"].as_str().expect("pk")
        );
        rows.entry(key)
            .or_default()
            .apply(op, &c["payload"], &stamp);
    }
    rows
}

async fn round_trip(backend: Backend) {
    let (db, server) = setup(backend).await;
    let home = server.http.get(server.url("/")).send().await.expect("home");
    assert_eq!(home.text().await.expect("text"), "home");

    let alice = server.client("alice", "acme");
    let a = alice
        .push(json!([
            change(
                "o1",
                "todo",
                "1",
                "insert",
                json!({"id": "1", "title": "Write docs", "done": false}),
                T0,
                "dev-a"
            ),
            change(
                "o2",
                "todo",
                "1",
                "update",
                json!({"done": true}),
                &at(1000),
                "dev-a"
            ),
        ]))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let results = a.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["status"], "applied");
    assert!(results[0]["seq"].as_i64() < results[1]["seq"].as_i64());
    assert!(a.body["cursor"].is_string());

    let p = alice.pull("").await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    let changes = p.body["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["op_id"], "o1");
    assert_eq!(changes[0]["payload"]["title"], "Write docs");
    assert_eq!(changes[0]["updated_at"], "2026-01-01T00:00:00.000Z-0000");
    assert_eq!(changes[1]["op"], "update");
    assert_eq!(p.body["has_more"], false);

    let cursor = p.body["cursor"].as_str().expect("cursor");
    let again = alice.pull(&format!("?cursor={cursor}")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["changes"], json!([]));
    assert_eq!(again.body["cursor"], cursor);

    let s = alice.snapshot("?model=todo").await;
    assert_eq!(s.status, 200, "{:?}", s.body);
    assert_eq!(
        s.body["rows"][0]["value"],
        json!({"id": "1", "title": "Write docs", "done": true})
    );
    assert_eq!(s.body["rows"][0]["deleted"], false);
    assert_eq!(db.counts().await, (2, 1, 2));

    // Paging: limit 1 walks the log one change at a time.
    let first = alice.pull("?limit=1").await;
    assert_eq!(first.body["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(first.body["has_more"], true);
    let c = first.body["cursor"].as_str().expect("cursor");
    let second = alice.pull(&format!("?limit=1&cursor={c}")).await;
    assert_eq!(second.body["changes"][0]["op_id"], "o2");
    assert_eq!(second.body["has_more"], false);
}

async fn idempotent_replay(backend: Backend) {
    let (db, server) = setup(backend).await;
    let alice = server.client("alice", "acme");
    let batch = json!([
        change(
            "r1",
            "todo",
            "1",
            "insert",
            json!({"title": "a"}),
            T0,
            "dev-a"
        ),
        change(
            "r2",
            "todo",
            "1",
            "update",
            json!({"title": "b"}),
            &at(5),
            "dev-a"
        ),
    ]);
    let first = alice.push(batch.clone()).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let before = db.counts().await;
    let second = alice.push(batch).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    for (a, b) in first.body["results"]
        .as_array()
        .expect("r")
        .iter()
        .zip(second.body["results"].as_array().expect("r"))
    {
        assert_eq!(a["seq"], b["seq"]);
        assert_eq!(b["duplicate"], true);
    }
    assert_eq!(db.counts().await, before, "a replay writes nothing");

    // A batch mixing a replayed op and a new one applies only the new one.
    let mixed = alice
        .push(json!([
            change(
                "r2",
                "todo",
                "1",
                "update",
                json!({"title": "b"}),
                &at(5),
                "dev-a"
            ),
            change(
                "r3",
                "todo",
                "1",
                "update",
                json!({"title": "c"}),
                &at(9),
                "dev-a"
            ),
        ]))
        .await;
    assert_eq!(mixed.status, 200);
    assert_eq!(mixed.body["results"][0]["duplicate"], true);
    assert!(mixed.body["results"][1].get("duplicate").is_none());
    assert_eq!(db.counts().await.0, before.0 + 1);

    // The same op id with other content is a conflict and writes nothing.
    let before = db.counts().await;
    let reused = alice
        .push(json!([
            change(
                "r9",
                "todo",
                "2",
                "insert",
                json!({"title": "new"}),
                T0,
                "dev-a"
            ),
            change(
                "r1",
                "todo",
                "1",
                "insert",
                json!({"title": "changed"}),
                T0,
                "dev-a"
            ),
        ]))
        .await;
    assert_eq!(reused.status, 409, "{:?}", reused.body);
    assert_eq!(reused.code(), "SYNC:OP_ID_CONFLICT");
    assert_eq!(reused.body["meta"]["index"], 1);
    assert_eq!(db.counts().await, before);
    // Op ids are per tenant: another tenant using the same id neither
    // collides nor learns that it exists; it simply writes its own change.
    let mallory = server.client("mallory", "evil");
    let own = mallory
        .push(json!([change(
            "r1",
            "todo",
            "1",
            "insert",
            json!({"title": "mine"}),
            T0,
            "m"
        )]))
        .await;
    assert_eq!(own.status, 200, "{:?}", own.body);
    assert!(own.body["results"][0].get("duplicate").is_none());
    assert_eq!(db.counts().await.0, before.0 + 1);
    assert_eq!(
        mallory.snapshot("?model=todo").await.body["rows"][0]["value"]["title"],
        "mine"
    );
    assert_eq!(a_title(&alice).await, "c");
}

async fn a_title(c: &common::Client) -> String {
    let s = c.snapshot("?model=todo").await;
    s.body["rows"][0]["value"]["title"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn conflicting_writes_converge(backend: Backend) {
    let (_db, server) = setup(backend).await;
    let a = server.client("alice", "acme");
    let b = server.client("bob", "acme");
    let seed = a
        .push(json!([change(
            "s1",
            "todo",
            "1",
            "insert",
            json!({"id": "1", "title": "t0", "done": false, "note": ""}),
            T0,
            "alice"
        )]))
        .await;
    assert_eq!(seed.status, 200);

    // Concurrently: same field (later clock wins regardless of arrival),
    // different fields (both survive), equal clocks (larger actor wins).
    let (ra, rb) = tokio::join!(
        a.push(json!([
            change(
                "a1",
                "todo",
                "1",
                "update",
                json!({"title": "alice-late"}),
                &at(3000),
                "alice"
            ),
            change(
                "a2",
                "todo",
                "1",
                "update",
                json!({"done": true}),
                &at(1000),
                "alice"
            ),
            change(
                "a3",
                "todo",
                "1",
                "update",
                json!({"note": "from alice"}),
                &at(2000),
                "alice"
            ),
        ])),
        b.push(json!([
            change(
                "b1",
                "todo",
                "1",
                "update",
                json!({"title": "bob-early"}),
                &at(2500),
                "bob"
            ),
            change(
                "b2",
                "todo",
                "1",
                "update",
                json!({"note": "from bob"}),
                &at(2000),
                "bob"
            ),
        ])),
    );
    assert_eq!(ra.status, 200, "{:?}", ra.body);
    assert_eq!(rb.status, 200, "{:?}", rb.body);
    let want = json!({"id": "1", "title": "alice-late", "done": true, "note": "from bob"});
    let snap = a.snapshot("?model=todo").await;
    assert_eq!(snap.body["rows"][0]["value"], want);

    // Every replica that folds the log in cursor order reaches the server's state.
    let (changes, _) = b.pull_all().await;
    let replica = replay(&changes);
    assert_eq!(replica["todo/1"].value(), want);

    // Delete and update at the same clock: the delete wins.
    let (rd, ru) = tokio::join!(
        a.push(json!([change(
            "a4",
            "todo",
            "1",
            "delete",
            Value::Null,
            &at(9000),
            "alice"
        )])),
        b.push(json!([change(
            "b4",
            "todo",
            "1",
            "update",
            json!({"title": "zombie"}),
            &at(9000),
            "zzz"
        )])),
    );
    assert_eq!((rd.status, ru.status), (200, 200));
    let snap = a.snapshot("?model=todo").await;
    assert_eq!(snap.body["rows"][0]["deleted"], true);
    let (changes, _) = a.pull_all().await;
    assert!(!replay(&changes)["todo/1"].is_live());
}

async fn deletes(backend: Backend) {
    let (db, server) = setup(backend).await;
    let a = server.client("alice", "acme");
    let ctx = better_sync::Ctx::new("alice", "acme");
    a.push(json!([change(
        "d1",
        "todo",
        "7",
        "insert",
        json!({"id": "7", "title": "x"}),
        T0,
        "a"
    )]))
    .await;
    assert!(
        server
            .sync
            .get(&ctx, "todo", "7")
            .await
            .expect("get")
            .is_some()
    );
    let del = a
        .push(json!([change(
            "d2",
            "todo",
            "7",
            "delete",
            json!({"ignored": 1}),
            &at(10),
            "a"
        )]))
        .await;
    assert_eq!(del.status, 200, "{:?}", del.body);
    assert_eq!(server.sync.get(&ctx, "todo", "7").await.expect("get"), None);
    let (changes, _) = a.pull_all().await;
    assert_eq!(changes.last().expect("delete")["op"], "delete");
    assert_eq!(changes.last().expect("delete")["payload"], Value::Null);
    // A late, older update does not resurrect it; a newer insert re-creates it.
    a.push(json!([change(
        "d3",
        "todo",
        "7",
        "update",
        json!({"title": "old"}),
        &at(5),
        "b"
    )]))
    .await;
    assert_eq!(server.sync.get(&ctx, "todo", "7").await.expect("get"), None);
    a.push(json!([change(
        "d4",
        "todo",
        "7",
        "insert",
        json!({"id": "7", "title": "again"}),
        &at(20),
        "a"
    )]))
    .await;
    assert_eq!(
        server.sync.get(&ctx, "todo", "7").await.expect("get"),
        Some(json!({"id": "7", "title": "again"}))
    );
    assert_eq!(db.counts().await, (4, 1, 4));
}

async fn tenant_isolation(backend: Backend) {
    let (db, server) = setup(backend).await;
    let a = server.client("alice", "acme");
    let b = server.client("bob", "globex");
    a.push(json!([change(
        "t1",
        "todo",
        "1",
        "insert",
        json!({"title": "acme secret"}),
        T0,
        "a"
    )]))
    .await;

    // B sees nothing of A on any read path, even when naming A's tenant in a header.
    let spoof = b
        .send(
            b.http
                .get(format!("{}/pull", b.base))
                .header("x-tenant-id", "acme")
                .header("tenant", "acme"),
        )
        .await;
    assert_eq!(spoof.status, 200);
    assert_eq!(spoof.body["changes"], json!([]));
    assert_eq!(b.snapshot("?model=todo").await.body["rows"], json!([]));
    assert_eq!(
        server
            .sync
            .get(&better_sync::Ctx::new("bob", "globex"), "todo", "1")
            .await
            .expect("get"),
        None
    );
    // A tenant in the body is ignored, not obeyed.
    let body = json!({"client_id": "b", "tenant_id": "acme", "changes": [change("t2", "todo", "1", "insert", json!({"title": "globex"}), T0, "b")]});
    let pushed = b.push_raw(body.to_string()).await;
    assert_eq!(pushed.status, 200, "{:?}", pushed.body);
    assert_eq!(
        a.snapshot("?model=todo").await.body["rows"][0]["value"]["title"],
        "acme secret"
    );
    assert_eq!(
        b.snapshot("?model=todo").await.body["rows"][0]["value"]["title"],
        "globex"
    );

    // A cursor of one tenant is refused for another.
    let (_, a_cursor) = a.pull_all().await;
    let foreign = b.pull(&format!("?cursor={a_cursor}")).await;
    assert_eq!(
        (foreign.status, foreign.code()),
        (400, "SYNC:FOREIGN_CURSOR")
    );
    assert_eq!(db.counts().await.0, 2);
}

async fn bad_inputs_get_sync_errors_and_write_nothing(backend: Backend) {
    let (db, server) = setup(backend).await;
    let a = server.client("alice", "acme");
    a.push(json!([change(
        "ok1",
        "todo",
        "1",
        "insert",
        json!({"title": "keep"}),
        T0,
        "a"
    )]))
    .await;
    let before = db.counts().await;
    let far_future = "2999-01-01T00:00:00.000Z";
    let deep = (0..40).fold(json!(1), |v, _| json!([v]));
    let big = "x".repeat(1 << 20);
    let many: Vec<Value> = (0..1001)
        .map(|i| {
            change(
                &format!("m{i}"),
                "todo",
                &i.to_string(),
                "insert",
                json!({}),
                T0,
                "a",
            )
        })
        .collect();
    let one = |c: Value| json!({"changes": [c]}).to_string();
    let ok = |f: &dyn Fn(&mut Value)| {
        let mut c = change(
            "bad1",
            "todo",
            "9",
            "insert",
            json!({"title": "x"}),
            T0,
            "a",
        );
        f(&mut c);
        one(c)
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "broken JSON",
            "{\"changes\": [".into(),
            400,
            "SYNC:MALFORMED_JSON",
        ),
        ("empty body", String::new(), 400, "SYNC:MALFORMED_JSON"),
        (
            "not UTF-8 JSON",
            "\u{0}\u{1}".into(),
            400,
            "SYNC:MALFORMED_JSON",
        ),
        ("body is an array", "[]".into(), 422, "SYNC:INVALID_BODY"),
        (
            "body is an array of the fields",
            "[\"cli\", []]".into(),
            422,
            "SYNC:INVALID_BODY",
        ),
        ("body is null", "null".into(), 422, "SYNC:INVALID_BODY"),
        (
            "wrong shape, then cut off",
            "{\"changes\": {}".into(),
            400,
            "SYNC:MALFORMED_JSON",
        ),
        (
            "a change that is a number",
            "{\"changes\": [5]}".into(),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        ("changes missing", "{}".into(), 422, "SYNC:INVALID_BODY"),
        (
            "changes not an array",
            "{\"changes\": {}}".into(),
            422,
            "SYNC:INVALID_BODY",
        ),
        (
            "client_id wrong type",
            "{\"client_id\": 5, \"changes\": []}".into(),
            422,
            "SYNC:INVALID_BODY",
        ),
        (
            "pk wrong type",
            ok(&|c| c["pk"] = json!(9)),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "op_id missing",
            ok(&|c| {
                c.as_object_mut().map(|o| o.remove("op_id"));
            }),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "pk missing",
            ok(&|c| {
                c.as_object_mut().map(|o| o.remove("pk"));
            }),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "op_id empty",
            ok(&|c| c["op_id"] = json!("")),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "pk empty",
            ok(&|c| c["pk"] = json!("")),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "pk too long",
            ok(&|c| c["pk"] = json!("k".repeat(300))),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "unknown op",
            ok(&|c| c["op"] = json!("upsert")),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "unknown model",
            ok(&|c| c["model"] = json!("secrets")),
            422,
            "SYNC:UNKNOWN_MODEL",
        ),
        (
            "model not an identifier",
            ok(&|c| c["model"] = json!("todo; drop table")),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "timestamp far in the future",
            ok(&|c| c["updated_at"] = json!(far_future)),
            422,
            "SYNC:CLOCK_SKEW",
        ),
        (
            // Its UTC time is in year -1, which has no canonical text.
            "timestamp an offset carries before year 0",
            ok(&|c| c["updated_at"] = json!("0000-01-01T00:00:00+01:00")),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "timestamp garbage",
            ok(&|c| c["updated_at"] = json!("yesterday")),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "insert payload not an object",
            ok(&|c| c["payload"] = json!([1])),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "update with empty payload",
            ok(&|c| {
                c["op"] = json!("update");
                c["payload"] = json!({});
            }),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "payload id differs from pk",
            ok(&|c| c["payload"] = json!({"id": "10"})),
            422,
            "SYNC:INVALID_CHANGE",
        ),
        (
            "payload nested too deep",
            ok(&|c| c["payload"] = json!({"deep": deep.clone()})),
            422,
            "SYNC:PAYLOAD_TOO_DEEP",
        ),
        (
            "one change's payload too large",
            ok(&|c| c["payload"] = json!({"big": "y".repeat(300_000)})),
            413,
            "SYNC:CHANGE_TOO_LARGE",
        ),
        (
            "duplicate op ids",
            json!({"changes": [
            change("dup", "todo", "1", "update", json!({"a": 1}), T0, "a"),
            change("dup", "todo", "2", "update", json!({"a": 1}), T0, "a")]})
            .to_string(),
            409,
            "SYNC:DUPLICATE_OP_ID",
        ),
        (
            "oversize body",
            ok(&|c| c["payload"] = json!({"big": big.clone()})),
            413,
            "SYNC:PAYLOAD_TOO_LARGE",
        ),
        (
            "oversize batch",
            json!({"changes": many}).to_string(),
            413,
            "SYNC:BATCH_TOO_LARGE",
        ),
    ];
    for (what, body, status, code) in cases {
        let got = a.push_raw(body).await;
        assert_eq!(
            (got.status, got.code()),
            (status, code),
            "{what}: {:?}",
            got.body
        );
        assert!(
            got.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert_eq!(db.counts().await, before, "{what} wrote something");
    }

    // Read paths.
    let other_db = TestDb::new(Backend::Sqlite).await;
    let other = TestServer::start(builder(&other_db.db).build().expect("build")).await;
    let oa = other.client("alice", "acme");
    for i in 0..5 {
        oa.push(json!([change(
            &format!("x{i}"),
            "todo",
            "1",
            "insert",
            json!({}),
            T0,
            "a"
        )]))
        .await;
    }
    let (_, ahead) = oa.pull_all().await;
    let reads: Vec<(&str, String, u16, &str)> = vec![
        (
            "garbage cursor",
            "/pull?cursor=abc".into(),
            400,
            "SYNC:INVALID_CURSOR",
        ),
        (
            "cursor past the log",
            format!("/pull?cursor={ahead}"),
            409,
            "SYNC:CURSOR_AHEAD",
        ),
        (
            "limit zero",
            "/pull?limit=0".into(),
            400,
            "SYNC:INVALID_QUERY",
        ),
        (
            "limit text",
            "/pull?limit=abc".into(),
            400,
            "SYNC:INVALID_QUERY",
        ),
        (
            "limit negative",
            "/pull?limit=-5".into(),
            400,
            "SYNC:INVALID_QUERY",
        ),
        (
            "wait negative",
            "/pull?wait=-1".into(),
            400,
            "SYNC:INVALID_QUERY",
        ),
        (
            "cursor twice",
            "/pull?cursor=a&cursor=b".into(),
            400,
            "SYNC:INVALID_QUERY",
        ),
        (
            "snapshot without model",
            "/snapshot".into(),
            400,
            "SYNC:INVALID_QUERY",
        ),
        (
            "snapshot unknown model",
            "/snapshot?model=secrets".into(),
            422,
            "SYNC:UNKNOWN_MODEL",
        ),
        ("unknown route", "/nope".into(), 404, "SYNC:NOT_FOUND"),
        (
            "wrong method",
            "/push".into(),
            405,
            "SYNC:METHOD_NOT_ALLOWED",
        ),
    ];
    for (what, path, status, code) in reads {
        let got = a.send(a.http.get(format!("{}{path}", a.base))).await;
        assert_eq!(
            (got.status, got.code()),
            (status, code),
            "{what}: {:?}",
            got.body
        );
    }

    // Credentials.
    let anon = server
        .http
        .get(server.url("/api/sync/pull"))
        .send()
        .await
        .expect("req");
    assert_eq!(anon.status(), 401);
    assert_eq!(anon.headers()["www-authenticate"], "Bearer");
    let mut forged = a.clone();
    forged.token = better_sync::testing::dev_token(b"not-the-secret", "alice", "acme", 60);
    assert_eq!(forged.pull("").await.code(), "SYNC:UNAUTHORIZED");
    let got = forged
        .push(json!([change(
            "f1",
            "todo",
            "1",
            "delete",
            Value::Null,
            T0,
            "a"
        )]))
        .await;
    assert_eq!((got.status, got.code()), (401, "SYNC:UNAUTHORIZED"));
    let mut no_tenant = a.clone();
    no_tenant.token = better_sync::testing::sign_hs256(
        common::SECRET,
        &json!({"sub": "a", "exp": 4_000_000_000u64}),
    );
    assert_eq!(no_tenant.pull("").await.code(), "SYNC:FORBIDDEN");
    assert_eq!(db.counts().await, before);
}

async fn batch_with_one_invalid_change_writes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sync = builder(&db.db)
        .can_write(|ctx, model, change| {
            !(model == "note" && change.pk.starts_with("locked") && ctx.user_id != "admin")
        })
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let a = server.client("alice", "acme");
    let mut changes: Vec<Value> = (0..5)
        .map(|i| {
            change(
                &format!("v{i}"),
                "todo",
                &i.to_string(),
                "insert",
                json!({"n": i}),
                T0,
                "a",
            )
        })
        .collect();
    changes.insert(
        3,
        change(
            "bad",
            "todo",
            "x",
            "update",
            json!("not an object"),
            T0,
            "a",
        ),
    );
    let got = a.push(Value::Array(changes.clone())).await;
    assert_eq!(
        (got.status, got.code()),
        (422, "SYNC:INVALID_CHANGE"),
        "{:?}",
        got.body
    );
    assert_eq!(got.body["meta"]["index"], 3);
    assert_eq!(db.counts().await, (0, 0, 0));

    // A change refused by can_write fails the whole batch.
    changes[3] = change("locked", "note", "locked-1", "insert", json!({}), T0, "a");
    let got = a.push(Value::Array(changes.clone())).await;
    assert_eq!(
        (got.status, got.code()),
        (403, "SYNC:FORBIDDEN"),
        "{:?}",
        got.body
    );
    assert_eq!(db.counts().await, (0, 0, 0));
    let admin = server.client("admin", "acme");
    assert_eq!(admin.push(Value::Array(changes)).await.status, 200);
    assert_eq!(db.counts().await, (6, 6, 6));
}

async fn snapshot_bootstrap_pages(backend: Backend) {
    let (_db, server) = setup(backend).await;
    let a = server.client("alice", "acme");
    let rows: Vec<Value> = (0..25)
        .map(|i| {
            change(
                &format!("s{i}"),
                "todo",
                &format!("row-{i:02}"),
                "insert",
                json!({"n": i}),
                T0,
                "a",
            )
        })
        .collect();
    assert_eq!(a.push(Value::Array(rows)).await.status, 200);
    a.push(json!([change(
        "del",
        "todo",
        "row-03",
        "delete",
        Value::Null,
        &at(1),
        "a"
    )]))
    .await;
    a.push(json!([change(
        "n1",
        "note",
        "n",
        "insert",
        json!({}),
        T0,
        "a"
    )]))
    .await;

    let mut ids = Vec::new();
    let mut first_cursor = None;
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(k) => format!("?model=todo&limit=10&after={k}"),
            None => "?model=todo&limit=10".into(),
        };
        let page = a.snapshot(&q).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        first_cursor
            .get_or_insert_with(|| page.body["cursor"].as_str().expect("cursor").to_owned());
        for r in page.body["rows"].as_array().expect("rows") {
            ids.push((
                r["id"].as_str().expect("id").to_owned(),
                r["deleted"].as_bool().expect("deleted"),
            ));
        }
        if page.body["has_more"] == false {
            assert!(page.body.get("next_after").is_none());
            break;
        }
        after = Some(
            page.body["next_after"]
                .as_str()
                .expect("next_after")
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 25);
    assert!(ids.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        ids.iter().filter(|(_, d)| *d).count(),
        1,
        "the tombstone is part of the bootstrap"
    );

    // Pulling from the first page's cursor yields exactly what came after.
    a.push(json!([change(
        "later",
        "todo",
        "row-00",
        "update",
        json!({"n": 100}),
        &at(2),
        "a"
    )]))
    .await;
    let after_boot = a
        .pull(&format!("?cursor={}", first_cursor.expect("cursor")))
        .await;
    let ops: Vec<&str> = after_boot.body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["op_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ops, ["later"]);
}

/// Without a `can_read` hook, pull and snapshot pass the stored JSON through
/// instead of parsing it; the answers must be the same JSON as with a hook
/// that lets everything through (which parses).
async fn stored_json_is_passed_through_unchanged(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = b"cursor-key-cursor-key-cursor-key".to_vec();
    let plain = TestServer::start(
        builder(&db.db)
            .cursor_key(key.clone())
            .build()
            .expect("build"),
    )
    .await;
    let hooked = TestServer::start(
        builder(&db.db)
            .cursor_key(key)
            .can_read(|_, _, _| true)
            .build()
            .expect("build"),
    )
    .await;
    let alice = plain.client("alice", "acme");
    let payloads = [
        json!({"title": "caf\u{e9} \u{1F600} \"quoted\" \\ back", "n": 1.5, "big": 1e300,
               "neg": -0.0, "nested": {"list": [1, "two", null, true, {"deep": []}]}}),
        json!({"title": "second", "done": false, "tags": []}),
        json!({}),
    ];
    let changes: Vec<Value> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            change(
                &format!("j{i}"),
                "todo",
                &format!("{i}"),
                "insert",
                p.clone(),
                T0,
                "dev-a",
            )
        })
        .collect();
    assert_eq!(alice.push(json!(changes)).await.status, 200);
    let bob = hooked.client("alice", "acme");
    for query in ["", "?limit=2"] {
        let (a, b) = (alice.pull(query).await, bob.pull(query).await);
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b.body, "pull{query}");
    }
    // (A `can_read` hook also drops pulled changes of rows deleted since,
    // so the delete comes after the pulls are compared.)
    assert_eq!(
        alice
            .push(json!([change(
                "j9",
                "todo",
                "1",
                "delete",
                json!({}),
                &at(5),
                "dev-a"
            )]))
            .await
            .status,
        200
    );
    for query in [
        "?model=todo",
        "?model=todo&limit=1",
        "?model=todo&limit=1&after=0",
    ] {
        let (a, b) = (alice.snapshot(query).await, bob.snapshot(query).await);
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b.body, "snapshot{query}");
    }
    let all = alice.snapshot("?model=todo").await;
    assert_eq!(all.body["rows"][0]["value"], payloads[0]);
    assert_eq!(all.body["rows"][1]["deleted"], true);
}

per_backend!(
    round_trip,
    stored_json_is_passed_through_unchanged,
    idempotent_replay,
    conflicting_writes_converge,
    deletes,
    tenant_isolation,
    bad_inputs_get_sync_errors_and_write_nothing,
    batch_with_one_invalid_change_writes_nothing,
    snapshot_bootstrap_pages,
);
