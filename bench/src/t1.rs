//! T1: many tenants pushing through several instances of one Postgres
//! database, beside a raw multi-writer insert of the same rows: what the
//! one log head all tenants share costs (issue 20.4's baseline).

use std::time::Instant;

use better_sync::sea_orm::{
    ConnectOptions, ConnectionTrait, Database, Statement, TransactionTrait,
};
use better_sync::testing::dev_token;
use serde_json::{Value, json};

use crate::figures::Figure;
use crate::server::{Server, change, http_client, post};
use crate::{BoxError, SECRET};

/// Instances (server processes) the tenants push through.
const INSTANCES: usize = 3;
/// Tenants pushing at once, each one client.
const TENANTS: usize = 100;
/// New rows a push.
const PER_PUSH: usize = 10;

/// T1 on the migrated Postgres database at `url` (which it writes to).
pub(crate) async fn t1(url: &str, scale: usize) -> Result<Vec<Figure>, BoxError> {
    // 20,000 changes in all (2,000 with --quick).
    let pushes = (20 / scale).max(2);
    let ceiling = raw_multi_writer(url, pushes).await?;
    let servers = (0..INSTANCES)
        .map(|_| Server::start(url))
        .collect::<Result<Vec<_>, _>>()?;
    let http = http_client();
    let start = Instant::now();
    let tenants = (0..TENANTS).map(|t| {
        let http = http.clone();
        let push_url = format!("http://{}/api/sync/push", servers[t % INSTANCES].addr);
        let token = dev_token(SECRET, "bench", &format!("t1-{t}"), 3600);
        async move {
            for p in 0..pushes {
                let changes: Vec<Value> = (0..PER_PUSH)
                    .map(|i| {
                        let id = format!("t{t}-{p}-{i}");
                        change(&id, &id, json!({"title": id, "done": false}))
                    })
                    .collect();
                post(
                    &http,
                    &push_url,
                    &token,
                    json!({ "changes": changes }).to_string(),
                )
                .await?;
            }
            Ok::<_, BoxError>(())
        }
    });
    for pushed in futures_util::future::join_all(tenants).await {
        pushed?;
    }
    let rate = (TENANTS * pushes * PER_PUSH) as f64 / start.elapsed().as_secs_f64();
    drop(servers);
    Ok(vec![
        Figure::new(
            format!(
                "ceiling: raw multi-writer insert, {TENANTS} writers of {PER_PUSH}-row commits, Postgres"
            ),
            ceiling,
            "changes/s",
            "-",
        ),
        Figure::new(
            format!(
                "T1 postgres {TENANTS} tenants through {INSTANCES} instances, pushes of {PER_PUSH}"
            ),
            rate,
            "changes/s",
            "-",
        )
        .against(ceiling),
    ])
}

/// `TENANTS` writers at once, each committing `pushes` transactions of
/// `PER_PUSH` log-shaped and snapshot-shaped rows into scratch tables with
/// no lock in common: what the database takes when tenants do not wait
/// for one another. Changes/s.
async fn raw_multi_writer(url: &str, pushes: usize) -> Result<f64, BoxError> {
    let mut options = ConnectOptions::new(url);
    // As many connections as the three instances' pools together.
    options.max_connections(30).sqlx_logging(false);
    let db = Database::connect(options).await?;
    let backend = db.get_database_backend();
    for sql in [
        "DROP TABLE IF EXISTS bench_t1_log",
        "DROP TABLE IF EXISTS bench_t1_rows",
        "CREATE TABLE bench_t1_log (seq BIGSERIAL PRIMARY KEY, tenant_id VARCHAR(128) NOT NULL, \
         op_id VARCHAR(128) NOT NULL, payload TEXT NOT NULL, UNIQUE (tenant_id, op_id))",
        "CREATE TABLE bench_t1_rows (tenant_id VARCHAR(128) NOT NULL, id VARCHAR(128) NOT NULL, \
         value TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
    ] {
        db.execute_unprepared(sql).await?;
    }
    let start = Instant::now();
    let writers = (0..TENANTS).map(|t| {
        let db = db.clone();
        async move {
            for p in 0..pushes {
                let txn = db.begin().await?;
                let ids: Vec<String> = (0..PER_PUSH).map(|i| format!("t{t}-{p}-{i}")).collect();
                // The log row and the row itself hold the same values.
                let values: Vec<String> = ids
                    .iter()
                    .map(|id| {
                        format!("('t1-{t}', '{id}', '{{\"title\":\"{id}\",\"done\":false}}')")
                    })
                    .collect();
                txn.execute_raw(Statement::from_string(
                    backend,
                    format!(
                        "INSERT INTO bench_t1_log (tenant_id, op_id, payload) VALUES {}",
                        values.join(",")
                    ),
                ))
                .await?;
                txn.execute_raw(Statement::from_string(
                    backend,
                    format!(
                        "INSERT INTO bench_t1_rows (tenant_id, id, value) VALUES {}",
                        values.join(",")
                    ),
                ))
                .await?;
                txn.commit().await?;
            }
            Ok::<_, BoxError>(())
        }
    });
    for written in futures_util::future::join_all(writers).await {
        written?;
    }
    let rate = (TENANTS * pushes * PER_PUSH) as f64 / start.elapsed().as_secs_f64();
    for sql in ["DROP TABLE bench_t1_log", "DROP TABLE bench_t1_rows"] {
        db.execute_unprepared(sql).await?;
    }
    Ok(rate)
}
