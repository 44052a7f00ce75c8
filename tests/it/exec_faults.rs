//! The exec sink under faults, with real programs (issue 24): records queued for a program
//! that exits go to the one that replaces it, what it left unread in the pipe is counted
//! (`program_exited`), and the program's whole process group goes on restart and shutdown.
//! Tests print what they measured on lines starting with `FIGURES` (see `--nocapture`).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, Instant};

use crate::brokers::sink_status;
use crate::common::*;

fn config(server: &TestServer, metrics: u16, command: &[&str], extra: &str) -> String {
    let command = serde_json::to_string(command).unwrap();
    let restart = r#"restart = { initial = "20ms", max = "100ms" }"#;
    TestConfig::new()
        .shutdown_timeout("4s")
        .metrics(metrics)
        .upstream("feed", &server.url("/"), "")
        .sink(
            "exec",
            &format!("events = false\ncommand = {command}\n{restart}\n{extra}"),
        )
        .to_string()
}

/// Waits until all `count` records are routed and each is written or dropped.
async fn settled(port: u16, count: u64) -> wsbridge::metrics::SinkStatus {
    let deadline = Instant::now() + SOON * 6;
    loop {
        let sink = sink_status(([127, 0, 0, 1], port).into()).await;
        if sink.records_routed == count
            && sink.records_written + sink.records_dropped == sink.records_routed
        {
            return sink;
        }
        assert!(
            Instant::now() < deadline,
            "never settled: routed {}, written {}, dropped {} {:?}",
            sink.records_routed,
            sink.records_written,
            sink.records_dropped,
            sink.dropped_by_reason
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// The `seq` of every line of `path`, each of which must be a whole record, none twice.
fn seqs_once(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "out ends in the middle of a line"
    );
    let mut seen = HashSet::new();
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a whole record ({e}): {line:?}"));
            let seq = record["seq"].as_u64().expect("a data record");
            assert!(seen.insert(seq), "seq {seq} written twice");
            seq
        })
        .collect()
}

/// Feeds `count` records to a program that exits after every 500 lines, restarted; returns
/// the lines it wrote, the sink's figures and how many programs ran.
async fn feed_programs(
    program: &str,
    count: u64,
) -> (Vec<u64>, wsbridge::metrics::SinkStatus, usize) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let mut server = TestServer::start(ServerOptions::default()).await;
    let script = format!("cd {} && {program}", dir.path().display());
    let config = config(&server, metrics, &["sh", "-c", &script], "");
    let out = dir.path().join("out");
    let mut daemon = Daemon::start_in(dir, &config).await;
    let mut conn = server.accept().await;
    for n in 1..=count {
        conn.send_text(&format!("{{\"n\":{n}}}")).await;
    }
    let sink = settled(metrics, count).await;
    let programs = daemon
        .stderr()
        .matches("the program exited; restarting it")
        .count()
        + 1;
    // The last program may still hold lines in its stdio buffer: it writes them when the
    // shutdown closes its stdin, so `out` is read once the daemon is gone.
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
    let seqs = seqs_once(&out);
    (seqs, sink, programs)
}

fn program_exited(sink: &wsbridge::metrics::SinkStatus) -> u64 {
    sink.dropped_by_reason
        .get("program_exited")
        .copied()
        .unwrap_or(0)
}

/// A program that reads one line at a time (the shell's `read` takes a byte at a time from
/// a pipe, so it reads nothing it does not write): every record routed is a line of `out`
/// or counted, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_exiting_every_500_lines_loses_nothing_uncounted() {
    let count = 10_000;
    let program = "n=0; while [ $n -lt 500 ] && IFS= read -r l; do printf '%s\\n' \"$l\"; n=$((n+1)); done >> out";
    let (seqs, sink, programs) = feed_programs(program, count).await;
    let exited = program_exited(&sink);
    let dropped = sink.records_dropped;
    println!(
        "FIGURES exec read-500: routed {}, lines {}, written {}, dropped {dropped} ({exited} program_exited, {:?}), programs {programs}",
        sink.records_routed,
        seqs.len(),
        sink.records_written,
        sink.dropped_by_reason,
    );
    assert_eq!(
        seqs.len() as u64 + dropped,
        count,
        "lines + dropped == routed"
    );
    assert_eq!(seqs.len() as u64, sink.records_written, "written == lines");
    // Only what a program left in the pipe is lost: at most a pipe's worth of 20-byte
    // lines per program, far from a queue's worth each time.
    assert!(
        dropped <= programs as u64 * 65_536 / 20,
        "too many dropped: {dropped}"
    );
}

/// The issue's scenario, `head -n 500 >> out`: `head` reads ahead (a block at a time) and
/// discards what it read past line 500, which no writer can see; every record is a line,
/// counted dropped, or was read by a program (counted written), and nothing else is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_n_500_gets_the_queue_of_the_head_before_it() {
    let count = 10_000;
    let (seqs, sink, programs) = feed_programs("head -n 500 >> out", count).await;
    let exited = program_exited(&sink);
    let lines = seqs.len() as u64;
    println!(
        "FIGURES exec head-500: routed {}, lines {lines}, written {}, dropped {} ({exited} program_exited, {:?}), programs {programs}, read ahead by head and discarded {}",
        sink.records_routed,
        sink.records_written,
        sink.records_dropped,
        sink.dropped_by_reason,
        sink.records_written.saturating_sub(lines),
    );
    assert!(lines <= sink.records_written);
    // What head reads and discards is at most its block (8 KiB) per program, lines of at
    // least 20 bytes.
    let read_ahead = sink.records_written - lines;
    assert!(
        read_ahead <= programs as u64 * 8192 / 20,
        "{read_ahead} records written to programs that never wrote them"
    );
    assert!(
        lines + sink.records_dropped + read_ahead == count,
        "lines + dropped + read ahead == routed"
    );
    // The queue goes to the next program: programs read 500 lines each; only what one left
    // in the pipe (at most 64 KiB) is dropped.
    assert!(
        sink.records_dropped <= programs as u64 * 65_536 / 20,
        "too many dropped"
    );
    assert_eq!(
        sink.records_dropped, exited,
        "dropped only for program_exited"
    );
}

/// Processes whose process group is `pgid` and that are not zombies.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp …: comm may hold spaces, so read after its ')'.
            let rest = stat.rsplit_once(')')?.1;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let pgrp: u32 = fields.nth(1)?.parse().ok()?;
            (pgrp == pgid && state != "Z").then_some(pid)
        })
        .collect()
}

async fn wait_until_gone(pgid: u32, when: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        let members = group_members(pgid);
        if members.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: processes {members:?} of the program's group {pgid} remain"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// `sleep 1000 &` outlives the shell that started it unless the whole group is signalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_the_programs_group_outlives_a_restart_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let mut server = TestServer::start(ServerOptions::default()).await;
    let script = format!(
        "echo $$ >> {}; sleep 1000 & head -n 5 >/dev/null",
        dir.path().join("pgids").display()
    );
    let pgids_path = dir.path().join("pgids");
    let config = config(&server, metrics, &["sh", "-c", &script], "");
    let mut daemon = Daemon::start_in(dir, &config).await;
    let mut conn = server.accept().await;
    let pgids = |n: usize| {
        let text = std::fs::read_to_string(&pgids_path).unwrap_or_default();
        let pgids: Vec<u32> = text.lines().filter_map(|l| l.parse().ok()).collect();
        (pgids.len() >= n).then_some(pgids)
    };
    let deadline = Instant::now() + SOON;
    while pgids(1).is_none() {
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        sleep(Duration::from_millis(20)).await;
    }
    // Five lines: head exits, the shell exits, its `sleep` stays behind; restarted.
    for n in 1..=5 {
        conn.send_text(&format!("{{\"n\":{n}}}")).await;
    }
    let deadline = Instant::now() + SOON;
    let second = loop {
        if let Some(pgids) = pgids(2) {
            break pgids;
        }
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        sleep(Duration::from_millis(20)).await;
    };
    println!(
        "FIGURES exec groups: after the restart, group {} has {:?}",
        second[0],
        group_members(second[0])
    );
    wait_until_gone(second[0], "after a restart").await;
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
    println!(
        "FIGURES exec groups: after shutdown, group {} has {:?}",
        second[1],
        group_members(second[1])
    );
    wait_until_gone(second[1], "after shutdown").await;
}
