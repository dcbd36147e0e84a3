//! `better-sync`: a small CLI to inspect a better-sync server (metadata,
//! pull, snapshot, push, watch). Run `better-sync --help` for the usage.

use std::io::Read;
use std::process::ExitCode;

use better_sync_client::{Auth, ClientError, LiveMessage, Remote, WireChange};
use better_sync_core::hlc::Hlc;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Inspect a better-sync server: metadata, pull, snapshot, push, watch.
#[derive(Debug, Parser)]
#[command(name = "better-sync", version)]
struct Cli {
    /// Server origin.
    #[arg(
        long,
        global = true,
        env = "BETTER_SYNC_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    url: String,
    /// Protocol base path.
    #[arg(
        long,
        global = true,
        env = "BETTER_SYNC_BASE_PATH",
        default_value = "/api/sync"
    )]
    base_path: String,
    /// Bearer token (the example servers print one).
    #[arg(long, global = true, env = "BETTER_SYNC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the server's sync.json.
    Info,
    /// Print changes after a cursor as JSON lines; the next cursor goes to
    /// stderr as `cursor <C>`.
    Pull {
        /// Start after this cursor (default: from the start).
        #[arg(long)]
        cursor: Option<String>,
        /// Most changes per page.
        #[arg(long)]
        limit: Option<u32>,
        /// Follow `has_more` to the head.
        #[arg(long)]
        all: bool,
    },
    /// Print the current rows of a model as JSON lines.
    Snapshot {
        /// The model.
        #[arg(long)]
        model: String,
    },
    /// Push changes from FILE (or stdin): one change, an array, or
    /// {"changes": [...]}; op_id, updated_at and actor are filled in when
    /// missing. Prints the server's answer.
    Push {
        /// The file (`-` or none: stdin).
        file: Option<String>,
    },
    /// Subscribe over WebSocket and print changes as they commit (stop with
    /// Ctrl-C, or after --max changes).
    Watch {
        /// Start after this cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Only these models, comma-separated.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Stop after this many changes.
        #[arg(long)]
        max: Option<usize>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with 2 and clap's message.
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Sync(e)) => {
            eprintln!("error: {e}");
            if let Some(meta) = e.meta() {
                eprintln!("meta: {meta}");
            }
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Sync(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::Sync(e)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Self::Usage(e)
    }
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let auth = cli.token.map_or_else(Auth::none, Auth::bearer);
    let remote = Remote::new(&cli.url, &cli.base_path, auth)?;
    match cli.command {
        Command::Info => {
            let text = reqwest_get_text(&remote.url("sync.json")).await?;
            println!("{text}");
            Ok(())
        }
        Command::Pull {
            mut cursor,
            limit,
            all,
        } => loop {
            let page = remote.pull(cursor.as_deref(), limit, None).await?;
            for c in &page.changes {
                print_json(c);
            }
            cursor = Some(page.cursor);
            if !(all && page.has_more) {
                eprintln!("cursor {}", cursor.as_deref().unwrap_or_default());
                if page.has_more {
                    eprintln!("has_more true");
                }
                return Ok(());
            }
        },
        Command::Snapshot { model } => {
            let mut after: Option<String> = None;
            loop {
                let page = remote.snapshot(&model, after.as_deref(), None).await?;
                for row in &page.rows {
                    print_json(row);
                }
                match (page.has_more, page.next_after) {
                    (true, Some(next)) => after = Some(next),
                    _ => {
                        eprintln!("cursor {}", page.cursor);
                        return Ok(());
                    }
                }
            }
        }
        Command::Push { file } => {
            let text = match file.as_deref() {
                None | Some("-") => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .map_err(|e| format!("reading stdin: {e}"))?;
                    s
                }
                Some(path) => {
                    std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?
                }
            };
            let changes = parse_changes(&text)?;
            let answer = remote.push("better-sync-cli", &changes).await?;
            print_json(&answer);
            Ok(())
        }
        Command::Watch {
            cursor,
            models,
            max,
        } => {
            let mut sub = remote
                .subscribe(cursor.as_deref(), models.as_deref())
                .await?;
            let mut seen = 0usize;
            loop {
                match sub.next().await? {
                    None => {
                        return Err(
                            ClientError::new("NETWORK", "the server closed the WebSocket").into(),
                        );
                    }
                    Some(LiveMessage::Changes { changes, cursor }) => {
                        for c in &changes {
                            print_json(c);
                            seen += 1;
                            if max.is_some_and(|m| seen >= m) {
                                eprintln!("cursor {cursor}");
                                sub.close().await;
                                return Ok(());
                            }
                        }
                        eprintln!("cursor {cursor}");
                    }
                    Some(LiveMessage::Synced { cursor }) => eprintln!("synced {cursor}"),
                    Some(_) => {}
                }
            }
        }
    }
}

async fn reqwest_get_text(url: &str) -> Result<String, ClientError> {
    let remote_error = |e: reqwest::Error| ClientError::new("NETWORK", e.to_string());
    let response = reqwest::get(url).await.map_err(remote_error)?;
    let status = response.status();
    let text = response.text().await.map_err(remote_error)?;
    if !status.is_success() {
        return Err(ClientError::new(
            "BAD_RESPONSE",
            format!("HTTP {status}: {text}"),
        ));
    }
    Ok(text)
}

/// Changes from the CLI's input, with missing `op_id`, `updated_at` and
/// `actor` filled in.
fn parse_changes(text: &str) -> Result<Vec<WireChange>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("input is not JSON: {e}"))?;
    let list = match value {
        Value::Array(a) => a,
        Value::Object(mut o) if o.contains_key("changes") => match o.remove("changes") {
            Some(Value::Array(a)) => a,
            _ => return Err("\"changes\" must be an array".into()),
        },
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(
                "input must be a change, an array of changes or {\"changes\": [...]}".into(),
            );
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let Some(o) = c.as_object_mut() else {
                return Err(format!("change {i} is not an object"));
            };
            o.entry("op_id")
                .or_insert_with(|| json!(uuid::Uuid::now_v7().to_string()));
            o.entry("updated_at")
                .or_insert_with(|| json!(Hlc::now().to_string()));
            o.entry("actor").or_insert_with(|| json!("better-sync-cli"));
            serde_json::from_value(c).map_err(|e| format!("change {i}: {e}"))
        })
        .collect()
}
