//! A real better-sync server for the client tests: an axum server in a child
//! process (this test binary re-executed), on a SQLite file, so that a test
//! can kill it and start it again on the same port and data.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use better_sync_client::{Auth, Remote};
use serde_json::Value;

pub const SECRET: &[u8] = b"client-tests-secret-0123456789abcdef";

/// Define the `child_server` test: the server half, ignored unless this test
/// binary is re-executed by [`Server::start`].
#[macro_export]
macro_rules! child_server_main {
    () => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "the server half of the client tests; runs only as a child process"]
        async fn child_server() {
            if let Ok(url) = std::env::var("BS_CHILD_DATABASE_URL") {
                $crate::support::serve(&url).await;
            }
        }
    };
}

/// The child process: migrate, build the engine, serve until killed.
pub async fn serve(url: &str) {
    use axum::{Router, extract::Query, routing::post};
    use better_sync::{BetterSync, SeaOrmStorage, auth::Jwt};
    use migration::{Migrator, MigratorTrait};
    use std::sync::Arc;

    let addr = std::env::var("BS_CHILD_ADDR").expect("BS_CHILD_ADDR");
    let db = SeaOrmStorage::connect(url).await.expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    let sync = BetterSync::builder()
        .storage(SeaOrmStorage::new(db))
        // No leeway: a token ends at its `exp` (the expiry test waits for it).
        .auth(Jwt::hs256(SECRET).leeway(Duration::ZERO))
        .model("todo")
        // `note` is at version 2; version 1 called `body` `text`.
        .model_with(
            "note",
            better_sync::ModelOptions::default()
                .version(2)
                .upgrade(1, |_op, mut fields| {
                    if let Some(text) = fields.remove("text") {
                        fields.insert("body".into(), text);
                    }
                    Ok(fields)
                }),
        )
        // Tasks in projects, members of projects: a project's tasks are a
        // shape for its members only; `my_tasks` is every project of the user.
        .model("task")
        .model("member")
        .shape(
            better_sync::shape::Shape::new("project_tasks", "task")
                .param("project", better_sync::shape::ParamType::String)
                .filter(
                    better_sync::shape::field("project_id")
                        .eq(better_sync::shape::param("project"))
                        .and(better_sync::shape::field("project_id").in_lookup(member_of())),
                ),
        )
        .shape(
            better_sync::shape::Shape::new("my_tasks", "task")
                .filter(better_sync::shape::field("project_id").in_lookup(member_of())),
        )
        .heartbeat(Duration::from_secs(2))
        // A change whose payload says `"forbidden": true` is refused (403 with its index).
        .can_write(|_ctx, _model, change| {
            change.payload.get("forbidden") != Some(&Value::Bool(true))
        })
        .build()
        .expect("build");
    let draining = sync.clone();
    let compacting = sync.clone();
    // `POST /__fail?status=N[&route=R][&client=C]` makes sync requests answer
    // N (0 = off): all of them, or only those to route R (`push`, `ws`, ...),
    // or only those of the client sending `x-client: C`. A load balancer in
    // front of a sick server, or a proxy that refuses WebSocket upgrades.
    #[derive(Default, Clone)]
    struct Failure {
        status: u16,
        route: Option<String>,
        client: Option<String>,
    }
    let fail = Arc::new(std::sync::Mutex::new(Failure::default()));
    let set = fail.clone();
    let app = Router::new()
        // `POST /__compact?keep=N`: compact every tenant's log down to its
        // newest N entries, purging tombstones under the horizon (what an
        // operator's retention does, at once).
        .route(
            "/__compact",
            post(move |Query(q): Query<BTreeMap<String, String>>| {
                let sync = compacting.clone();
                async move {
                    let keep = q.get("keep").and_then(|s| s.parse().ok()).unwrap_or(1);
                    let policy = better_sync::RetentionPolicy::default()
                        .max_entries(keep)
                        .tombstones(Duration::ZERO);
                    let report = sync.compact_with(&policy).await.expect("compact");
                    report.log_deleted.to_string()
                }
            }),
        )
        .route(
            "/__fail",
            post(move |Query(q): Query<BTreeMap<String, String>>| {
                let set = set.clone();
                async move {
                    *set.lock().expect("fail") = Failure {
                        status: q.get("status").and_then(|s| s.parse().ok()).unwrap_or(0),
                        route: q.get("route").cloned(),
                        client: q.get("client").cloned(),
                    };
                    "ok"
                }
            }),
        )
        .layer(better_sync_tower::BetterSyncLayer::new(sync))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let f = fail.lock().expect("fail").clone();
                let path = req.uri().path().to_owned();
                let client = req
                    .headers()
                    .get("x-client")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                async move {
                    let hit = f.status != 0
                        && path.starts_with("/api/sync/")
                        && f.route.as_ref().is_none_or(|r| path.ends_with(&format!("/{r}")))
                        && f.client.as_ref().is_none_or(|c| client.as_ref() == Some(c));
                    if hit {
                        let mut response = axum::response::Response::builder().status(f.status);
                        let body = match f.status {
                            503 => r#"{"error":{"code":"SYNC:UNAVAILABLE","message":"injected","helpUrl":"x"}}"#,
                            429 => {
                                response = response.header("retry-after", "2");
                                r#"{"error":{"code":"SYNC:RATE_LIMITED","message":"injected","helpUrl":"x"},"meta":{"retryAfterMs":1500}}"#
                            }
                            _ => "<html>bad gateway</html>",
                        };
                        return response
                            .body(axum::body::Body::from(body))
                            .expect("response");
                    }
                    next.run(req).await
                }
            },
        ));
    // The port may still be held for a moment by the previous process.
    let deadline = Instant::now() + Duration::from_secs(20);
    let listener = loop {
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("bind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    println!("LISTENING {addr}");
    // SIGTERM drains the engine (a rolling deploy), then the server stops.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            term.recv().await;
            let report = draining.shutdown(Duration::from_secs(10)).await;
            assert!(report.drained(), "{report:?}");
        })
        .await
        .expect("serve");
}

/// The projects the caller is a member of (`member` rows with its user id).
fn member_of() -> better_sync::shape::Lookup {
    better_sync::shape::Lookup::new("member", "project_id")
        .filter(better_sync::shape::field("user_id").eq(better_sync::shape::user_id()))
}

/// A server process on a fixed 127.0.0.1 port and a SQLite file of its own.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    db_url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Server {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().join("server.db");
        let mut server = Self {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            db_url: format!("sqlite://{}?mode=rwc", path.display()),
            _dir: dir,
        };
        server.spawn();
        server
    }

    /// A server process on an existing database (several may share one).
    pub fn start_on(db_url: &str) -> Self {
        let mut server = Self {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            db_url: db_url.to_owned(),
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        server.spawn();
        server
    }

    /// Shut the server down gracefully (SIGTERM, as a rolling deploy does)
    /// and wait for it to exit; whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        sent && child.wait().is_ok_and(|s| s.success())
    }

    fn spawn(&mut self) {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--ignored",
                "--exact",
                "child_server",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BS_CHILD_DATABASE_URL", &self.db_url)
            .env("BS_CHILD_ADDR", &self.addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("server printed its address")
                .expect("line");
            if line.contains("LISTENING ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// Kill the server (SIGKILL: no goodbye to connected clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Start it again on the same port with an empty database (the
    /// server's data was reset).
    pub fn restart_empty(&mut self) {
        self.stop();
        let path = self._dir.path().join(format!("fresh-{}.db", free_port()));
        self.db_url = format!("sqlite://{}?mode=rwc", path.display());
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self, user: &str, tenant: &str) -> String {
        better_sync::testing::dev_token(SECRET, user, tenant, 3600)
    }

    /// Make every sync request answer `status` (0 turns it off).
    pub async fn fail_with(&self, status: u16) {
        self.fail(&format!("status={status}")).await;
    }

    /// Make sync requests matching `query` (`status=N&route=R&client=C`) fail.
    /// Compact every tenant's log to its newest `keep` entries; how many
    /// entries went.
    pub async fn compact(&self, keep: u64) -> u64 {
        reqwest::Client::new()
            .post(format!("http://{}/__compact?keep={keep}", self.addr))
            .send()
            .await
            .expect("compact")
            .text()
            .await
            .expect("body")
            .parse()
            .expect("count")
    }

    pub async fn fail(&self, query: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/__fail?{query}", self.url()))
            .send()
            .await
            .expect("control request");
        assert!(r.status().is_success());
    }

    pub fn remote(&self, user: &str, tenant: &str) -> Remote {
        Remote::new(
            &self.url(),
            "/api/sync",
            Auth::bearer(self.token(user, tenant)),
        )
        .expect("remote")
    }

    /// The server's live rows of `model` for `tenant`, read by snapshot.
    pub async fn rows(&self, tenant: &str, model: &str) -> BTreeMap<String, Value> {
        let remote = self.remote("inspector", tenant);
        let mut rows = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = remote
                .snapshot(model, after.as_deref(), None)
                .await
                .expect("snapshot");
            for row in page.rows {
                if !row.deleted {
                    rows.insert(row.id, row.value);
                }
            }
            match (page.has_more, page.next_after) {
                (true, Some(next)) => after = Some(next),
                _ => return rows,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Poll `check` until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy on 127.0.0.1 whose upstream can be switched, as a load
/// balancer moves traffic off an instance that drains.
pub struct Proxy {
    pub addr: String,
    upstream: std::sync::Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(upstream.to_owned()));
        let target = upstream.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = target.lock().expect("upstream").clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            addr,
            upstream,
            task,
        }
    }

    /// New connections go to `upstream` from now on.
    pub fn switch_to(&self, upstream: &str) {
        *self.upstream.lock().expect("upstream") = upstream.to_owned();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Postgres database of its own for a test (`BS_TEST_POSTGRES_URL`,
/// default the local service), and its URL.
pub async fn postgres_database() -> String {
    database_of_its_own(
        "BS_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
    .await
}

/// A MariaDB (or MySQL) database of its own for a test
/// (`BS_TEST_MYSQL_URL`, default the local service), and its URL.
pub async fn mariadb_database() -> String {
    database_of_its_own("BS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test").await
}

/// A fresh database on the server of `$var` (else `default`), and its URL.
async fn database_of_its_own(var: &str, default: &str) -> String {
    use sea_orm::ConnectionTrait;
    let admin_url = std::env::var(var).unwrap_or_else(|_| default.into());
    let name = format!(
        "bs_client_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let admin = sea_orm::Database::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect to {admin_url}: {e}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}
