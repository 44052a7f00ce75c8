//! The file sink under faults (issue 24): `fsync = DURATION` is a key of file sinks that
//! `check` shows, and a `kill -9` leaves a contiguous prefix of whole records; a record a
//! kill cut inside a write is cut off when the sink next opens the file.
//! Tests print what they measured on lines starting with `FIGURES` (see `--nocapture`).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn check(config: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config.replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const UPSTREAM: &str = "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n";

#[tokio::test]
async fn fsync_is_a_file_sink_key_that_check_shows() {
    let (code, stdout, stderr) = check(&format!(
        "{UPSTREAM}[[sink]]\ntype = \"file\"\npath = \"{{dir}}/a.ndjson\"\nfsync = \"1s\"\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("fsync          every 1s"), "{stdout}");
    let (_, stdout, _) = check(&format!(
        "{UPSTREAM}[[sink]]\ntype = \"file\"\npath = \"{{dir}}/a.ndjson\"\n"
    ));
    assert!(
        stdout.contains("fsync          on rotation, reload and shutdown"),
        "{stdout}"
    );
    let (code, _, stderr) = check(&format!(
        "{UPSTREAM}[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:0\"\nfsync = \"1s\"\n"
    ));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("has no `fsync` key"), "{stderr}");
    let (code, _, stderr) = check(&format!(
        "{UPSTREAM}[[sink]]\ntype = \"file\"\npath = \"{{dir}}/a.ndjson\"\nfsync = \"0s\"\n"
    ));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("sink[0].fsync"), "{stderr}");
}

fn config(server: &TestServer, path: &Path) -> String {
    let sink = format!(
        "path = \"{}\"\nevents = false\nfsync = \"200ms\"",
        path.display()
    );
    TestConfig::new()
        .upstream("feed", &server.url("/"), "")
        .sink("file", &sink)
        .to_string()
}

/// Every line of `text` as a record; panics on one that is not whole.
fn records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a torn line ({e}): {line:?}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_whole_records_contiguous_from_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.ndjson");
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start(&config(&server, &path)).await;
    let mut conn = server.accept().await;
    let feeding = tokio::spawn(async move {
        for n in 1..=200_000u64 {
            let text = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(200));
            // Ends when the daemon is killed.
            if conn.ws.send(Message::text(text)).await.is_err() {
                return;
            }
        }
    });
    // Killed mid-feed, once the file has some records.
    let deadline = Instant::now() + SOON * 3;
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 2 << 20 {
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        sleep(Duration::from_millis(5)).await;
    }
    daemon.signal(9);
    let _ = daemon.wait().await;
    feeding.abort();
    let text = std::fs::read_to_string(&path).unwrap();
    let whole = text.ends_with('\n');
    let seqs: Vec<u64> = records(text.rsplit_once('\n').map_or("", |(whole, _)| whole))
        .iter()
        .map(|r| r["seq"].as_u64().expect("a data record"))
        .collect();
    println!(
        "FIGURES file kill -9: {} whole records, last line {}",
        seqs.len(),
        if whole { "whole" } else { "cut" }
    );
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(seqs == expected, "seq not contiguous from 1");

    // A kill inside a write the kernel split leaves part of a record: the next start cuts
    // it off before appending, so that no line is torn.
    if whole {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"type\":\"text\",\"upstream\":\"feed\",\"se")
            .unwrap();
    }
    let mut daemon = Daemon::start(&config(&server, &path)).await;
    let mut conn = server.accept().await;
    conn.send_text("after").await;
    let deadline = Instant::now() + SOON;
    loop {
        let text = std::fs::read_to_string(&path).unwrap();
        let after = text.ends_with('\n')
            && text
                .lines()
                .last()
                .and_then(|l| serde_json::from_str::<Value>(l).ok())
                .is_some_and(|r| r["data"] == "after");
        if after {
            let all = records(&text);
            assert_eq!(all.len(), seqs.len() + 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the record after the restart never came whole: {:?}",
            text.lines().last()
        );
        sleep(Duration::from_millis(20)).await;
    }
    daemon.wait_for_log("cut that part off").await;
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}
