//! The todo app: a local-first web page syncing between tabs and browsers.
//!
//! `cargo run --example todo`, then open http://127.0.0.1:3000 in two tabs.
//! The page uses the browser client served by the engine at
//! `/api/sync/client.js`, stores todos in IndexedDB (it works offline) and
//! syncs over WebSocket, falling back to HTTP long-poll.
//!
//! Every visitor is a user of the demo tenant, `dev-user` unless the page
//! is opened as `/?user=alice`: `/config.json?user=alice` hands out a token
//! for that user signed with the server's secret. That is a development
//! convenience only; a real app issues tokens from its own login.
//!
//! Todos are grouped in lists shared with members: the page holds shapes
//! only (`my_lists`, `list_members`, `my_todos`, defined in
//! `examples/support`), so a user sees the lists they are a member of and
//! nothing else, and a list leaves their screen live when they are removed
//! from it.
//!
//! The todo is a typed model (`todos::Model`, checked on every push) and is
//! materialized into the app's own `todos` table, which `GET /stats` reads
//! with plain SeaORM.

#[path = "../support/mod.rs"]
mod support;
mod todos;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router, routing::get};
use better_sync::sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, Schema,
};
use better_sync::testing::dev_token;
use better_sync::{AuthRequest, BetterSync, Materialize, ModelOptions};
use better_sync_tower::BetterSyncLayer;
use serde_json::json;

const PAGE: &str = include_str!("index.html");
/// The service worker that lets the page load offline.
const SERVICE_WORKER: &str = include_str!("sw.js");

// glibc malloc spends much of a busy server's time on memory freed by
// another thread (the database driver's); see docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setup = support::setup_with("todo", async |db, builder| {
        // The app's own migration of its table (a real app has it in its
        // migration crate, beside better-sync's).
        let create = Schema::new(db.get_database_backend())
            .create_table_from_entity(todos::Entity)
            .if_not_exists()
            .to_owned();
        if let Err(e) = db.execute(&create).await {
            eprintln!("[todo] could not create the todos table: {e}");
        }
        // A table made by an older version of the example lacks the list
        // (a real app adds it in a migration); already there: an error, ignored.
        let _ = db
            .execute_unprepared("ALTER TABLE todos ADD COLUMN list_id TEXT NULL")
            .await;
        builder
            .typed_model_with::<todos::Model>(
                "todo",
                ModelOptions::default().version(1).omit_field("tenant_id"),
            )
            .materialize(
                "todo",
                Materialize::<todos::Entity>::new().tenant_field("tenant_id"),
            )
    })
    .await?;
    let db = setup.db.clone();
    let sync = setup.sync.clone();
    let secret = setup.secret.clone();
    let metrics = setup.metrics.clone();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/sw.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        // Browsers check for a new worker on every load.
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    SERVICE_WORKER,
                )
            }),
        )
        // The engine's metrics in Prometheus text.
        .route("/metrics", get(move || async move { metrics.render() }))
        // The app's own endpoint over its own table.
        .route(
            "/stats",
            get(stats).with_state(Stats {
                sync: sync.clone(),
                db,
            }),
        )
        .route(
            "/config.json",
            get(move |Query(who): Query<Who>| {
                // The tenant of the token printed at start: `curl .../pull` with it
                // shows what the page wrote.
                let user = who.user.unwrap_or_else(|| "dev-user".to_owned());
                let valid = !user.is_empty()
                    && user.len() <= 32
                    && user
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                let token = dev_token(secret.as_bytes(), &user, "dev-tenant", 24 * 3600);
                async move {
                    if !valid {
                        let message = "user: 1 to 32 characters of A-Za-z0-9_-";
                        return (StatusCode::BAD_REQUEST, message).into_response();
                    }
                    let body = json!({ "token": token, "user": user, "basePath": "/api/sync" });
                    Json(body).into_response()
                }
            }),
        )
        .layer(BetterSyncLayer::new(sync.clone()));
    let listener = tokio::net::TcpListener::bind(&setup.bind).await?;
    println!("[todo] open http://{} in two tabs", listener.local_addr()?);
    // Live frames are small: send them without waiting for the peer's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(support::drain_on_signal("todo", sync))
        .await?;
    Ok(())
}

/// `/config.json?user=NAME`: whom the page signs in as.
#[derive(serde::Deserialize)]
struct Who {
    user: Option<String>,
}

#[derive(Clone)]
struct Stats {
    sync: BetterSync,
    db: DatabaseConnection,
}

/// `GET /stats`: open and done todos of the caller's tenant, counted by SQL
/// over the `todos` table (the same token as the sync routes).
async fn stats(State(app): State<Stats>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let ctx = match app
        .sync
        .authorize(AuthRequest {
            method,
            uri,
            headers,
            identity: None,
        })
        .await
    {
        Ok(ctx) => ctx,
        Err(e) => return better_sync::adapter::error_response(&e).map(axum::body::Body::new),
    };
    let counts: Result<Vec<(bool, i64)>, _> = todos::Entity::find()
        .select_only()
        .column(todos::Column::Done)
        .column_as(todos::Column::Id.count(), "n")
        .filter(todos::Column::TenantId.eq(&ctx.tenant_id))
        .group_by(todos::Column::Done)
        .into_tuple()
        .all(&app.db)
        .await;
    match counts {
        Ok(counts) => {
            let count = |done: bool| counts.iter().find(|c| c.0 == done).map_or(0, |c| c.1);
            Json(json!({ "open": count(false), "done": count(true) })).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
