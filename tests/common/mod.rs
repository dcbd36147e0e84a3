//! Shared setup of the integration tests: a fresh database per test on the
//! chosen backend, a real server on 127.0.0.1, and an HTTP client.
//!
//! Service URLs come from `BS_TEST_POSTGRES_URL` and `BS_TEST_MYSQL_URL`
//! (defaults: the local services); every test creates its own database.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use better_sync::auth::{Jwt, dev_token};
use better_sync::sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
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

/// A real axum server on 127.0.0.1 with a non-sync route beside the sync routes.
pub struct TestServer {
    pub addr: SocketAddr,
    pub sync: BetterSync,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(sync: BetterSync) -> Self {
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
            http: reqwest::Client::new(),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
        self.task.abort();
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
