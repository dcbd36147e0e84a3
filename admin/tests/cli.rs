//! The admin command line against a real SQLite file: compact, erase,
//! erase-tenant, space and vacuum, and its answers to bad input.

use std::process::Command;

use better_sync::auth::Jwt;
use better_sync::protocol::{Change, Op, PushRequest};
use better_sync::{BetterSync, Ctx, SeaOrmStorage};
use migration::{Migrator, MigratorTrait};
use serde_json::{Value, json};

fn admin(url: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_better-sync-admin"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run better-sync-admin");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn change(op_id: &str, pk: &str, op: Op, payload: Value, second: u32) -> Change {
    Change {
        op_id: op_id.into(),
        model: "todo".into(),
        pk: pk.into(),
        op,
        payload,
        updated_at: format!("2026-11-25T10:00:{second:02}.000Z"),
        actor: "dev".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_compacts_erases_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let db = SeaOrmStorage::connect(&url).await.expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    let sync = BetterSync::builder()
        .storage(SeaOrmStorage::new(db))
        .auth(Jwt::hs256(b"admin-test-secret-admin-test-secret"))
        .build()
        .expect("build");
    let acme = Ctx::new("ann", "acme");
    let mut changes = vec![
        change("i1", "r1", Op::Insert, json!({"title": "private-a"}), 1),
        change("i2", "r2", Op::Insert, json!({"title": "keep"}), 2),
    ];
    for n in 0..8 {
        changes.push(change(
            &format!("u{n}"),
            "r2",
            Op::Update,
            json!({"n": n}),
            3 + n,
        ));
    }
    sync.push(
        &acme,
        PushRequest {
            client_id: "t".into(),
            changes,
        },
    )
    .await
    .expect("push");
    let other = Ctx::new("bob", "other");
    let theirs = vec![change(
        "o1",
        "x",
        Op::Insert,
        json!({"title": "private-b"}),
        1,
    )];
    sync.push(
        &other,
        PushRequest {
            client_id: "t".into(),
            changes: theirs,
        },
    )
    .await
    .expect("push");

    let (code, report, err) = admin(&url, &["space"]);
    assert_eq!(code, 0, "{err}");
    assert!(report["bytes"].as_u64().is_some_and(|b| b > 0), "{report}");

    let (code, report, err) = admin(&url, &["compact", "--keep-last", "3", "--tombstones", "0s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["logDeleted"], 7, "{report}");
    assert_eq!(report["skipped"], false);
    let stale = sync.pull(&acme, None, None).await.expect_err("stale");
    assert_eq!(stale.code().as_str(), "SYNC:CURSOR_STALE");

    let (code, report, err) = admin(
        &url,
        &["erase", "--tenant", "acme", "--model", "todo", "--pk", "r1"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["rows"], 1, "{report}");
    assert_eq!(sync.get(&acme, "todo", "r1").await.expect("get"), None);
    assert!(sync.get(&acme, "todo", "r2").await.expect("get").is_some());

    let (code, report, err) = admin(&url, &["erase-tenant", "--tenant", "other"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["rows"], 1, "{report}");
    assert_eq!(sync.get(&other, "todo", "x").await.expect("get"), None);

    let (code, report, err) = admin(&url, &["vacuum"]);
    assert_eq!(code, 0, "{err}");
    assert!(report["after"]["bytes"].as_u64().is_some(), "{report}");
    let mut file = std::fs::read(dir.path().join("a.db")).expect("read the file");
    file.extend(std::fs::read(dir.path().join("a.db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&file);
    assert!(
        !text.contains("private-a"),
        "an erased value is in the vacuumed file"
    );
    assert!(
        !text.contains("private-b"),
        "an erased tenant's value is in the vacuumed file"
    );
    assert!(text.contains("keep"));
}

#[test]
fn bad_input_is_refused_with_a_message() {
    // No subcommand, an unknown one, a bad duration: usage errors (2).
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
    for args in [
        &[][..],
        &["shrink"][..],
        &["compact", "--keep-for", "soon"][..],
        &["erase", "--tenant", "t"][..],
    ] {
        let (code, _, err) = admin(&url, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.is_empty());
    }
    // A database without the tables: a failure (1) that says why.
    let (code, _, err) = admin(&url, &["compact", "--keep-last", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("better-sync-admin:"), "{err}");
    assert!(err.contains("caused by"), "{err}");
    // No database at all.
    let (code, _, err) = admin("nosuchdb://x", &["space"]);
    assert_eq!(code, 1, "{err}");
}
