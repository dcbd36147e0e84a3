//! The engine under test in its own process, and the load client's HTTP
//! and WebSocket plumbing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::serve::ListenerExt;
use better_sync::auth::Jwt;
use better_sync::sea_orm::DatabaseConnection;
use better_sync::shape::{Lookup, ParamType, Shape, field, param, user_id};
use better_sync::{BetterSync, Limits, SeaOrmStorage};
use better_sync_tower::BetterSyncLayer;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use migration::{Migrator, MigratorTrait};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::{BoxError, Http, SECRET};

/// The engine every server half mounts.
async fn engine(url: &str) -> Result<BetterSync, BoxError> {
    let db = SeaOrmStorage::connect(url).await?;
    let limits = Limits {
        max_body_bytes: 4 << 20,
        ..Limits::default()
    };
    Ok(BetterSync::builder()
        .storage(storage(db))
        .auth(Jwt::hs256(SECRET))
        .models(["todo", "member"])
        // S2 and S3: a project's todos, and the todos of the caller's projects.
        .shape(
            Shape::new("project_todos", "todo")
                .param("project", ParamType::String)
                .filter(field("project_id").eq(param("project"))),
        )
        .shape(Shape::new("member_todos", "todo").filter(
            field("project_id").in_lookup(
                Lookup::new("member", "project_id").filter(field("user_id").eq(user_id())),
            ),
        ))
        .limits(limits)
        .build()?)
}

/// The server half under actix-web (`--serve-actix URL`), for B4's
/// comparison of the adapters: actix's own runtime, two workers.
pub(crate) fn serve_actix(url: String) -> Result<(), BoxError> {
    let sync = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(engine(&url))?;
    actix_web::rt::System::new().block_on(async move {
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().service(better_sync_actix::sync_scope(sync.clone()))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
        println!("LISTENING {}", server.addrs()[0]);
        server.run().await?;
        Ok(())
    })
}

/// The server half: the engine behind axum, as the examples mount it.
pub(crate) async fn serve(url: String) -> Result<(), BoxError> {
    let sync = engine(&url).await?;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(BetterSyncLayer::new(sync));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    // Small frames must not wait for the peer's delayed ACK (Nagle).
    // `BS_BENCH_NAGLE=1` leaves Nagle on, to show what that costs.
    let nodelay = std::env::var_os("BS_BENCH_NAGLE").is_none();
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(nodelay);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start(url: &str) -> Result<Self, BoxError> {
        Self::start_as("--serve", url)
    }

    /// The engine under actix-web instead of axum.
    pub(crate) fn start_actix(url: &str) -> Result<Self, BoxError> {
        Self::start_as("--serve-actix", url)
    }

    fn start_as(mode: &str, url: &str) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([mode, url])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().ok_or("server exited")??;
            if let Some(a) = line.strip_prefix("LISTENING ") {
                break a.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, addr })
    }

    /// Resident set size of the server process, in bytes.
    pub(crate) fn rss(&self) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .ok_or("no VmRSS")?;
        Ok(kb * 1024)
    }

    /// CPU time the server process has used (user and system, all threads).
    /// Less noisy than throughput on a shared machine: what a phase costs
    /// the server, whatever else ran meanwhile.
    pub(crate) fn cpu(&self) -> Result<Duration, BoxError> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // After the command name (which may hold spaces) come state, ppid,
        // ...: utime and stime are fields 14 and 15, in USER_HZ (100/s).
        let rest = stat.rsplit_once(')').ok_or("odd /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64, BoxError> {
            Ok(fields.get(i).ok_or("short /proc stat")?.parse()?)
        };
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The storage over `db` as every phase makes it: SQLite's hot statements
/// on the storage's own connections, or through the SeaORM pool when
/// `BENCH_SQLITE_POOL=1` is set (the path before them, for old-and-new
/// runs from one build; server children inherit the variable).
pub(crate) fn storage(db: DatabaseConnection) -> SeaOrmStorage {
    let pool_only = std::env::var_os("BENCH_SQLITE_POOL").is_some_and(|v| v == "1");
    SeaOrmStorage::new(db).sqlite_direct(!pool_only)
}

pub(crate) async fn migrated(url: &str) -> Result<DatabaseConnection, BoxError> {
    let db = SeaOrmStorage::connect(url).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

pub(crate) fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

pub(crate) async fn post(
    http: &Http,
    url: &str,
    token: &str,
    body: String,
) -> Result<Value, BoxError> {
    let req = hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let res = http.request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)).into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

pub(crate) async fn get<T: serde::de::DeserializeOwned>(
    http: &Http,
    url: &str,
    token: &str,
) -> Result<T, BoxError> {
    let req = hyper::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())?;
    let res = http.request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)).into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

pub(crate) fn change(op_id: &str, pk: &str, payload: Value) -> Value {
    json!({"op_id": op_id, "model": "todo", "pk": pk, "op": "insert", "payload": payload,
           "updated_at": "2026-01-01T00:00:00.000Z", "actor": "bench"})
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn ws_open(addr: &str, token: &str) -> Result<Ws, BoxError> {
    // A small read buffer: tungstenite zeroes it on every read, which at
    // the default 128 KiB made the load client the bottleneck of B3.
    let config = WebSocketConfig::default().read_buffer_size(8 << 10);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{addr}/api/sync/ws?access_token={token}"),
        Some(config),
        true,
    )
    .await?;
    Ok(ws)
}

/// Subscribe and wait for `synced`.
pub(crate) async fn ws_subscribe(ws: &mut Ws) -> Result<(), BoxError> {
    ws.send(Message::Text(
        json!({"type": "subscribe"}).to_string().into(),
    ))
    .await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m?
            && serde_json::from_str::<Value>(&t)?["type"] == "synced"
        {
            return Ok(());
        }
    }
    Err("closed before synced".into())
}
