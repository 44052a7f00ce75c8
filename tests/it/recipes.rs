//! Runs the README's pipeline recipes verbatim (the `<!-- recipe: NAME -->` blocks) with
//! bash, against a local server standing in for `ws://127.0.0.1:8765/`: `/feed` streams JSON
//! ticks, `/echo` echoes. The README cannot drift from what works.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Sizes of the ticks `/feed` sends, in order.
pub const SIZES: [f64; 6] = [0.5, 2.0, 3.0, 0.7, 5.0, 1.5];

async fn recipe_server() -> String {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = format!("ws://{}", server.addr);
    tokio::spawn(async move {
        loop {
            let mut conn = server.accept_any().await;
            tokio::spawn(async move {
                if conn.path.starts_with("/feed") {
                    for (i, size) in SIZES.iter().enumerate() {
                        let symbol = ["BTC", "ETH", "SOL"][i % 3];
                        let tick = format!(r#"{{"symbol":"{symbol}","size":{size},"i":{i}}}"#);
                        if conn.ws.send(Message::text(tick)).await.is_err() {
                            return;
                        }
                    }
                }
                // Echo until the client closes (the feed ignores what it receives).
                let echo = !conn.path.starts_with("/feed");
                while let Some(Ok(m)) = conn.ws.next().await {
                    if echo && (m.is_text() || m.is_binary()) && conn.ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// The first block fenced as `lang` after recipe `name`'s marker in the README.
fn readme_block(name: &str, lang: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let marker = format!("<!-- recipe: {name} -->");
    let after = readme
        .split(&marker)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no recipe {name}"));
    let block = after
        .split(&format!("```{lang}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("recipe {name} has no {lang} block"))
        .split("```")
        .next()
        .unwrap();
    block.to_string()
}

/// The commands of recipe `name`.
fn recipe(name: &str) -> String {
    readme_block(name, "sh")
}

/// Runs a recipe in a temp dir with `wsbridge` on PATH and the stand-in server's URL; it
/// must succeed and write nothing to stderr. Returns its stdout.
pub async fn run_recipe(name: &str) -> String {
    let (stdout, stderr) = run_recipe_with_stderr(name).await;
    assert!(
        stderr.is_empty(),
        "recipe {name} wrote to stderr:\n{stderr}"
    );
    stdout
}

/// Like [`run_recipe`], for a recipe whose stderr says something too: its stdout and stderr.
pub async fn run_recipe_with_stderr(name: &str) -> (String, String) {
    let status = std::process::Command::new("jq").arg("--version").output();
    assert!(
        status.is_ok_and(|o| o.status.success()),
        "the recipes need jq: run tests/run.sh, which installs it, or apt-get install jq"
    );
    let url = recipe_server().await;
    let script = recipe(name).replace("ws://127.0.0.1:8765", &url);
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = tokio::process::Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SOON * 2, run)
        .await
        .expect("the recipe finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "recipe {name} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
    );
    (stdout, stderr)
}

#[tokio::test]
async fn jq_filter() {
    let out = run_recipe("jq-filter").await;
    assert_eq!(
        out,
        "{\"symbol\":\"ETH\",\"size\":2}\n{\"symbol\":\"SOL\",\"size\":3}\n"
    );
}

#[tokio::test]
async fn send_file() {
    let out = run_recipe("send-file").await;
    assert_eq!(out, "{\"op\":\"add\",\"n\":1}\n{\"op\":\"add\",\"n\":2}\n");
}

#[tokio::test]
async fn ws_to_ws() {
    let out = run_recipe("ws-to-ws").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, line) in lines.iter().enumerate() {
        let tick: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(tick["i"], i, "{out}");
    }
}

#[tokio::test]
async fn legacy_tool() {
    let out = run_recipe("legacy-tool").await;
    let total: f64 = SIZES[..4].iter().sum();
    assert_eq!(out.trim(), format!("total size {total}"));
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn record_replay() {
    let out = run_recipe("record-replay").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), SIZES.len(), "{out}");
    for (i, line) in lines.iter().enumerate() {
        let tick: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (tick["i"].as_u64(), tick["size"].as_f64()),
            (Some(i as u64), Some(SIZES[i])),
            "{out}"
        );
    }
}

/// The README's "Feeds you can check" example (issue 27): a recording with a gap, replayed and
/// checked by `connect --sequence --event-time`, prints what the README shows: every message
/// in order, one gap record where 5 and 6 are missing, `lag_ms` of at least the 250 ms the
/// recipe backdates its messages by (the README's figures are one run's), and the warning on
/// stderr.
#[tokio::test]
async fn feed_gap() {
    let (out, stderr) = run_recipe_with_stderr("feed-gap").await;
    let lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let (got, shown) = (lines(&out), lines(&readme_block("feed-gap", "text")));
    // The same records but for the lag, which is one run's.
    let without_lag = |records: &[serde_json::Value]| -> Vec<serde_json::Value> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some(fields) = r.as_object_mut() {
                    fields.remove("lag_ms");
                }
                r
            })
            .collect()
    };
    assert_eq!(
        without_lag(&got),
        without_lag(&shown),
        "the recipe printed:\n{out}"
    );
    assert_eq!(
        got.iter().filter(|r| r.get("gap").is_some()).count(),
        1,
        "{out}"
    );
    for r in got.iter().filter(|r| r.get("u").is_some()) {
        let lag = r["lag_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("no lag_ms: {r}"));
        // Backdated 250 ms; a unit mistake (seconds for ms) would be off by far more than the
        // minute allowed for a loaded machine.
        assert!((250..60_000).contains(&lag), "lag_ms {lag} in {r}");
    }
    // The README quotes the warning as `WARN … the feed skipped …`: each part is in it.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let quoted = readme
        .split("<!-- recipe: feed-gap -->")
        .nth(1)
        .and_then(|after| after.split("(stderr: `").nth(1))
        .and_then(|quote| quote.split('`').next())
        .expect("the README quotes the recipe's stderr");
    let warning = stderr
        .lines()
        .find(|l| l.contains("the feed skipped sequence numbers"))
        .unwrap_or_else(|| panic!("no warning about the gap:\n{stderr}"));
    for part in quoted.split('…').map(str::trim) {
        assert!(warning.contains(part), "{part:?} is not in {warning:?}");
    }
    assert!(quoted.contains("expected=5 got=7"), "{quoted}");
}
