//! The inspector: off by default; behind the `authorize` hook and a role;
//! the caller's tenant only; the log newest first and paged, live sessions
//! with how far each was sent, and each row's field stamps with the writes
//! that lost and why; bad queries get `SYNC:*` errors.

use better_sync::testing::sign_hs256;
use serde_json::{Value, json};

use crate::common;
use common::{
    Backend, Client, SECRET, TestDb, TestServer, builder, change, ws_connect, ws_next, ws_subscribe,
};

fn token(user: &str, tenant: &str, roles: &[&str]) -> String {
    sign_hs256(
        SECRET,
        &json!({ "sub": user, "tenant": tenant, "roles": roles, "exp": 4_000_000_000u64 }),
    )
}

fn client(server: &TestServer, user: &str, tenant: &str, roles: &[&str]) -> Client {
    Client {
        http: server.http.clone(),
        base: server.url("/api/sync"),
        token: token(user, tenant, roles),
    }
}

async fn get(c: &Client, path: &str) -> common::Answer {
    c.send(c.http.get(format!("{}{path}", c.base))).await
}

async fn the_inspector_explains_rows_and_stays_in_its_tenant(backend: Backend) {
    let db = TestDb::new(backend).await;

    // Off by default: not served, not documented.
    let off = TestServer::start(builder(&db.db).build().expect("build")).await;
    let admin = client(&off, "root", "acme", &["admin"]);
    for path in [
        "/inspector",
        "/inspector/log",
        "/inspector/sessions",
        "/inspector/row?model=todo&id=1",
    ] {
        assert_eq!(get(&admin, path).await.status, 404, "{path}");
    }
    let doc = get(&admin, "/openapi.json").await;
    assert!(doc.body["paths"].get("/api/sync/inspector/log").is_none());
    drop(off);

    let server =
        TestServer::start(builder(&db.db).inspector("admin").build().expect("build")).await;
    let admin = client(&server, "root", "acme", &["admin"]);
    let writer = client(&server, "w", "acme", &[]);
    let stranger = client(&server, "s", "other", &["admin"]);

    // The page is static; the data needs the role.
    let page = server
        .http
        .get(server.url("/api/sync/inspector"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .expect("text")
            .contains("better-sync inspector")
    );
    let refused = get(&writer, "/inspector/log").await;
    assert_eq!((refused.status, refused.code()), (403, "SYNC:FORBIDDEN"));
    let anonymous = server
        .http
        .get(server.url("/api/sync/inspector/log"))
        .send()
        .await
        .expect("anon");
    assert_eq!(anonymous.status(), 401);

    // A session follows the tenant.
    let mut ws = ws_connect(server.addr, &writer.token).await;
    ws_subscribe(&mut ws, None).await;

    // A row written by two devices: a title both wrote (the later clock
    // wins), a tie broken by actor, a field only one wrote.
    let pushed = writer
        .push(json!([
            change(
                "o1",
                "todo",
                "1",
                "insert",
                json!({"id": "1", "title": "first", "done": false}),
                "2026-01-01T00:00:01.000Z",
                "dev-a"
            ),
            change(
                "o2",
                "todo",
                "1",
                "update",
                json!({"title": "later"}),
                "2026-01-01T00:00:05.000Z",
                "dev-a"
            ),
            change(
                "o3",
                "todo",
                "1",
                "update",
                json!({"title": "earlier"}),
                "2026-01-01T00:00:04.000Z",
                "dev-b"
            ),
            change(
                "o4",
                "todo",
                "1",
                "update",
                json!({"done": true}),
                "2026-01-01T00:00:06.000Z",
                "dev-a"
            ),
            change(
                "o5",
                "todo",
                "1",
                "update",
                json!({"done": false}),
                "2026-01-01T00:00:06.000Z",
                "dev-b"
            ),
        ]))
        .await;
    assert_eq!(pushed.status, 200, "{:?}", pushed.body);
    let live = ws_next(&mut ws, 10).await.expect("live changes");
    assert_eq!(live["type"], "changes");

    let row = get(&admin, "/inspector/row?model=todo&id=1").await;
    assert_eq!(row.status, 200, "{:?}", row.body);
    assert_eq!(
        row.body["value"],
        json!({"id": "1", "title": "later", "done": false})
    );
    let field = |name: &str| -> Value {
        row.body["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("field {name}"))
    };
    let title = field("title");
    assert_eq!(title["stamp"]["op_id"], "o2");
    let lost: Vec<&str> = title["lost"]
        .as_array()
        .expect("lost")
        .iter()
        .map(|l| l["lost"].as_str().expect("why"))
        .collect();
    assert_eq!(lost.len(), 2, "{title}");
    assert!(
        lost.iter().all(|w| w.starts_with("older clock")),
        "{lost:?}"
    );
    let done = field("done");
    assert_eq!(done["stamp"]["actor"], "dev-b");
    assert!(
        done["lost"][0]["lost"]
            .as_str()
            .is_some_and(|w| w.starts_with("same clock; actor \"dev-a\"")),
        "{done}"
    );
    assert_eq!(row.body["history"].as_array().map(Vec::len), Some(5));

    // The log, newest first, paged by `before`.
    let page = get(&admin, "/inspector/log?limit=3").await;
    assert_eq!(page.status, 200);
    let seqs: Vec<i64> = page.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[0] > w[1]));
    let before = page.body["before"].as_i64().expect("before");
    let rest = get(&admin, &format!("/inspector/log?before={before}")).await;
    assert_eq!(rest.body["entries"].as_array().map(Vec::len), Some(2));

    // Live sessions of the tenant on this instance, and how far each was sent.
    let sessions = get(&admin, "/inspector/sessions").await;
    let list = sessions.body["sessions"].as_array().expect("sessions");
    assert_eq!(list.len(), 1, "{:?}", sessions.body);
    assert_eq!(list[0]["user"], "w");
    assert_eq!(list[0]["sentUpToSeq"], json!(seqs[0]));
    assert_eq!(list[0]["subscriptions"][0]["id"], "");

    // Another tenant's inspector sees none of it.
    assert_eq!(
        get(&stranger, "/inspector/log").await.body["entries"],
        json!([])
    );
    assert_eq!(
        get(&stranger, "/inspector/row?model=todo&id=1").await.body["exists"],
        false
    );
    assert_eq!(
        get(&stranger, "/inspector/sessions").await.body["sessions"],
        json!([])
    );

    // Bad queries.
    for (path, status, code) in [
        ("/inspector/row?model=todo", 400, "SYNC:INVALID_QUERY"),
        ("/inspector/row?model=nope&id=1", 422, "SYNC:UNKNOWN_MODEL"),
        ("/inspector/log?limit=0", 400, "SYNC:INVALID_QUERY"),
        ("/inspector/log?before=x", 400, "SYNC:INVALID_QUERY"),
    ] {
        let a = get(&admin, path).await;
        assert_eq!((a.status, a.code()), (status, code), "{path}");
    }
    // Documented when served.
    let doc = get(&admin, "/openapi.json").await;
    assert!(doc.body["paths"].get("/api/sync/inspector/row").is_some());
}

per_backend!(the_inspector_explains_rows_and_stays_in_its_tenant);
