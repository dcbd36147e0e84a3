//! A tiny app crate made of exactly what the README's "Use it in your app"
//! says (its `[dependencies]` lines, its axum app, its `Migrator` beside
//! better-sync's), type-checked by cargo against this repository's crates.
//!
//! Slow (it checks axum, SeaORM and the rest in a target dir of its own), so
//! ignored by default; `.ci/test` runs it:
//! `cargo test -p migration --test readme_app -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The code blocks of a markdown section: (info string, text).
fn blocks(section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut text = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        out.push((info.to_owned(), text));
    }
    out
}

/// A rustdoc block as a source file: hidden lines (`# ...`) dropped.
fn source(block: &str) -> String {
    block
        .lines()
        .filter(|l| !(l.starts_with("# ") || *l == "#"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
#[ignore = "slow: type-checks a separate crate; run by .ci/test"]
fn the_readmes_app_builds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let start = readme.find("## Use it in your app").expect("the section");
    let end = start + readme[start + 3..].find("\n## ").expect("its end") + 3;
    let section = &readme[start..end];
    let blocks = blocks(section);
    let toml = &blocks
        .iter()
        .find(|(i, _)| i == "toml")
        .expect("dependencies")
        .1;
    let app = &blocks
        .iter()
        .find(|(i, t)| i.starts_with("rust") && t.contains("axum::serve"))
        .expect("the axum app")
        .1;
    let migrator = &blocks
        .iter()
        .find(|(i, t)| i.starts_with("rust") && t.contains("impl MigratorTrait for Migrator"))
        .expect("the app's Migrator")
        .1;

    // Our crates from this repository, at the versions the README names.
    let ours = [
        ("better-sync", "."),
        ("better-sync-tower", "sync-tower"),
        ("better-sync-actix", "sync-actix"),
        ("better-sync-migration", "sync-migration"),
    ];
    let mut deps = String::new();
    for line in toml.lines() {
        let name = line.split('=').next().unwrap_or("").trim();
        match ours.iter().find(|(n, _)| *n == name) {
            Some((n, dir)) => {
                let version = line
                    .split('"')
                    .nth(1)
                    .expect("a version in the README's line");
                deps.push_str(&format!(
                    "{n} = {{ version = \"{version}\", path = {:?} }}\n",
                    root.join(dir)
                ));
            }
            None => {
                deps.push_str(line);
                deps.push('\n');
            }
        }
    }
    assert!(deps.contains("better-sync-migration"), "{deps}");

    let dir = tempfile_dir();
    let manifest = format!(
        "[package]\nname = \"readme-app\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n[workspace]\n\n{deps}"
    );
    write(&dir.join("Cargo.toml"), &manifest);
    write(
        &dir.join("src/main.rs"),
        &format!("#[allow(dead_code)]\nmod migrator;\n\n{}", source(app)),
    );
    write(&dir.join("src/migrator.rs"), &source(migrator));
    // The repository's lock file: the same versions, and no network.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock file");

    let output = Command::new(env!("CARGO"))
        .args(["check", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", root.join("target/readme-app"))
        .output()
        .expect("cargo");
    assert!(
        output.status.success(),
        "the README's app does not build:\n{}\n--- Cargo.toml ---\n{manifest}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("better-sync-readme-app-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).expect("temp dir");
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
