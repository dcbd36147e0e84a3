//! Shared setup of the integration tests: a fresh database per test on the
//! chosen backend, a real server on 127.0.0.1, and an HTTP client.
//!
//! Service URLs come from `BS_TEST_POSTGRES_URL` and `BS_TEST_MYSQL_URL`
//! (defaults: the local services); every test creates its own database.

#![allow(dead_code, unreachable_pub)]

pub mod json_corpus;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use better_sync::auth::Jwt;
use better_sync::sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use better_sync::testing::dev_token;
use better_sync::{BetterSync, BetterSyncBuilder, SeaOrmStorage};
use better_sync_tower::BetterSyncLayer;
use migration::{Migrator, MigratorTrait};
use serde_json::{Value, json};

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

pub fn postgres_url() -> String {
    std::env::var("BS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn mysql_url() -> String {
    std::env::var("BS_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn unique_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "bs_t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn replace_db(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

/// A migrated database of its own, dropped at the end of the test.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub db: DatabaseConnection,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let (url, admin, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("sync.db").display());
                (url, None, Some(dir))
            }
            Backend::Postgres | Backend::MySql => {
                let admin_url = if backend == Backend::Postgres {
                    postgres_url()
                } else {
                    mysql_url()
                };
                let name = unique_name();
                let admin = better_sync::sea_orm::Database::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("connect {admin_url}: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create database");
                admin.close().await.ok();
                (replace_db(&admin_url, &name), Some((admin_url, name)), None)
            }
        };
        let db = SeaOrmStorage::connect(&url).await.expect("connect");
        Migrator::up(&db, None).await.expect("migrate");
        Self {
            backend,
            url,
            db,
            admin,
            _dir: dir,
        }
    }

    /// Rows in op_log and snapshots, and the log head.
    pub async fn counts(&self) -> (i64, i64, i64) {
        let one = |sql: &str| {
            let stmt = Statement::from_string(self.db.get_database_backend(), sql.to_owned());
            let db = self.db.clone();
            async move {
                let row = db.query_one_raw(stmt).await.expect("count").expect("row");
                row.try_get_by_index::<i64>(0).expect("int")
            }
        };
        (
            one("SELECT COUNT(*) FROM op_log").await,
            one("SELECT COUNT(*) FROM snapshots").await,
            one("SELECT last_seq FROM sync_counter WHERE id = 1").await,
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.admin.take() else {
            return;
        };
        let backend = self.backend;
        // Drop is synchronous; clean up on a runtime of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let admin = better_sync::sea_orm::Database::connect(&admin_url)
                    .await
                    .ok()?;
                let sql = if backend == Backend::Postgres {
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                } else {
                    format!("DROP DATABASE IF EXISTS {name}")
                };
                admin.execute_unprepared(&sql).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// The engine configuration the tests use: HS256 JWTs, two models.
pub fn builder(db: &DatabaseConnection) -> BetterSyncBuilder {
    BetterSync::builder()
        .storage(SeaOrmStorage::new(db.clone()))
        .auth(Jwt::hs256(SECRET))
        .models(["todo", "note"])
}

/// Which framework mounts the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Axum,
    Hyper,
    Actix,
}

enum Running {
    Task(tokio::task::JoinHandle<()>),
    Actix(actix_web::dev::ServerHandle),
}

/// A real server on 127.0.0.1 with a non-sync route (`/` answers "home")
/// beside the sync routes.
pub struct TestServer {
    pub addr: SocketAddr,
    pub sync: BetterSync,
    pub http: reqwest::Client,
    running: Running,
}

impl TestServer {
    /// An axum server.
    pub async fn start(sync: BetterSync) -> Self {
        Self::start_with(Adapter::Axum, sync).await
    }

    pub async fn start_with(adapter: Adapter, sync: BetterSync) -> Self {
        let http = reqwest::Client::new();
        match adapter {
            Adapter::Axum => {
                use axum::{Router, routing::get};
                let app = Router::new()
                    .route("/", get(|| async { "home" }))
                    .layer(BetterSyncLayer::new(sync.clone()));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                let task = tokio::spawn(async move {
                    axum::serve(listener, app).await.expect("serve");
                });
                Self {
                    addr,
                    sync,
                    http,
                    running: Running::Task(task),
                }
            }
            Adapter::Hyper => {
                use hyper_util::rt::TokioIo;
                use hyper_util::service::TowerToHyperService;
                use tower::Layer;
                let app =
                    tower::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let text = if req.uri().path() == "/" {
                            "home"
                        } else {
                            "not found"
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes())),
                        ))
                    });
                let svc = BetterSyncLayer::new(sync.clone()).layer(app);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                let task = tokio::spawn(async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            return;
                        };
                        let svc = TowerToHyperService::new(svc.clone());
                        tokio::spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                });
                Self {
                    addr,
                    sync,
                    http,
                    running: Running::Task(task),
                }
            }
            Adapter::Actix => {
                let engine = sync.clone();
                let (tx, rx) = std::sync::mpsc::channel();
                // actix runs its own single-threaded runtimes, on a thread of its own.
                std::thread::spawn(move || {
                    actix_web::rt::System::new().block_on(async move {
                        let server = actix_web::HttpServer::new(move || {
                            actix_web::App::new()
                                .route("/", actix_web::web::get().to(|| async { "home" }))
                                .service(better_sync_actix::sync_scope(engine.clone()))
                        })
                        .workers(2)
                        .disable_signals()
                        .bind(("127.0.0.1", 0))
                        .expect("bind");
                        let addr = server.addrs()[0];
                        let server = server.run();
                        tx.send((addr, server.handle())).expect("send");
                        let _ = server.await;
                    });
                });
                let (addr, handle) = rx.recv().expect("actix started");
                Self {
                    addr,
                    sync,
                    http,
                    running: Running::Actix(handle),
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A public JSON document under the base path (`sync.json`, `openapi.json`).
    pub async fn public_json(&self, route: &str) -> Value {
        self.http
            .get(self.url(&format!("/api/sync{route}")))
            .send()
            .await
            .expect(route)
            .json()
            .await
            .expect("json")
    }

    pub fn client(&self, user: &str, tenant: &str) -> Client {
        Client {
            http: self.http.clone(),
            base: self.url("/api/sync"),
            token: dev_token(SECRET, user, tenant, 3600),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Task(task) => task.abort(),
            Running::Actix(handle) => {
                // Stopping is a future; the server's own thread finishes it.
                drop(handle.stop(false));
            }
        }
    }
}

/// A WebSocket client connected to `B/ws`.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect to `B/ws` with a bearer token in the `Authorization` header.
pub async fn ws_connect(addr: SocketAddr, token: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/api/sync/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (ws, res) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    assert_eq!(res.status(), 101);
    ws
}

/// Send a JSON message.
pub async fn ws_send(ws: &mut Ws, v: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .expect("ws send");
}

/// The next JSON message (pings are answered by the library), or None when
/// the connection ends or nothing comes within `secs`.
pub async fn ws_next(ws: &mut Ws, secs: u64) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => return Some(serde_json::from_str(&t).expect("json message")),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Subscribe and collect changes until `synced`: the caught-up changes and the cursor.
pub async fn ws_subscribe(ws: &mut Ws, cursor: Option<&str>) -> (Vec<Value>, String) {
    let mut msg = json!({"type": "subscribe"});
    if let Some(c) = cursor {
        msg["cursor"] = json!(c);
    }
    ws_send(ws, msg).await;
    let mut changes = Vec::new();
    loop {
        let m = ws_next(ws, 30).await.expect("catch-up message");
        match m["type"].as_str() {
            Some("changes") => {
                changes.extend(m["changes"].as_array().expect("changes").iter().cloned())
            }
            Some("synced") => return (changes, m["cursor"].as_str().expect("cursor").to_owned()),
            other => panic!("unexpected message during catch-up: {other:?} {m}"),
        }
    }
}

/// A protocol client for one user of one tenant.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// A response: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Client {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let res = req.bearer_auth(&self.token).send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn push_raw(&self, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.http
                .post(format!("{}/push", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn push(&self, changes: Value) -> Answer {
        self.push_raw(json!({ "client_id": "test", "changes": changes }).to_string())
            .await
    }

    pub async fn pull(&self, query: &str) -> Answer {
        self.send(self.http.get(format!("{}/pull{query}", self.base)))
            .await
    }

    pub async fn snapshot(&self, query: &str) -> Answer {
        self.send(self.http.get(format!("{}/snapshot{query}", self.base)))
            .await
    }

    /// Every change from the start, following has_more.
    pub async fn pull_all(&self) -> (Vec<Value>, String) {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("?cursor={c}&limit=50"),
                None => "?limit=50".into(),
            };
            let a = self.pull(&q).await;
            assert_eq!(a.status, 200, "{:?}", a.body);
            out.extend(
                a.body["changes"]
                    .as_array()
                    .expect("changes")
                    .iter()
                    .cloned(),
            );
            cursor = Some(a.body["cursor"].as_str().expect("cursor").to_owned());
            if !a.body["has_more"].as_bool().expect("has_more") {
                return (out, cursor.unwrap_or_default());
            }
        }
    }
}

/// A change as JSON.
pub fn change(
    op_id: &str,
    model: &str,
    pk: &str,
    op: &str,
    payload: Value,
    at: &str,
    actor: &str,
) -> Value {
    json!({ "op_id": op_id, "model": model, "pk": pk, "op": op, "payload": payload, "updated_at": at, "actor": actor })
}

/// Build one test per backend from an async fn taking a [`Backend`].
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Postgres).await } )*
        }
        mod mysql {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::MySql).await } )*
        }
    };
}

/// Define the `child_server` test: the server half of multi-process tests,
/// ignored unless this test binary is re-executed by [`spawn_child_server`].
#[macro_export]
macro_rules! child_server_main {
    () => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "the server half of multi-process tests; runs only as a child process"]
        async fn child_server() {
            let Ok(url) = std::env::var("BS_CHILD_DATABASE_URL") else {
                return;
            };
            let db = better_sync::SeaOrmStorage::connect(&url)
                .await
                .expect("connect");
            // The adapter, and the WebSocket limits of the hostile-peer
            // tests, when the parent asks for them.
            let adapter = match std::env::var("BS_CHILD_ADAPTER").as_deref() {
                Ok("hyper") => $crate::common::Adapter::Hyper,
                Ok("actix") => $crate::common::Adapter::Actix,
                _ => $crate::common::Adapter::Axum,
            };
            let mut builder = $crate::common::builder(&db);
            if std::env::var_os("BS_CHILD_SMALL_PAGES").is_some() {
                builder = builder.limits(better_sync::Limits {
                    max_pull_bytes: 256 << 10,
                    ..better_sync::Limits::default()
                });
            }
            let server =
                $crate::common::TestServer::start_with(adapter, builder.build().expect("build"))
                    .await;
            println!("LISTENING {}", server.addr);
            std::future::pending::<()>().await;
        }
    };
}

/// Start a server in a separate process on `url`: this test binary
/// re-executed to run its `child_server` test. Returns the process and its address.
pub fn spawn_child_server(url: &str) -> (std::process::Child, String) {
    spawn_child_server_with(url, &[])
}

/// [`spawn_child_server`] with more environment for the child
/// (`BS_CHILD_ADAPTER`: axum, hyper or actix; `BS_CHILD_SMALL_PAGES`).
pub fn spawn_child_server_with(url: &str, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .envs(env.iter().copied())
        .args([
            "--ignored",
            "--exact",
            "child_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BS_CHILD_DATABASE_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server printed its address")
            .expect("line");
        // libtest may print "test child_server ... " on the same line.
        if let Some((_, a)) = line.split_once("LISTENING ") {
            break a.trim().to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}
