//! Migrations creating the better-sync tables (`op_log`, `snapshots`,
//! `sync_counter`, and for retention `sync_horizons`, `sync_marks`, `sync_leases`).
//!
//! An app adds them to its own `Migrator` ([`migrations`]); this
//! repository's `migration` package is their command line. The engine
//! never migrates at runtime. Run them out of process:
//!
//! ```text
//! DATABASE_URL=sqlite://data.db?mode=rwc cargo run -p migration -- up
//! DATABASE_URL=postgres://postgres@127.0.0.1/app cargo run -p migration -- status
//! ```
//!
//! or, as a development convenience, from code with
//! `Migrator::up(&db, None).await`.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_sync_tables;
mod m20261203_000001_create_retention_tables;
pub mod schema;

/// better-sync's migrations, in order, for an app's own `Migrator`: put
/// them before (or among) the app's own, by name order.
///
/// ```
/// use better_sync_migration::{MigrationTrait, MigratorTrait};
///
/// /// The app's migrator: better-sync's tables beside the app's.
/// struct AppMigrator;
///
/// #[async_trait::async_trait]
/// impl MigratorTrait for AppMigrator {
///     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
///         let mut all = better_sync_migration::migrations();
///         // all.push(Box::new(m20270101_000001_create_projects::Migration));
///         all
///     }
/// }
/// assert_eq!(AppMigrator::migrations().len(), 2);
/// ```
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261125_000001_create_sync_tables::Migration),
        Box::new(m20261203_000001_create_retention_tables::Migration),
    ]
}

/// Every better-sync migration, in order (the command line's migrator).
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }
}
