//! The statements materialization builds, per backend.

use super::*;

#[allow(unreachable_pub)]
mod todo {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "todos")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub title: String,
        pub done: bool,
        pub removed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[allow(unreachable_pub)]
mod counter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "counters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub n: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn record(model: &str, id: &str, value: &str, deleted: bool) -> SnapshotRecord {
    SnapshotRecord {
        tenant_id: "t1".into(),
        model: model.into(),
        id: id.into(),
        value: value.into(),
        clocks: "{}".into(),
        deleted,
        seq: 1,
    }
}

fn sql(stmts: &[Statement]) -> Vec<String> {
    stmts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn live_rows_are_upserted_with_the_tenant_and_deleted_rows_deleted() {
    let mut m = Materializers::default();
    m.bind(
        "todo".into(),
        Materialize::<todo::Entity>::new().tenant_field("tenant_id"),
    )
    .expect("bind");
    let rows = [
        record(
            "todo",
            "a",
            r#"{"title":"x","done":false,"removed":false}"#,
            false,
        ),
        record("todo", "b", "{}", true),
        record("other", "c", "{}", false),
    ];
    let out = sql(&m.statements(DbBackend::Postgres, &rows));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out[0].starts_with(r#"INSERT INTO "todos" ("tenant_id", "id", "title", "done", "removed") VALUES ('t1', 'a', 'x', FALSE, FALSE) ON CONFLICT ("tenant_id", "id") DO UPDATE SET"#),
        "{}",
        out[0]
    );
    assert_eq!(
        out[1],
        r#"DELETE FROM "todos" WHERE "todos"."id" = 'b' AND "todos"."tenant_id" = 't1'"#
    );
    let mysql = sql(&m.statements(DbBackend::MySql, &rows));
    assert!(mysql[0].contains("ON DUPLICATE KEY UPDATE"), "{}", mysql[0]);
}

#[test]
fn a_soft_delete_sets_the_flag_and_a_write_clears_it() {
    let mut m = Materializers::default();
    m.bind(
        "todo".into(),
        Materialize::<todo::Entity>::new()
            .tenant_field("tenant_id")
            .soft_delete("removed"),
    )
    .expect("bind");
    let rows = [
        record("todo", "a", r#"{"title":"x","done":true}"#, false),
        record("todo", "b", "{}", true),
    ];
    let out = sql(&m.statements(DbBackend::Sqlite, &rows));
    assert!(out[0].contains("'x', TRUE, FALSE)"), "{}", out[0]);
    assert_eq!(
        out[1],
        r#"UPDATE "todos" SET "removed" = TRUE WHERE "todos"."id" = 'b' AND "todos"."tenant_id" = 't1'"#
    );
}

#[test]
fn a_row_that_is_not_whole_is_taken_out_of_the_table() {
    let mut m = Materializers::default();
    m.bind(
        "todo".into(),
        Materialize::<todo::Entity>::new().tenant_field("tenant_id"),
    )
    .expect("bind");
    let out = sql(&m.statements(
        DbBackend::Sqlite,
        &[record("todo", "a", r#"{"done":true}"#, false)],
    ));
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with(r#"DELETE FROM "todos""#), "{}", out[0]);
}

#[test]
fn numeric_keys_are_numbers() {
    let mut m = Materializers::default();
    m.bind("counter".into(), Materialize::<counter::Entity>::new())
        .expect("bind");
    let out = sql(&m.statements(
        DbBackend::Postgres,
        &[
            record("counter", "7", r#"{"n":3}"#, false),
            record("counter", "8", "{}", true),
        ],
    ));
    assert!(out[0].contains("VALUES (7, 3)"), "{}", out[0]);
    assert!(out[1].ends_with(r#""counters"."id" = 8"#), "{}", out[1]);
}

#[test]
fn bindings_that_cannot_work_are_refused() {
    let mut m = Materializers::default();
    let no_column = m.bind(
        "todo".into(),
        Materialize::<todo::Entity>::new().tenant_field("tenant"),
    );
    assert!(no_column.is_err_and(|e| e.contains("no column")));
    // Without the tenant, the key would be two columns.
    let two_keys = m.bind("todo".into(), Materialize::<todo::Entity>::new());
    assert!(two_keys.is_err_and(|e| e.contains("one column")));
    assert!(m.is_empty());
}
