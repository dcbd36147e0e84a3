//! `better-sync-admin`: what an operator runs against a better-sync
//! database, from a shell or cron: compact the log, erase a row or a
//! tenant, reclaim space, report the space used.
//!
//! ```text
//! DATABASE_URL=postgres://app@db/app better-sync-admin compact --keep-for 30d --tombstones 90d
//! better-sync-admin --database-url sqlite://data.db erase --tenant acme --model todo --pk 42
//! better-sync-admin --database-url sqlite://data.db erase-tenant --tenant acme
//! better-sync-admin --database-url sqlite://data.db vacuum
//! ```
//!
//! Every command prints one JSON object (its report) on stdout and exits
//! non-zero on failure. It is safe beside running servers: compaction takes
//! the same lease as theirs, erasure commits through the same log lock.

use std::process::ExitCode;
use std::time::Duration;

use better_sync::sea_orm::{ConnectionTrait, DatabaseBackend};
use better_sync::storage::Storage;
use better_sync::{BetterSync, RetentionPolicy, SeaOrmStorage, SyncError};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Operate a better-sync database.
#[derive(Debug, Parser)]
#[command(name = "better-sync-admin", version)]
struct Cli {
    /// The database (sqlite://, postgres://, mysql://).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Delete log entries beyond the retention and tombstones past their
    /// window; clients with older cursors bootstrap again.
    Compact {
        /// Delete entries older than this (e.g. `30d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        keep_for: Option<Duration>,
        /// Keep at most this many entries per tenant.
        #[arg(long)]
        keep_last: Option<u64>,
        /// Keep tombstones this long after their delete (default 30d).
        #[arg(long, value_parser = humantime::parse_duration)]
        tombstones: Option<Duration>,
        /// Rows deleted per transaction.
        #[arg(long, default_value_t = 1000)]
        chunk: u64,
    },
    /// Erase one row for good (subscribers receive a delete).
    Erase {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The model.
        #[arg(long)]
        model: String,
        /// The row's primary key.
        #[arg(long)]
        pk: String,
    },
    /// Erase every row of a tenant for good; stop its writes first.
    EraseTenant {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Rewrite the database to give all free space back (offline-grade:
    /// SQLite `VACUUM`, which also turns on incremental auto-vacuum for an
    /// older file; Postgres `VACUUM FULL`; MySQL `OPTIMIZE TABLE`).
    Vacuum,
    /// What the sync tables take on disk.
    Space,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The whole chain: the engine's message says what to do, its
            // sources say what the database answered.
            let mut message = format!("better-sync-admin: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                message.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<Value, Box<dyn std::error::Error>> {
    let storage = SeaOrmStorage::open(&cli.database_url).await?;
    let db = storage.connection().clone();
    // The engine without a transport: no request ever reaches it, so it
    // needs no authenticator; this one refuses everyone.
    let sync = BetterSync::builder()
        .storage(storage.clone())
        .authorize(|_req| async { Err(SyncError::unauthorized("admin engine")) })
        .build()?;
    let report = match cli.command {
        Command::Compact {
            keep_for,
            keep_last,
            tombstones,
            chunk,
        } => {
            let mut policy = RetentionPolicy::default().chunk(chunk);
            if let Some(age) = keep_for {
                policy = policy.max_age(age);
            }
            if let Some(n) = keep_last {
                policy = policy.max_entries(n);
            }
            if let Some(window) = tombstones {
                policy = policy.tombstones(window);
            }
            let r = sync.compact_with(&policy).await?;
            json!({
                "skipped": r.skipped,
                "tenants": r.tenants,
                "horizonsRaised": r.horizons_raised,
                "logDeleted": r.log_deleted,
                "tombstonesDeleted": r.tombstones_deleted,
                "elapsedMs": r.elapsed.as_millis() as u64,
            })
        }
        Command::Erase { tenant, model, pk } => {
            let r = sync.erase(&tenant, &model, &pk).await?;
            json!({ "rows": r.rows, "logDeleted": r.log_deleted, "seq": r.seq })
        }
        Command::EraseTenant { tenant } => {
            let r = sync.erase_tenant(&tenant).await?;
            json!({ "rows": r.rows, "logDeleted": r.log_deleted, "seq": r.seq })
        }
        Command::Vacuum => {
            let before = space(&storage).await?;
            let statements: &[&str] = match db.get_database_backend() {
                // The checkpoint moves the rewritten pages into the file and
                // empties the WAL, where the old ones would otherwise stay.
                DatabaseBackend::Sqlite => &[
                    "PRAGMA auto_vacuum = INCREMENTAL",
                    "VACUUM",
                    "PRAGMA wal_checkpoint(TRUNCATE)",
                ],
                DatabaseBackend::Postgres => &["VACUUM FULL op_log", "VACUUM FULL snapshots"],
                _ => &["OPTIMIZE TABLE op_log, snapshots"],
            };
            for sql in statements {
                db.execute_unprepared(sql).await?;
            }
            json!({ "before": before, "after": space(&storage).await? })
        }
        Command::Space => space(&storage).await?,
    };
    Ok(report)
}

async fn space(storage: &SeaOrmStorage) -> Result<Value, Box<dyn std::error::Error>> {
    let r = storage
        .retention()
        .ok_or("this storage does not report its space")?;
    let used = r.space_used().await?;
    Ok(json!({ "bytes": used.bytes, "freeBytes": used.free_bytes }))
}
