//! `wsbridge top` against a running daemon: in a pseudo-terminal (python's `pty`) it draws
//! each upstream and quits on `q`; with stdout piped it prints plain rows.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

fn config(url: &str, metrics: u16) -> String {
    TestConfig::new()
        .metrics(metrics)
        .upstream("book-feed", url, "")
        .upstream("trade-feed", url, "")
        .stdout_sink()
        .to_string()
}

/// Runs (with the system python3: the standard library only) `wsbridge top -c CONFIG` in a 30x120 pseudo-terminal until the screen shows every
/// name in `expect`, then types `q`; prints `quit=exited` once it has ended, and what was drawn.
const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time
bin, config, expect = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
pid, fd = pty.fork()
if pid == 0:
    os.execv(bin, [bin, "top", "-c", config])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
seen, deadline, sent = b"", time.time() + 20, False
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.2)
    if ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        seen += chunk
    if not sent and all(name.encode() in seen for name in expect):
        os.write(fd, b"q")
        sent = True
    if sent and os.waitpid(pid, os.WNOHANG)[0]:
        sent = "exited"
        break
if sent is True:
    while time.time() < deadline and not os.waitpid(pid, os.WNOHANG)[0]:
        time.sleep(0.05)
    else:
        sent = "exited" if time.time() < deadline else sent
print("quit=%s" % sent)
sys.stdout.write(seen.decode("utf-8", "replace"))
if sent != "exited":
    os.kill(pid, 9)
"#;

#[tokio::test]
async fn in_a_terminal_it_shows_each_upstream_and_quits_on_q() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (addr, _) = server.echo();
    let port = free_port();
    let mut daemon = Daemon::start(&config(&format!("ws://{addr}/"), port)).await;
    daemon.record_where("open", |r| r["type"] == "open").await;
    let out = tokio::time::timeout(
        SOON * 3,
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(PTY_DRIVER)
            .arg(bin())
            .arg(&daemon.config_path)
            .arg("book-feed,trade-feed,MSGS/S")
            .output(),
    )
    .await
    .expect("the driver ends")
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("quit=exited"),
        "{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn piped_it_prints_rows() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (addr, _) = server.echo();
    let port = free_port();
    let mut daemon = Daemon::start(&config(&format!("ws://{addr}/"), port)).await;
    daemon.record_where("open", |r| r["type"] == "open").await;
    let mut child = tokio::process::Command::new(bin())
        .args(["top", "-c"])
        .arg(&daemon.config_path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rows = Vec::new();
    // Two refreshes: the second has rates.
    while rows
        .iter()
        .filter(|l: &&String| l.starts_with("UPSTREAM"))
        .count()
        < 2
    {
        let line = tokio::time::timeout(SOON, lines.next_line())
            .await
            .expect("a row in time")
            .unwrap()
            .expect("top still running");
        rows.push(line);
    }
    let book = rows
        .iter()
        .rev()
        .find(|l| l.starts_with("book-feed "))
        .unwrap();
    assert!(book.contains(" open "), "{rows:#?}");
    assert!(
        rows.iter().any(|l| l.starts_with("trade-feed ")),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|l| l.starts_with("stdout ")), "{rows:#?}");
    drop(lines);
    // A closed pipe ends it quietly.
    let status = tokio::time::timeout(SOON, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
