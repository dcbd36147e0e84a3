//! Setup shared by the example servers: database, migrations, JWT secret.
//!
//! Environment:
//! - `DATABASE_URL`: SQLite, Postgres or MySQL/MariaDB URL
//!   (default `sqlite://better-sync.db?mode=rwc`, a file in the current directory);
//! - `BIND`: listen address (default `127.0.0.1:3000`);
//! - `JWT_SECRET`: HS256 secret; when missing, a development secret is kept
//!   in a file beside the SQLite database (`<file>.dev-secret`, made on
//!   first start) so that tokens stay valid across restarts, and a ready
//!   development token is printed;
//! - `JWT_LEEWAY_SECS`: how long after its `exp` a token is still accepted
//!   (default 30 s, `Jwt`'s).

#![allow(dead_code)]

use better_sync::auth::Jwt;
use better_sync::sea_orm::DatabaseConnection;
use better_sync::shape::{Lookup, ParamType, Shape, field, param, user_id};
use better_sync::testing::dev_token;
use better_sync::{BetterSync, BetterSyncBuilder, Cors, SeaOrmStorage};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use migration::{Migrator, MigratorTrait};

/// What an example server needs.
pub(crate) struct Setup {
    pub(crate) sync: BetterSync,
    /// The engine's metrics in Prometheus text, for `GET /metrics`.
    pub(crate) metrics: PrometheusHandle,
    pub(crate) bind: String,
    /// The HS256 secret tokens are checked with.
    pub(crate) secret: String,
    /// The database, for the app's own queries.
    pub(crate) db: DatabaseConnection,
}

/// Where the development secret is kept: beside a SQLite database file,
/// else in the current directory.
fn secret_file(url: &str) -> std::path::PathBuf {
    let file = url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .filter(|f| !f.is_empty() && *f != ":memory:");
    match file {
        Some(f) => std::path::PathBuf::from(format!("{f}.dev-secret")),
        None => std::path::PathBuf::from(".better-sync.dev-secret"),
    }
}

/// The development secret in `path`, made there on first use, so that a
/// restart keeps every token it signed valid (tokens printed, tokens in
/// open pages). Only the owner can read the file.
fn dev_secret(path: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if s.len() >= 32 {
            return Ok(s);
        }
    }
    let s = random_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options.open(path)?.write_all(s.as_bytes())?;
    Ok(s)
}

/// A dev secret: 32 random bytes from the operating system, as hex.
fn random_secret() -> String {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("the operating system's random generator");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connect, migrate (a development convenience: production runs the
/// `migration` CLI), and build the engine.
pub(crate) async fn setup(name: &str) -> Result<Setup, Box<dyn std::error::Error>> {
    setup_with(name, async |_db, b| b).await
}

/// [`setup`], with the app's own configuration of the engine (after the
/// common one; it may also create the app's tables in `db`).
pub(crate) async fn setup_with<F>(
    name: &str,
    configure: F,
) -> Result<Setup, Box<dyn std::error::Error>>
where
    F: AsyncFnOnce(&DatabaseConnection, BetterSyncBuilder) -> BetterSyncBuilder,
{
    // The engine's warnings and errors, with the spans they happened in
    // (`RUST_LOG=better_sync=debug` and the like for more).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://better-sync.db?mode=rwc".into());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let db = SeaOrmStorage::connect(&url).await?;
    println!("[{name}] running migrations on {url} (examples only; the library never migrates)");
    Migrator::up(&db, None).await?;

    let secret = match std::env::var("JWT_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ => {
            let path = secret_file(&url);
            let s = dev_secret(&path)?;
            println!(
                "[{name}] JWT_SECRET not set; using the development secret kept in {}",
                path.display()
            );
            s
        }
    };
    let token = dev_token(secret.as_bytes(), "dev-user", "dev-tenant", 24 * 3600);
    println!("[{name}] dev token (user dev-user, tenant dev-tenant, 24 h):\n{token}");
    println!("[{name}] try: curl -H 'authorization: Bearer {token}' http://{bind}/api/sync/pull");

    // Before the engine is built, so that it describes its metrics to it.
    let metrics = install_metrics()?;
    let mut jwt = Jwt::hs256(secret.as_bytes());
    if let Some(secs) = std::env::var("JWT_LEEWAY_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        jwt = jwt.leeway(std::time::Duration::from_secs(secs));
    }
    let builder = BetterSync::builder()
        .base_path("/api/sync")
        .storage(SeaOrmStorage::new(db.clone()))
        .auth(jwt)
        // Version 1 of the todo: when its shape changes, bump the version and
        // register an `upgrade` from 1 so that installed apps keep syncing.
        .model_with("todo", better_sync::ModelOptions::default().version(1))
        // Lists shared with members: a client holding these shapes sees the
        // lists its user is a member of, their members and their todos
        // (PROTOCOL.md section 16).
        .model("list")
        .model("member")
        .shape(Shape::new("my_lists", "list").filter(field("id").in_lookup(lists_of_the_user())))
        .shape(
            Shape::new("list_members", "member")
                .filter(field("list_id").in_lookup(lists_of_the_user())),
        )
        .shape(
            Shape::new("my_todos", "todo").filter(field("list_id").in_lookup(lists_of_the_user())),
        )
        .shape(
            Shape::new("list_todos", "todo")
                .param("list", ParamType::String)
                .filter(
                    field("list_id")
                        .eq(param("list"))
                        .and(field("list_id").in_lookup(lists_of_the_user())),
                ),
        )
        .cors(Cors::any_origin())
        // A development tool, off unless asked for: the examples are for
        // development.
        .inspector("admin");
    let sync = configure(&db, builder).await.build()?;
    let admin = better_sync::testing::sign_hs256(
        secret.as_bytes(),
        &serde_json::json!({
            "sub": "dev-admin", "tenant": "dev-tenant", "roles": ["admin"],
            "exp": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() + 24 * 3600)
                .unwrap_or(0),
        }),
    );
    println!(
        "[{name}] inspector: http://{bind}/api/sync/inspector (token with the admin role, tenant dev-tenant):\n{admin}"
    );
    Ok(Setup {
        sync,
        metrics,
        bind,
        secret,
        db,
    })
}

/// The lists the caller is a member of: the `list_id` of the `member` rows
/// with its user id.
fn lists_of_the_user() -> Lookup {
    Lookup::new("member", "list_id").filter(field("user_id").eq(user_id()))
}

/// The Prometheus recorder the engine's metrics go to (the library forces
/// no exporter: this is the app's choice), with histogram buckets for the
/// durations and the group sizes.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let seconds = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let sizes = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
    ];
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
        .set_buckets_for_metric(Matcher::Suffix("_changes".into()), &sizes)?
        .install_recorder()?)
}

/// Wait for SIGTERM (a rolling deploy) or Ctrl-C, then shut the engine down
/// gracefully: pushes in flight commit, WebSocket clients are told to
/// reconnect elsewhere (close 1012), long-polls answer. The caller then
/// stops its HTTP server.
pub(crate) async fn drain_on_signal(name: &str, sync: BetterSync) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    println!("[{name}] shutting down: draining");
    let report = sync.shutdown(std::time::Duration::from_secs(10)).await;
    println!("[{name}] drained: {report:?}");
}
