//! Materialized models: the application's own SeaORM tables hold each
//! synced row's current state, written in the commit's transaction. The
//! tables are compared with the engine's snapshots at random moments while
//! clients and the application write concurrently (in one read transaction,
//! so a commit is either wholly seen or not at all), and read with plain
//! SeaORM queries (a join, a count per list).

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use better_sync::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, IsolationLevel, QueryFilter,
    QueryOrder, Schema, Statement, TransactionTrait,
};
use better_sync::{Ctx, Materialize, ModelOptions};
use common::{Backend, TestDb, TestServer, change};
use sea_orm::{ColumnTrait, JoinType, QuerySelect, RelationTrait};
use serde_json::{Value, json};

/// The app's own tables: lists, and todos in them.
#[allow(unreachable_pub)]
mod list {
    use sea_orm::entity::prelude::*;

    #[derive(
        Clone,
        Debug,
        PartialEq,
        DeriveEntityModel,
        serde::Serialize,
        serde::Deserialize,
        better_sync::JsonSchema,
    )]
    #[sea_orm(table_name = "app_lists")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub archived: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::todo::Entity")]
        Todo,
    }

    impl Related<super::todo::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Todo.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

#[allow(unreachable_pub)]
mod todo {
    use sea_orm::entity::prelude::*;

    #[derive(
        Clone,
        Debug,
        PartialEq,
        DeriveEntityModel,
        serde::Serialize,
        serde::Deserialize,
        better_sync::JsonSchema,
    )]
    #[sea_orm(table_name = "app_todos")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub list_id: String,
        pub title: String,
        pub done: bool,
        pub priority: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        // No foreign key: clients sync rows in any order (a todo may arrive
        // before its list), and a refused commit would fail other pushes.
        #[sea_orm(
            belongs_to = "super::list::Entity",
            from = "(Column::TenantId, Column::ListId)",
            to = "(super::list::Column::TenantId, super::list::Column::Id)",
            skip_fk
        )]
        List,
    }

    impl Related<super::list::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::List.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// The app's migration: better-sync never creates these tables.
async fn create_app_tables(db: &DatabaseConnection) {
    let schema = Schema::new(db.get_database_backend());
    db.execute(&schema.create_table_from_entity(list::Entity))
        .await
        .expect("create lists");
    db.execute(&schema.create_table_from_entity(todo::Entity))
        .await
        .expect("create todos");
}

fn engine(db: &DatabaseConnection) -> better_sync::BetterSync {
    common::builder(db)
        .typed_model_with::<todo::Model>("todo", ModelOptions::default().omit_field("tenant_id"))
        .typed_model_with::<list::Model>("list", ModelOptions::default().omit_field("tenant_id"))
        .materialize(
            "todo",
            Materialize::<todo::Entity>::new().tenant_field("tenant_id"),
        )
        .materialize(
            "list",
            Materialize::<list::Entity>::new()
                .tenant_field("tenant_id")
                .soft_delete("archived"),
        )
        .build()
        .expect("build")
}

/// A small deterministic generator (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random");
        Self(u64::from_le_bytes(b) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `(tenant, id) -> fields` of the snapshots that make a whole todo, and of
/// the app's table, read in one transaction.
type Rows = BTreeMap<(String, String), Value>;

async fn read_both(db: &DatabaseConnection) -> (Rows, Rows) {
    let isolation = match db.get_database_backend() {
        DbBackend::Sqlite => None,
        _ => Some(IsolationLevel::RepeatableRead),
    };
    let tx = db.begin_with_config(isolation, None).await.expect("begin");
    let snapshots = tx
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT tenant_id, id, value FROM snapshots WHERE model = 'todo' AND deleted = FALSE",
        ))
        .await
        .expect("snapshots");
    let mut expected = Rows::new();
    for r in snapshots {
        let tenant: String = r.try_get("", "tenant_id").expect("tenant");
        let id: String = r.try_get("", "id").expect("id");
        let value: String = r.try_get("", "value").expect("value");
        let mut fields: Value = serde_json::from_str(&value).expect("json");
        fields["tenant_id"] = Value::String(tenant.clone());
        fields["id"] = Value::String(id.clone());
        // Rows that are not whole yet are not in the table.
        if let Ok(m) = serde_json::from_value::<todo::Model>(fields) {
            expected.insert((tenant, id), serde_json::to_value(m).expect("json"));
        }
    }
    let table = todo::Entity::find()
        .order_by_asc(todo::Column::Id)
        .all(&tx)
        .await
        .expect("app table")
        .into_iter()
        .map(|m| {
            (
                (m.tenant_id.clone(), m.id.clone()),
                serde_json::to_value(m).expect("json"),
            )
        })
        .collect();
    tx.commit().await.expect("end");
    (expected, table)
}

const WRITERS: usize = 6;
const ROUNDS: usize = 30;
const KEYS: u64 = 12;

async fn the_apps_table_equals_the_snapshots_under_concurrent_writes(backend: Backend) {
    let db = TestDb::new(backend).await;
    create_app_tables(&db.db).await;
    let sync = engine(&db.db);
    let server = TestServer::start(sync.clone()).await;
    let seed = Rng::new().0;
    eprintln!("materialize seed {seed}");

    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let db = db.db.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut checks = 0;
            while !done.load(Ordering::SeqCst) || checks == 0 {
                let (expected, table) = read_both(&db).await;
                assert_eq!(
                    table, expected,
                    "check {checks}: the table is not the snapshots"
                );
                checks += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            checks
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let tenant = ["acme", "globex"][w % 2];
        let client = server.client(&format!("user{w}"), tenant);
        let sync = sync.clone();
        let mut rng = Rng(seed.wrapping_add(w as u64 * 7919) | 1);
        writers.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let pk = format!("t{}", rng.below(KEYS));
                let at = format!("2026-01-01T00:00:{:02}.{:03}Z", round % 60, rng.below(1000));
                let (op, payload) = match rng.below(10) {
                    0..=3 => (
                        "insert",
                        json!({"id": pk, "list_id": format!("l{}", rng.below(3)), "title": format!("w{w} r{round}"), "done": false, "priority": rng.below(5)}),
                    ),
                    4..=6 => ("update", json!({"done": rng.below(2) == 1, "priority": rng.below(5)})),
                    7 => ("update", json!({"title": format!("renamed by w{w}")})),
                    _ => ("delete", Value::Null),
                };
                if round % 5 == 4 {
                    // The application's own write, through the engine.
                    let ctx = Ctx::new(format!("app{w}"), tenant);
                    let writer = sync.write(&ctx);
                    let r = match op {
                        "insert" => writer.insert("todo", &pk, &payload).await,
                        "update" => writer.update("todo", &pk, &payload).await,
                        _ => writer.delete("todo", &pk).await,
                    };
                    r.expect("application write");
                } else {
                    let c = change(&format!("w{w}-{round}"), "todo", &pk, op, payload, &at, &format!("user{w}"));
                    let a = client.push(json!([c])).await;
                    assert_eq!(a.status, 200, "{:?}", a.body);
                }
            }
        }));
    }
    for w in writers {
        tokio::time::timeout(Duration::from_secs(300), w)
            .await
            .expect("writer finished")
            .expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let checks = checker.await.expect("checker");
    let (expected, table) = read_both(&db.db).await;
    assert_eq!(table, expected, "after the last commit");
    assert!(!table.is_empty(), "the run left rows");
    eprintln!(
        "{checks} checks while writing, {} rows at the end",
        table.len()
    );
}

async fn the_app_joins_its_tables_with_plain_sea_orm(backend: Backend) {
    let db = TestDb::new(backend).await;
    create_app_tables(&db.db).await;
    let sync = engine(&db.db);
    let server = TestServer::start(sync.clone()).await;
    let ann = server.client("ann", "acme");
    let at = "2026-01-01T00:00:00.000Z";
    let mut changes = vec![
        change(
            "l1",
            "list",
            "home",
            "insert",
            json!({"id": "home", "name": "Home", "archived": false}),
            at,
            "d",
        ),
        change(
            "l2",
            "list",
            "work",
            "insert",
            json!({"id": "work", "name": "Work", "archived": false}),
            at,
            "d",
        ),
    ];
    for (i, list) in ["home", "home", "work", "home"].iter().enumerate() {
        changes.push(change(
            &format!("t{i}"),
            "todo",
            &format!("todo{i}"),
            "insert",
            json!({"id": format!("todo{i}"), "list_id": list, "title": format!("todo {i}"), "done": i == 0, "priority": i}),
            at,
            "d",
        ));
    }
    let a = ann.push(Value::Array(changes)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // Another tenant's rows with the same keys stay apart.
    let bob = server.client("bob", "globex");
    let a = bob
        .push(json!([change(
            "g1",
            "list",
            "home",
            "insert",
            json!({"id": "home", "name": "Elsewhere", "archived": false}),
            at,
            "d"
        )]))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    // Open todos per list of one tenant: a join and a count, plain SeaORM.
    let open: Vec<(String, i64)> = todo::Entity::find()
        .select_only()
        .column(list::Column::Name)
        .column_as(todo::Column::Id.count(), "open")
        .join(JoinType::InnerJoin, todo::Relation::List.def())
        .filter(todo::Column::TenantId.eq("acme"))
        .filter(todo::Column::Done.eq(false))
        .group_by(list::Column::Name)
        .order_by_asc(list::Column::Name)
        .into_tuple()
        .all(&db.db)
        .await
        .expect("join");
    assert_eq!(open, vec![("Home".to_owned(), 2), ("Work".to_owned(), 1)]);

    // A client's delete deletes the todo; a list's soft delete keeps it,
    // archived; a write brings it back.
    let a = ann
        .push(json!([
            change(
                "d1",
                "todo",
                "todo1",
                "delete",
                Value::Null,
                "2026-01-01T00:00:01.000Z",
                "d"
            ),
            change(
                "d2",
                "list",
                "work",
                "delete",
                Value::Null,
                "2026-01-01T00:00:01.000Z",
                "d"
            ),
        ]))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let todos = todo::Entity::find()
        .filter(todo::Column::TenantId.eq("acme"))
        .all(&db.db)
        .await
        .expect("todos");
    assert_eq!(todos.len(), 3);
    assert!(todos.iter().all(|t| t.id != "todo1"));
    let work = list::Entity::find_by_id(("acme".to_owned(), "work".to_owned()))
        .one(&db.db)
        .await
        .expect("list")
        .expect("kept");
    assert!(work.archived, "{work:?}");
    let elsewhere = list::Entity::find_by_id(("globex".to_owned(), "home".to_owned()))
        .one(&db.db)
        .await
        .expect("list")
        .expect("other tenant's row");
    assert_eq!(elsewhere.name, "Elsewhere");

    // The application writes through the engine, and reads its own table.
    let ctx = Ctx::new("admin", "acme");
    sync.write(&ctx)
        .update("todo", "todo2", &json!({"title": "renamed by the app"}))
        .await
        .expect("update");
    let renamed = todo::Entity::find_by_id(("acme".to_owned(), "todo2".to_owned()))
        .one(&db.db)
        .await
        .expect("todo")
        .expect("row");
    assert_eq!(renamed.title, "renamed by the app");

    // A client may not set the server's field.
    let a = ann
        .push(json!([change("x1", "todo", "todo9", "insert", json!({"id": "todo9", "tenant_id": "globex", "list_id": "home", "title": "sneaky", "done": false, "priority": 1}), at, "d")]))
        .await;
    assert_eq!(
        (a.status, a.code()),
        (422, "SYNC:SCHEMA_VIOLATION"),
        "{:?}",
        a.body
    );
}

crate::per_backend!(
    the_apps_table_equals_the_snapshots_under_concurrent_writes,
    the_app_joins_its_tables_with_plain_sea_orm
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_materialize_binding_that_cannot_work_is_refused_at_build() {
    let db = TestDb::new(Backend::Sqlite).await;
    let err = common::builder(&db.db)
        .materialize(
            "todo",
            Materialize::<todo::Entity>::new().tenant_field("tenant"),
        )
        .build()
        .expect_err("no such column");
    assert!(err.to_string().contains("no column"), "{err}");
}
