//! The file sink on the real binary and real files: rotation keeps every record whole and
//! in order, logrotate's "move, then reload" loses nothing, a removed directory or a full
//! disk drops and counts while the other sinks get everything, and writing resumes.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, Instant};

use crate::common::*;

/// A payload of about 100 bytes, numbered.
fn payload(n: u64) -> String {
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(80))
}

fn file_config(server: &TestServer, path: &Path, rotate: &str) -> TestConfig {
    let sink = format!("path = \"{}\"\nevents = false\n{rotate}", path.display());
    TestConfig::new()
        .shutdown_timeout("30s")
        .upstream("feed", &server.url("/"), "")
        .sink("file", &sink)
}

/// The rotated files of `live` (`.gz` or not), oldest first.
fn rotated_files(live: &Path) -> Vec<PathBuf> {
    let dir = live.parent().unwrap();
    let prefix = format!("{}.", live.file_name().unwrap().to_str().unwrap());
    let mut files: Vec<((String, u64), PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            let rest = name.strip_prefix(&prefix)?;
            let rest = rest.strip_suffix(".gz").unwrap_or(rest);
            let (stamp, n) = match rest.split_once('-') {
                Some((s, n)) => (s.to_string(), n.parse().ok()?),
                None => (rest.to_string(), 0),
            };
            (stamp.len() == 16).then_some(((stamp, n), path))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// A file's text, gunzipped when it ends in `.gz`.
fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{} is not gzip: {e}", path.display()));
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

/// The `seq` of every line, each of which must be a whole record.
fn seqs(text: &str, what: &str) -> Vec<u64> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what} ends in the middle of a line"
    );
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not a whole record ({e}): {line:?}"));
            record["seq"].as_u64().expect("a data record")
        })
        .collect()
}

fn assert_contiguous(seqs: &[u64], last: u64) {
    let first = *seqs.first().expect("some records");
    let expected: Vec<u64> = (first..=last).collect();
    if seqs != expected {
        let gap = seqs.windows(2).find(|w| w[1] != w[0] + 1);
        panic!(
            "seq not contiguous from {first} to {last}: {} records, first break at {gap:?}",
            seqs.len()
        );
    }
}

/// Sends `count` numbered messages on the daemon's connection.
async fn feed(server: &mut TestServer, count: u64) -> Conn {
    let mut conn = server.accept().await;
    for n in 1..=count {
        conn.send_text(&payload(n)).await;
    }
    conn
}

/// Waits until the file's last line has `seq` = `last`.
async fn wait_for_seq(path: &Path, last: u64) {
    let deadline = Instant::now() + SOON * 3;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let done = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .is_some_and(|r| r["seq"].as_u64() == Some(last));
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "seq {last} never reached {}",
            path.display()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

async fn rotation_run(count: u64, size: &str) {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("feed.ndjson");
    let mut server = TestServer::start(ServerOptions::default()).await;
    let rotate = format!(r#"rotate = {{ size = "{size}", keep = 5, compress = true }}"#);
    let mut daemon = Daemon::start_in(dir, &file_config(&server, &live, &rotate).to_string()).await;
    let _conn = feed(&mut server, count).await;
    wait_for_seq(&live, count).await;
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());

    let rotated = rotated_files(&live);
    assert!(rotated.len() >= 2, "expected rotations: {rotated:?}");
    assert!(
        rotated.len() <= 5,
        "more than keep = 5 rotated files: {rotated:?}"
    );
    assert!(
        rotated
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "gz")),
        "every rotated file is compressed by shutdown: {rotated:?}"
    );
    let mut all = Vec::new();
    for file in &rotated {
        all.extend(seqs(&read_text(file), &file.display().to_string()));
    }
    all.extend(seqs(&read_text(&live), "the live file"));
    assert!(all[0] > 1, "the oldest files were pruned (keep = 5)");
    assert_contiguous(&all, count);
    let limit = parse_size(size);
    for file in &rotated {
        let len = read_text(file).len() as u64;
        assert!(
            len <= limit,
            "{} holds {len} bytes, over {size}",
            file.display()
        );
    }
}

fn parse_size(size: &str) -> u64 {
    let (n, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap());
    n.parse::<u64>().unwrap()
        * match unit {
            "KiB" => 1024,
            "MiB" => 1 << 20,
            _ => 1,
        }
}

#[tokio::test]
async fn rotation_keeps_every_record_whole_and_in_order() {
    rotation_run(200_000, "1MiB").await;
}

#[tokio::test]
async fn move_then_reload_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("feed.ndjson");
    let moved = dir.path().join("feed.ndjson.1");
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start_in(dir, &file_config(&server, &live, "").to_string()).await;
    let mut conn = server.accept().await;
    for n in 1..=500 {
        conn.send_text(&payload(n)).await;
    }
    wait_for_seq(&live, 500).await;
    std::fs::rename(&live, &moved).unwrap();
    // Records sent now go to the moved file until the reload: none may be lost.
    for n in 501..=1000 {
        conn.send_text(&payload(n)).await;
    }
    daemon.signal(1);
    daemon.wait_for_log("reopened the file").await;
    for n in 1001..=1500 {
        conn.send_text(&payload(n)).await;
    }
    wait_for_seq(&live, 1500).await;
    let old = seqs(&read_text(&moved), "the moved file");
    let new = seqs(&read_text(&live), "the new file");
    assert_eq!(old.first(), Some(&1));
    assert_eq!(
        new.first().copied(),
        old.last().map(|l| l + 1),
        "the new file starts with the next record"
    );
    let mut all = old;
    all.extend(new);
    assert_contiguous(&all, 1500);
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

/// The file sink's config with a tcp sink beside it, for "the other sinks go on".
fn with_tcp_sink(server: &TestServer, path: &Path, port: u16) -> String {
    let tcp = format!("listen = \"127.0.0.1:{port}\"\nevents = false\non_slow = \"block\"");
    file_config(server, path, "").sink("tcp", &tcp).to_string()
}

#[tokio::test]
async fn a_removed_directory_is_counted_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("out");
    std::fs::create_dir(&sub).unwrap();
    let live = sub.join("feed.ndjson");
    let port = free_port();
    let mut server = TestServer::start(ServerOptions::default()).await;
    let config = with_tcp_sink(&server, &live, port);
    let mut daemon = Daemon::start_in(dir, &config).await;
    let mut reader = RecordReader::new(connect_tcp(([127, 0, 0, 1], port).into()).await);
    let mut conn = server.accept().await;
    for n in 1..=100 {
        conn.send_text(&payload(n)).await;
    }
    wait_for_seq(&live, 100).await;
    std::fs::remove_dir_all(&sub).unwrap();
    for n in 101..=200 {
        conn.send_text(&payload(n)).await;
    }
    daemon.wait_for_log("records are dropped").await;
    std::fs::create_dir(&sub).unwrap();
    // Records sent once the directory is back are written again.
    let mut n = 200;
    let deadline = Instant::now() + SOON * 2;
    while read_text_or_empty(&live).is_empty() {
        assert!(
            Instant::now() < deadline,
            "writing never resumed:\n{}",
            daemon.stderr()
        );
        n += 1;
        conn.send_text(&payload(n)).await;
        sleep(Duration::from_millis(50)).await;
    }
    wait_for_seq(&live, n).await;
    let resumed = seqs(&read_text(&live), "the new file");
    assert_contiguous(&resumed, n);
    // The tcp sink got everything, in order.
    for expected in 1..=n {
        assert_eq!(reader.next().await["seq"].as_u64(), Some(expected));
    }
    daemon.wait_for_log("writing to the file again").await;
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

fn read_text_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether this process may mount (root): the full-disk test needs a small tmpfs.
fn can_mount() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

#[tokio::test]
#[ignore = "mounts a 1 MiB tmpfs, so it needs root; tests/run.sh runs it"]
async fn a_full_disk_is_counted_and_writing_resumes_when_space_returns() {
    assert!(
        can_mount(),
        "this test mounts a 1 MiB tmpfs and needs root: run tests/run.sh as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs failed");
    let _unmount = Unmount(mount.clone());
    let live = mount.join("feed.ndjson");
    let filler = mount.join("filler");
    let port = free_port();
    let mut server = TestServer::start(ServerOptions::default()).await;
    let config = with_tcp_sink(&server, &live, port);
    let mut daemon = Daemon::start_in(dir, &config).await;
    let mut reader = RecordReader::new(connect_tcp(([127, 0, 0, 1], port).into()).await);
    let mut conn = server.accept().await;
    // Fill the disk, then keep feeding.
    let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    for n in 1..=3000 {
        conn.send_text(&payload(n)).await;
    }
    daemon.wait_for_log("records are dropped").await;
    for expected in 1..=3000 {
        assert_eq!(reader.next().await["seq"].as_u64(), Some(expected));
    }
    std::fs::remove_file(&filler).unwrap();
    let mut n = 3000;
    let deadline = Instant::now() + SOON * 2;
    while !daemon.stderr().contains("writing to the file again") {
        assert!(
            Instant::now() < deadline,
            "writing never resumed:\n{}",
            daemon.stderr()
        );
        n += 1;
        conn.send_text(&payload(n)).await;
        sleep(Duration::from_millis(50)).await;
    }
    n += 1;
    conn.send_text(&payload(n)).await;
    wait_for_seq(&live, n).await;
    // Every line in the file is whole, in order; what is missing was counted.
    let written = seqs(&read_text(&live), "the file on the full disk");
    assert!(written.windows(2).all(|w| w[0] < w[1]));
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_missing_directory_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n[[sink]]\ntype = \"file\"\npath = \"{}/nope/feed.ndjson\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":6:8: sink[0].path: the directory"),
        "{stderr}"
    );
}

#[tokio::test]
async fn recipe_record_a_feed_and_read_it_back() {
    let out = crate::recipes::run_recipe("record-file").await;
    assert_eq!(out, "0\n1\n2\n3\n4\n5\n");
}
