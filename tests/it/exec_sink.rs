//! The exec sink on the real binary with real programs: records reach a program that reads,
//! its stdout lines go upstream, its stderr is logged with WSBRIDGE_SINK set, 100 restarts
//! leave no zombie and no fd behind, a program that does not read never stalls the rest
//! (`on_slow = "drop"`), and shutdown kills a program that ignores the end of its stdin.

use std::path::Path;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::common::*;

fn exec_config(server: &TestServer, sink: &str) -> String {
    TestConfig::new()
        .shutdown_timeout("2s")
        .upstream("feed", &server.url("/"), "")
        .sink("exec", &format!("events = false\n{sink}"))
        .to_string()
}

/// A TOML array of strings.
fn argv(args: &[&str]) -> String {
    serde_json::to_string(args).unwrap()
}

async fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + SOON * 2;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {count}",
            path.display(),
            lines.len()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn records_reach_a_program_and_its_stdout_goes_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seen.txt");
    let script = format!(
        r#"echo "sink is $WSBRIDGE_SINK" >&2; while read l; do echo "$l" >> {}; printf '{{"type":"text","data":"got %s"}}\n' "$l"; done"#,
        out.display()
    );
    let mut server = TestServer::start(ServerOptions::default()).await;
    let sink = format!(
        "command = {}\nformat = \"raw\"\ninbound = true\n",
        argv(&["sh", "-c", &script])
    );
    let mut daemon = Daemon::start_in(dir, &exec_config(&server, &sink)).await;
    let mut conn = server.accept().await;
    for n in 1..=50 {
        conn.send_text(&format!("m{n}")).await;
    }
    let lines = wait_for_lines(&out, 50).await;
    let expected: Vec<String> = (1..=50).map(|n| format!("m{n}")).collect();
    assert_eq!(lines, expected);
    for n in 1..=50 {
        assert_eq!(conn.recv_text().await, format!("got m{n}"));
    }
    daemon.wait_for_log("sink is exec:sh -c").await;
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}

/// Zombie children of `pid`, from /proc.
fn zombies_of(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …: comm may hold spaces, so read after its ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            state == Some("Z") && ppid == Some(pid)
        })
        .count()
}

/// The fewest fds and zombies seen over a second: a program may be running at any one
/// moment, but not at all of them.
async fn settled(pid: u32) -> (usize, usize) {
    let (mut fds, mut zombies) = (usize::MAX, usize::MAX);
    for _ in 0..50 {
        fds = fds.min(open_fds(pid).expect("daemon running"));
        zombies = zombies.min(zombies_of(pid));
        sleep(Duration::from_millis(20)).await;
    }
    (fds, zombies)
}

fn restarts(log: &str) -> usize {
    log.matches("the program exited; restarting it").count()
}

#[tokio::test]
async fn a_hundred_restarts_leave_no_zombie_and_no_fd() {
    let server = TestServer::start(ServerOptions::default()).await;
    let sink = format!(
        "command = {}\nrestart = {{ initial = \"20ms\", max = \"40ms\" }}\n",
        argv(&["sh", "-c", "exit 3"])
    );
    let daemon = Daemon::start(&exec_config(&server, &sink)).await;
    let pid = daemon.child.id().unwrap();
    let deadline = Instant::now() + SOON * 3;
    while restarts(&daemon.stderr()) < 5 {
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        sleep(Duration::from_millis(20)).await;
    }
    let (fds_before, _) = settled(pid).await;
    while restarts(&daemon.stderr()) < 105 {
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        sleep(Duration::from_millis(50)).await;
    }
    let (fds_after, zombies) = settled(pid).await;
    assert_eq!(zombies, 0, "zombie children of the daemon");
    assert_eq!(fds_after, fds_before, "fds before and after 100 restarts");
    let log = daemon.stderr();
    assert!(
        log.contains("exit status: 3"),
        "the status is logged:\n{log}"
    );
    assert!(
        log.contains("restart_in=40ms") || log.contains("restart_in=3"),
        "{log}"
    );
}

#[tokio::test]
async fn a_program_that_does_not_read_stalls_nothing_with_drop() {
    let port = free_port();
    let mut server = TestServer::start(ServerOptions::default()).await;
    let sink = format!(
        "command = {}\non_slow = \"drop\"\nbuffer = 16\n\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\nevents = false\non_slow = \"block\"\n",
        argv(&["sleep", "1000"])
    );
    let mut daemon = Daemon::start(&exec_config(&server, &sink)).await;
    let mut reader = RecordReader::new(connect_tcp(([127, 0, 0, 1], port).into()).await);
    let mut conn = server.accept().await;
    let big = "x".repeat(4096);
    for _ in 1..=2000 {
        conn.send_text(&big).await;
    }
    for expected in 1..=2000u64 {
        assert_eq!(reader.next().await["seq"].as_u64(), Some(expected));
    }
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}

#[tokio::test]
async fn shutdown_kills_a_program_that_ignores_the_end_of_its_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let server = TestServer::start(ServerOptions::default()).await;
    let sink = format!("command = {}\n", argv(&["sh", "-c", &script]));
    let mut daemon = Daemon::start_in(dir, &exec_config(&server, &sink)).await;
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            break pid;
        }
        sleep(Duration::from_millis(20)).await;
    };
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
    assert!(
        daemon.stderr().contains("killing it"),
        "{}",
        daemon.stderr()
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the program outlived the daemon"
    );
}

#[tokio::test]
async fn recipe_feed_a_legacy_program() {
    let out = crate::recipes::run_recipe("exec-legacy").await;
    assert_eq!(
        out,
        "size 0.5\nsize 2\nsize 3\nsize 0.7\nsize 5\nsize 1.5\n"
    );
}
