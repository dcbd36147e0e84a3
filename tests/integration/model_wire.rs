//! Model versions and wire serializers: a client announces the versions it
//! was built for; an older one's payloads are upgraded, one the server
//! cannot serve is refused with `SYNC:VERSION_UNSUPPORTED` on every route;
//! a model's serializer decodes what clients send into the stored form and
//! encodes it back on every read path (pull, snapshot with its clocks, the
//! WebSocket), while the application sees the stored form.

use crate::common;

use better_sync::{Ctx, JsonSchema, ModelOptions};
use common::{Backend, TestDb, TestServer, change};
use serde_json::{Map, Value, json};

const AT: &str = "2026-11-25T10:00:00.000Z";

/// Version 2 of the todo: version 1 called the title `name`.
#[derive(serde::Serialize, serde::Deserialize, JsonSchema)]
struct Todo {
    id: String,
    title: String,
    done: bool,
}

fn todo_v2() -> ModelOptions {
    ModelOptions::default()
        .version(2)
        .upgrade(1, |_op, mut fields: Map<String, Value>| {
            if fields.contains_key("title") {
                return Err("version 1 has no `title`".into());
            }
            if let Some(name) = fields.remove("name") {
                fields.insert("title".into(), name);
            }
            Ok(fields)
        })
}

/// Prices travel as decimal text ("12.50") and are stored as integer cents.
fn price_wire() -> ModelOptions {
    ModelOptions::default().wire(
        |mut f: Map<String, Value>| {
            if let Some(v) = f.remove("amount") {
                let text = v.as_str().ok_or("amount must be decimal text")?;
                let (units, cents) = text.split_once('.').unwrap_or((text, "00"));
                let cents: i64 = match (units.parse::<i64>(), cents.len(), cents.parse::<i64>()) {
                    (Ok(u), 2, Ok(c)) => u * 100 + c,
                    _ => return Err(format!("amount {text:?} is not like 12.50")),
                };
                f.insert("cents".into(), cents.into());
            }
            Ok(f)
        },
        |mut f: Map<String, Value>| {
            if let Some(c) = f.remove("cents").and_then(|c| c.as_i64()) {
                f.insert(
                    "amount".into(),
                    format!("{}.{:02}", c / 100, c % 100).into(),
                );
            }
            f
        },
    )
}

async fn server(db: &TestDb, normalize: bool) -> (better_sync::BetterSync, TestServer) {
    let sync = common::builder(&db.db)
        .typed_model_with::<Todo>("todo", todo_v2())
        .model_with("price", price_wire())
        .wire_normalize(normalize)
        .build()
        .expect("build");
    (sync.clone(), TestServer::start(sync).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_clients_are_upgraded_and_unservable_ones_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (sync, server) = server(&db, true).await;
    let a = server.client("ann", "acme");
    let push_as = |versions: &'static str, changes: Value| {
        let a = a.clone();
        async move {
            a.send(
                a.http
                    .post(format!("{}/push", a.base))
                    .header("x-sync-versions", versions)
                    .header("content-type", "application/json")
                    .body(json!({"client_id": "c", "changes": changes}).to_string()),
            )
            .await
        }
    };

    // sync.json says what is served.
    let meta = a
        .send(server.http.get(server.url("/api/sync/sync.json")))
        .await;
    assert_eq!(
        meta.body["versions"]["todo"],
        json!({"current": 2, "oldest": 1})
    );
    assert!(
        meta.body["versions"].get("price").is_none(),
        "{}",
        meta.body
    );

    // A version-1 client writes `name`; it is stored and read as `title`.
    let old = push_as(
        "todo=1",
        json!([change(
            "o1",
            "todo",
            "1",
            "insert",
            json!({"id": "1", "name": "milk", "done": false}),
            AT,
            "d"
        )]),
    )
    .await;
    assert_eq!(old.status, 200, "{:?}", old.body);
    let old = push_as(
        "todo=1, price=1",
        json!([change(
            "o2",
            "todo",
            "1",
            "update",
            json!({"name": "oat milk"}),
            AT,
            "d"
        )]),
    )
    .await;
    assert_eq!(old.status, 200, "{:?}", old.body);
    let row = sync
        .get(&Ctx::new("ann", "acme"), "todo", "1")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row, json!({"id": "1", "title": "oat milk", "done": false}));
    // A current client (announcing or not) writes the current form.
    for versions in ["todo=2", ""] {
        let now = push_as(
            versions,
            json!([change(
                &format!("n{versions}"),
                "todo",
                "2",
                "insert",
                json!({"id": "2", "title": "eggs", "done": true}),
                AT,
                "d"
            )]),
        )
        .await;
        assert_eq!(now.status, 200, "{versions:?}: {:?}", now.body);
    }
    // What an upgrade refuses, and what the current schema refuses after it.
    let bad = push_as(
        "todo=1",
        json!([change(
            "b1",
            "todo",
            "3",
            "insert",
            json!({"id": "3", "title": "x", "done": false}),
            AT,
            "d"
        )]),
    )
    .await;
    assert_eq!(
        (bad.status, bad.code()),
        (422, "SYNC:SCHEMA_VIOLATION"),
        "{:?}",
        bad.body
    );
    assert!(
        bad.body["meta"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("upgrade from version 1"),
        "{:?}",
        bad.body
    );
    let bad = push_as(
        "todo=1",
        json!([change(
            "b2",
            "todo",
            "3",
            "insert",
            json!({"id": "3", "name": 7, "done": false}),
            AT,
            "d"
        )]),
    )
    .await;
    assert_eq!(bad.body["meta"]["field"], "payload.title", "{:?}", bad.body);

    // Versions this server cannot serve, on every route.
    let refused = |an: &common::Answer, what: &str| {
        assert_eq!(
            (an.status, an.code()),
            (409, "SYNC:VERSION_UNSUPPORTED"),
            "{what}: {:?}",
            an.body
        );
    };
    let newer = push_as("todo=3", json!([])).await;
    refused(&newer, "push");
    assert_eq!(
        newer.body["meta"],
        json!({"model": "todo", "version": 3, "current": 2, "oldest": 1})
    );
    refused(
        &push_as("note=2", json!([])).await,
        "a model without versions is at 1",
    );
    for path in ["pull", "snapshot?model=todo"] {
        let an = a
            .send(
                a.http
                    .get(format!("{}/{path}", a.base))
                    .header("x-sync-versions", "todo=3"),
            )
            .await;
        refused(&an, path);
        let an = a
            .send(a.http.get(format!(
                "{}/{path}{}versions=todo%3D3",
                a.base,
                if path.contains('?') { "&" } else { "?" }
            )))
            .await;
        refused(&an, &format!("{path} with versions="));
    }
    // The WebSocket handshake is refused before the upgrade.
    let ws = reqwest::Client::new()
        .get(server.url("/api/sync/ws?versions=todo%3D9"))
        .bearer_auth(&a.token)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("handshake");
    assert_eq!(ws.status(), 409);
    // Malformed announcements; models the server does not know are left alone.
    for bad in ["todo", "todo=0", "todo=x", "to do=1", "todo=1,todo=1"] {
        let an = push_as(bad, json!([])).await;
        assert_eq!(
            (an.status, an.code()),
            (400, "SYNC:INVALID_QUERY"),
            "{bad}: {:?}",
            an.body
        );
    }
    assert_eq!(push_as("unheard=4", json!([])).await.status, 200);
    // Nothing refused was written.
    let (changes, _) = a.pull_all().await;
    let ids: Vec<&str> = changes.iter().filter_map(|c| c["op_id"].as_str()).collect();
    assert_eq!(ids, ["o1", "o2", "ntodo=2", "n"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_models_serializer_runs_on_every_path() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (sync, server) = server(&db, true).await;
    let a = server.client("ann", "acme");
    let mut ws = common::ws_connect(server.addr, &a.token).await;
    common::ws_subscribe(&mut ws, None).await;

    let r = a
        .push(json!([
            change(
                "p1",
                "price",
                "tea",
                "insert",
                json!({"id": "tea", "amount": "12.50", "name": "Tea"}),
                AT,
                "d"
            ),
            change(
                "p2",
                "price",
                "tea",
                "update",
                json!({"amount": "3.05"}),
                "2026-11-25T10:00:01.000Z",
                "d"
            ),
        ]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Stored (what the application sees): cents.
    let stored = sync
        .get(&Ctx::new("ann", "acme"), "price", "tea")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(stored, json!({"id": "tea", "cents": 305, "name": "Tea"}));
    // Pulled, live, snapshotted (value and clocks): decimal text.
    let (pulled, _) = a.pull_all().await;
    assert_eq!(pulled[0]["payload"]["amount"], "12.50");
    assert_eq!(pulled[1]["payload"], json!({"amount": "3.05"}));
    let live = common::ws_next(&mut ws, 10).await.expect("live");
    assert_eq!(live["changes"][0]["payload"]["amount"], "12.50", "{live}");
    let snap = a.snapshot("?model=price").await;
    let row = &snap.body["rows"][0];
    assert_eq!(
        row["value"],
        json!({"id": "tea", "amount": "3.05", "name": "Tea"})
    );
    let stamps = row["clocks"]["f"].as_object().expect("field clocks");
    assert!(
        stamps.contains_key("amount") && !stamps.contains_key("cents"),
        "{row}"
    );
    assert!(stamps["amount"].to_string().contains("10:00:01"), "{row}");

    // A value the serializer cannot decode is refused, nothing written.
    let bad = a
        .push(json!([change(
            "p3",
            "price",
            "cake",
            "insert",
            json!({"id": "cake", "amount": "1.5"}),
            AT,
            "d"
        ),]))
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (422, "SYNC:SCHEMA_VIOLATION"),
        "{:?}",
        bad.body
    );
    assert!(
        bad.body["meta"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("12.50"),
        "{:?}",
        bad.body
    );
    assert_eq!(a.pull_all().await.0.len(), 2);

    // The application writes the stored form; clients read the wire form.
    sync.write(&Ctx::new("admin", "acme"))
        .update("price", "tea", &json!({"cents": 99}))
        .await
        .expect("app write");
    let live = common::ws_next(&mut ws, 10).await.expect("live");
    let last = live["changes"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["payload"], json!({"amount": "0.99"}), "{live}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_normalize_off_payloads_pass_as_stored() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (sync, server) = server(&db, false).await;
    let a = server.client("ann", "acme");
    let r = a
        .push(json!([change(
            "p1",
            "price",
            "tea",
            "insert",
            json!({"id": "tea", "cents": 1250}),
            AT,
            "d"
        )]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (pulled, _) = a.pull_all().await;
    assert_eq!(pulled[0]["payload"], json!({"id": "tea", "cents": 1250}));
    let stored = sync
        .get(&Ctx::new("ann", "acme"), "price", "tea")
        .await
        .expect("get");
    assert_eq!(stored, Some(json!({"id": "tea", "cents": 1250})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_past_the_current_version_is_refused_at_build() {
    let db = TestDb::new(Backend::Sqlite).await;
    let err = common::builder(&db.db)
        .model_with(
            "todo",
            ModelOptions::default().version(2).upgrade(2, |_, f| Ok(f)),
        )
        .build()
        .expect_err("upgrade from the current version");
    assert!(
        err.to_string().contains("past the current version"),
        "{err}"
    );
}
