//! `better-sync`: a small CLI to inspect a better-sync server (metadata,
//! pull, snapshot, push, watch). Run `better-sync help` for the usage.

use std::io::Read;
use std::process::ExitCode;

use better_sync_client::{Auth, ClientError, LiveMessage, Remote, WireChange};
use better_sync_core::hlc::Hlc;
use serde_json::{Value, json};

const USAGE: &str = "\
better-sync: inspect a better-sync server

USAGE:
    better-sync [OPTIONS] <COMMAND> [ARGS]

COMMANDS:
    info                          print the server's sync.json
    pull [--cursor C] [--limit N] [--all]
                                  print changes after C (default: from the start) as JSON
                                  lines; --all follows has_more to the head. The next cursor
                                  goes to stderr as `cursor <C>`
    snapshot --model M            print the current rows of model M as JSON lines
    push [FILE]                   push changes from FILE (or stdin): one change, an array, or
                                  {\"changes\": [...]}; op_id, updated_at and actor are filled
                                  in when missing. Prints the server's answer
    watch [--cursor C] [--models a,b] [--max N]
                                  subscribe over WebSocket and print changes as they commit
                                  (stop with Ctrl-C, or after N changes)
    help                          this text

OPTIONS (or environment):
    --url URL         server origin (BETTER_SYNC_URL, default http://127.0.0.1:3000)
    --base-path P     protocol base path (BETTER_SYNC_BASE_PATH, default /api/sync)
    --token T         bearer token (BETTER_SYNC_TOKEN); the example servers print one
";

struct Args {
    words: Vec<String>,
}

impl Args {
    /// Remove `--name value` and return the value.
    fn option(&mut self, name: &str) -> Result<Option<String>, String> {
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(format!("{name} needs a value"));
        }
        let value = self.words.remove(i + 1);
        self.words.remove(i);
        Ok(Some(value))
    }

    /// Remove `--name` and return whether it was there.
    fn flag(&mut self, name: &str) -> bool {
        match self.words.iter().position(|w| w == name) {
            Some(i) => {
                self.words.remove(i);
                true
            }
            None => false,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = Args {
        words: std::env::args().skip(1).collect(),
    };
    match run(&mut args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n\n{USAGE}");
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

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

async fn run(args: &mut Args) -> Result<(), Failure> {
    let url = args
        .option("--url")?
        .unwrap_or_else(|| env_or("BETTER_SYNC_URL", "http://127.0.0.1:3000"));
    let base_path = args
        .option("--base-path")?
        .unwrap_or_else(|| env_or("BETTER_SYNC_BASE_PATH", "/api/sync"));
    let token = args
        .option("--token")?
        .or_else(|| std::env::var("BETTER_SYNC_TOKEN").ok());
    let auth = token.map_or_else(Auth::none, Auth::bearer);
    if args.words.is_empty() {
        return Err(Failure::Usage("no command".into()));
    }
    let command = args.words.remove(0);
    let remote = Remote::new(&url, &base_path, auth)?;
    match command.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        "info" => {
            let text = reqwest_get_text(&remote.url("sync.json")).await?;
            println!("{text}");
            Ok(())
        }
        "pull" => {
            let mut cursor = args.option("--cursor")?;
            let limit = args
                .option("--limit")?
                .map(|l| l.parse::<u32>().map_err(|_| format!("--limit {l:?}")))
                .transpose()?;
            let all = args.flag("--all");
            no_more(args)?;
            loop {
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
            }
        }
        "snapshot" => {
            let model = args
                .option("--model")?
                .ok_or_else(|| "snapshot needs --model".to_owned())?;
            no_more(args)?;
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
        "push" => {
            let file = args.words.first().cloned();
            if args.words.len() > 1 {
                return Err(Failure::Usage(format!("unexpected {:?}", args.words[1])));
            }
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
        "watch" => {
            let cursor = args.option("--cursor")?;
            let models: Option<Vec<String>> = args
                .option("--models")?
                .map(|m| m.split(',').map(str::to_owned).collect());
            let max = args
                .option("--max")?
                .map(|n| n.parse::<usize>().map_err(|_| format!("--max {n:?}")))
                .transpose()?;
            no_more(args)?;
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
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    }
}

fn no_more(args: &Args) -> Result<(), Failure> {
    match args.words.first() {
        Some(w) => Err(Failure::Usage(format!("unexpected {w:?}"))),
        None => Ok(()),
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
