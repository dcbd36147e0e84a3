//! Setup shared by the example servers: database, migrations, JWT secret.
//!
//! Environment:
//! - `DATABASE_URL`: SQLite, Postgres or MySQL/MariaDB URL
//!   (default `sqlite://better-sync.db?mode=rwc`, a file in the current directory);
//! - `BIND`: listen address (default `127.0.0.1:3000`);
//! - `JWT_SECRET`: HS256 secret; when missing a random one is made and a
//!   ready development token is printed.

#![allow(dead_code)]

use better_sync::auth::Jwt;
use better_sync::testing::dev_token;
use better_sync::{BetterSync, Cors, SeaOrmStorage};
use migration::{Migrator, MigratorTrait};

/// What an example server needs.
pub(crate) struct Setup {
    pub(crate) sync: BetterSync,
    pub(crate) bind: String,
    /// The HS256 secret tokens are checked with.
    pub(crate) secret: String,
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
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://better-sync.db?mode=rwc".into());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let db = SeaOrmStorage::connect(&url).await?;
    println!("[{name}] running migrations on {url} (examples only; the library never migrates)");
    Migrator::up(&db, None).await?;

    let secret = match std::env::var("JWT_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ => {
            let s = random_secret();
            println!("[{name}] JWT_SECRET not set; using a random one: {s}");
            s
        }
    };
    let token = dev_token(secret.as_bytes(), "dev-user", "dev-tenant", 24 * 3600);
    println!("[{name}] dev token (user dev-user, tenant dev-tenant, 24 h):\n{token}");
    println!("[{name}] try: curl -H 'authorization: Bearer {token}' http://{bind}/api/sync/pull");

    let jwt = Jwt::hs256(secret.as_bytes());
    let sync = BetterSync::builder()
        .base_path("/api/sync")
        .storage(SeaOrmStorage::new(db))
        .auth(jwt)
        .models(["todo"])
        .cors(Cors::any_origin())
        .build()?;
    Ok(Setup { sync, bind, secret })
}
