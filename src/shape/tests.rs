//! The bootstrap query of a shape uses the index `index_sql` gives (SQLite,
//! without statistics; Postgres was checked by hand with EXPLAIN, see
//! PROTOCOL.md 16.4).

use super::*;
use crate::auth::Ctx;
use crate::storage::SeaOrmStorage;
use better_sync_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

#[tokio::test]
async fn a_shape_bootstrap_reads_through_its_index_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let db = SeaOrmStorage::connect(&url).await.expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    let index = index_sql(DbBackend::Sqlite, "todo", "project_id").expect("index");
    db.execute_unprepared(&index).await.expect("create index");

    let shape = Shape::new("s", "todo")
        .param("p", ParamType::String)
        .filter(field("project_id").eq(param("p")));
    let bound = Bound::new(
        &shape,
        Some(&serde_json::json!({"p": "p1"})),
        &Ctx::new("u", "t"),
    )
    .expect("bound");
    let condition = condition(DbBackend::Sqlite, &shape.filter, &bound, "t");
    let q = crate::storage::shape_page_query_for_tests("t", "todo", &condition, Some(""), 1001);
    let stmt = DbBackend::Sqlite.build(&q);
    let plan = db
        .query_all_raw(Statement {
            sql: format!("EXPLAIN QUERY PLAN {}", stmt.sql),
            ..stmt
        })
        .await
        .expect("plan");
    let detail: Vec<String> = plan
        .iter()
        .map(|r| r.try_get::<String>("", "detail").expect("detail"))
        .collect();
    assert!(
        detail
            .iter()
            .any(|d| d.contains("snapshots_todo_project_id") && d.contains("<expr>=?")),
        "{detail:?}"
    );
    assert!(
        !detail.iter().any(|d| d.contains("TEMP B-TREE")),
        "{detail:?}"
    );
}
