//! `wsbridge connect` as a shell user runs it: the real binary, real pipes, a real
//! tokio-tungstenite server on loopback.

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Runs `wsbridge connect ARGS` with `stdin` as input, to completion.
async fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn_connect(args);
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    tokio::time::timeout(SOON * 2, child.wait_with_output())
        .await
        .expect("connect exits in time")
        .unwrap()
}

#[tokio::test]
async fn echo_round_trip_of_text_lines() {
    let (addr, _) = TestServer::start(ServerOptions::default()).await.echo();
    let url = format!("ws://{addr}/");
    let out = run_with_stdin(
        &[&url],
        b"first\nsecond line\n{\"json\":true}\n\nlast without newline",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "first\nsecond line\n{\"json\":true}\n\nlast without newline\n"
    );
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
}

#[tokio::test]
async fn binary_round_trip_is_byte_for_byte() {
    let (addr, _) = TestServer::start(ServerOptions::default()).await.echo();
    let url = format!("ws://{addr}/");
    // Deterministic pseudo-random bytes, every value, newlines and NULs included.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let out = run_with_stdin(&["--binary", &url], &data).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "the echoed bytes differ");
}

#[tokio::test]
async fn headers_cookies_and_subprotocol_reach_the_server() {
    let mut server = TestServer::start(ServerOptions {
        protocol: Some("v2".into()),
        ..Default::default()
    })
    .await;
    let url = server.url("/h");
    let mut child = connect_cmd(&[
        &url,
        "-H",
        "X-Token: abc",
        "-H",
        "X-Other:  spaced ",
        "--cookie",
        "a=1",
        "--cookie",
        "b=2",
        "--protocol",
        "v1",
        "--protocol",
        "v2",
        "--origin",
        "https://o.test",
        "--ndjson",
        "-U",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut conn = server.accept().await;
    assert_eq!(conn.header("x-token"), Some("abc"));
    assert_eq!(conn.header("x-other"), Some("spaced"));
    assert_eq!(conn.header("cookie"), Some("a=1; b=2"));
    assert_eq!(conn.header("sec-websocket-protocol"), Some("v1, v2"));
    assert_eq!(conn.header("origin"), Some("https://o.test"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let open: serde_json::Value =
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        (open["type"].as_str(), open["protocol"].as_str()),
        (Some("open"), Some("v2"))
    );
    conn.send_close(1000, "bye").await;
    drop(conn); // a server ends the TCP connection after its Close
    let status = tokio::time::timeout(SOON, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn max_messages_exits_after_that_many() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let child = connect_cmd(&[&url, "-U", "--max-messages", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    for i in 1..=10 {
        conn.send_text(&format!("m{i}")).await;
    }
    // The bridge closes with 1000 after the third message.
    match conn.recv().await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected Close, got {other:?}"),
    }
    drop(conn);
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "m1\nm2\nm3\n");
}

#[tokio::test]
async fn recv_only_with_stdin_at_eof_receives_until_the_server_closes() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let child = connect_cmd(&[&url, "-U"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    // Stdin is already at EOF; the connection must stay up anyway. Not a condition: a window
    // in which a client that (wrongly) ends at stdin's EOF would close first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 1..=5 {
        conn.send_text(&format!("late {i}")).await;
    }
    conn.send_close(1001, "done").await;
    drop(conn);
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "1001 is a clean close; stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        "late 1\nlate 2\nlate 3\nlate 4\nlate 5\n"
    );
}

#[tokio::test]
async fn peer_close_with_an_error_code_exits_1_naming_it() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let child = connect_cmd(&[&url, "-U"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    conn.send_close(4001, "not subscribed").await;
    drop(conn);
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("4001") && stderr.contains("not subscribed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn large_messages_come_out_whole_and_in_order_to_a_pipe_read_in_bursts() {
    lagging_reader_gets_every_line_in_order(false).await;
}

#[tokio::test]
async fn large_messages_come_out_whole_and_in_order_to_a_socket_read_in_bursts() {
    // A socket may take part of a write when it is nearly full (so may a pipe, whose room is
    // checked first but counted in pages): the stdout thread then writes the rest.
    lagging_reader_gets_every_line_in_order(true).await;
}

/// Batches of large raw payloads are written on the connection's thread while stdout takes
/// them at once, and by the stdout thread (from where the connection stopped, if it wrote part
/// of one) when it does not. A reader that reads in bursts makes the writes switch between
/// the two; every line must still come out whole and in order.
async fn lagging_reader_gets_every_line_in_order(socket: bool) {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let (stdout_for_child, mut stdout): (Stdio, Box<dyn tokio::io::AsyncRead + Unpin>) = if socket {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let ours = tokio::net::UnixStream::from_std(ours).unwrap();
        (
            Stdio::from(std::os::fd::OwnedFd::from(theirs)),
            Box::new(ours),
        )
    } else {
        (Stdio::piped(), Box::new(tokio::io::empty()))
    };
    let mut child = connect_cmd(&[&url, "-U"])
        .stdout(stdout_for_child)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !socket {
        stdout = Box::new(child.stdout.take().unwrap());
    }
    let mut conn = server.accept().await;
    let count = 240usize;
    // Sizes from 5 KiB to ~600 KiB; every seventh message has a line break (written as its
    // JSON string, so its batch goes to the stdout thread); every fifth is small.
    let payload = |i: usize| {
        let size = match i % 5 {
            0 => 40,
            _ => 5_000 + (i * 7_919) % 600_000,
        };
        let mut text = format!("{i:06}:");
        text.extend((0..size).map(|k| (b'a' + ((i + k) % 26) as u8) as char));
        if i % 7 == 0 {
            text.insert(10, '\n');
        }
        text
    };
    let sender = tokio::spawn(async move {
        for i in 0..count {
            conn.ws.send(Message::text(payload(i))).await.unwrap();
        }
        conn.send_close(1000, "").await;
        conn
    });
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 256 << 10];
    let read_all = async {
        for reads in 0.. {
            let n = stdout.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            // Bursts, not a condition: a pause after every fourth read, so stdout is
            // sometimes full.
            if reads % 4 == 3 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    };
    tokio::time::timeout(SOON * 3, read_all)
        .await
        .expect("all of stdout within the time");
    let status = tokio::time::timeout(SOON, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = sender.await;
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), count + 1, "lines (the last one empty)");
    for (i, line) in lines[..count].iter().enumerate() {
        let expected = payload(i);
        let expected = if expected.contains('\n') {
            serde_json::to_string(&expected).unwrap()
        } else {
            expected
        };
        assert!(
            *line == expected.as_bytes(),
            "line {i} differs: {} bytes, expected {}; starts {:?}",
            line.len(),
            expected.len(),
            String::from_utf8_lossy(&line[..line.len().min(12)])
        );
    }
}

#[tokio::test]
async fn a_closed_stdout_pipe_exits_0_without_an_error() {
    let (addr, _) = TestServer::start(ServerOptions::default()).await.echo();
    // `yes` keeps the echo going; head takes one line and closes the pipe.
    let script = format!(
        "yes hello | '{}' connect ws://{addr}/ | head -n 1; echo \"status=${{PIPESTATUS[1]}}\"",
        bin()
    );
    let out = tokio::time::timeout(
        SOON * 2,
        Command::new("bash").arg("-c").arg(script).output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(text(&out.stdout), "hello\nstatus=0\n");
    assert!(
        !text(&out.stderr).contains("wsbridge"),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_while_stdout_is_not_read_exits_within_twice_the_shutdown_timeout() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    // stdout is a pipe the test never reads: once it, stdout's input and the socket buffers
    // are full, the writer waits in write(2) and the connection for room.
    let mut child = spawn_connect(&[&url, "-U", "--shutdown-timeout", "1s"]);
    let unread_stdout = child.stdout.take().unwrap();
    let mut conn = server.accept().await;
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let flood = tokio::spawn({
        let sent = sent.clone();
        async move {
            let message = "x".repeat(16 << 10);
            // 16 MiB, more than all the buffers on the way hold; the send waits once they
            // are full.
            for _ in 0..1024 {
                if conn.ws.send(Message::text(message.as_str())).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            conn
        }
    });
    // The buffers are full once the server's sends stop: connect holds output stdout will
    // not take.
    let stalled_at = wait_until_still(&sent, 1, Duration::from_millis(500), EVENTUALLY).await;
    assert!(
        stalled_at < 1024,
        "the server sent all 16 MiB to an unread stdout"
    );
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().expect("running").to_string())
        .status()
        .unwrap();
    assert!(status.success());
    // Twice --shutdown-timeout is 2 s; SOON leaves room for a loaded machine. Without the
    // cut-off it waits for stdout's reader for good.
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("connect exits after SIGTERM although stdout is not read")
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("stdout did not take the rest of the output within 2s"),
        "stderr: {}",
        text(&out.stderr)
    );
    drop(unread_stdout);
    flood.abort();
}

/// A reader of stdout that stops reading holds the connection back (its socket stops being
/// read, so the server cannot send everything) and loses nothing: once it reads again, every
/// message comes out in order, and the Ping the server sent meanwhile is answered.
#[tokio::test]
async fn a_stalled_stdout_reader_loses_nothing_and_the_servers_ping_is_answered_after() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut child = spawn_connect(&[&server.url("/"), "-U"]);
    let mut stdout = child.stdout.take().unwrap();
    let mut conn = server.accept().await;
    // 24 MiB: more than the pipe, stdout's input and both socket buffers hold together.
    let count = 768usize;
    let payload = |i: usize| format!("{i:08}{}", "x".repeat(32 << 10));
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let sent_by_server = sent.clone();
    let server_side = tokio::spawn(async move {
        for i in 0..count {
            conn.ws.send(Message::text(payload(i))).await.unwrap();
            sent_by_server.fetch_add(1, Ordering::Relaxed);
        }
        conn.ws
            .send(Message::Ping("still there?".into()))
            .await
            .unwrap();
        let pong = loop {
            match tokio::time::timeout(SOON, conn.ws.next()).await {
                Ok(Some(Ok(Message::Pong(payload)))) => break payload,
                Ok(Some(Ok(_))) => continue,
                other => panic!("expected the Pong, got {other:?}"),
            }
        };
        conn.send_close(1000, "").await;
        pong
    });
    // Held back: the server's sends stop short of the end while nobody reads stdout.
    let stalled_at = wait_until_still(&sent, 1, Duration::from_millis(500), EVENTUALLY).await;
    assert!(
        stalled_at < count as u64 && !server_side.is_finished(),
        "a reader that does not read took all the output"
    );
    let mut out = Vec::new();
    tokio::time::timeout(SOON * 3, stdout.read_to_end(&mut out))
        .await
        .expect("all of stdout in time")
        .unwrap();
    let pong = server_side.await.unwrap();
    assert_eq!(&pong[..], b"still there?");
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), count + 1, "lines (the last one empty)");
    for (i, line) in lines[..count].iter().enumerate() {
        assert!(*line == payload(i).as_bytes(), "line {i} differs");
    }
    let status = tokio::time::timeout(SOON, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn rejected_handshake_exits_1_naming_the_status() {
    let server = TestServer::start(ServerOptions {
        reject: Some(403),
        ..Default::default()
    })
    .await;
    let out = run_with_stdin(&[&server.url("/private")], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("HTTP 403 Forbidden") && stderr.contains("go away: test rejection"),
        "{stderr}"
    );
}

#[tokio::test]
async fn refused_connection_exits_1_and_bad_usage_exits_2() {
    let port = free_port();
    let out = run_with_stdin(&[&format!("ws://127.0.0.1:{port}/")], b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("cannot connect to ws://127.0.0.1:{port}/")),
        "{}",
        text(&out.stderr)
    );
    let out = run_with_stdin(&["http://example.com/"], b"").await;
    assert_eq!(out.status.code(), Some(2));
    let out = run_with_stdin(&["ws://h/", "-H", "no colon"], b"").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Name: value"));
    // Too long to add to a deadline: refused as usage, not a panic at the first Close.
    let out = run_with_stdin(&["ws://h/", "--shutdown-timeout", "500000000000years"], b"").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at most 365 days"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn reconnect_survives_a_server_restart_and_keeps_delivering_stdin() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let mut child = connect_cmd(&[&url, "--reconnect", "--on-connect", "hello"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut conn = server.accept().await;
    assert_eq!(conn.recv_text().await, "hello");
    stdin.write_all(b"line 1\n").await.unwrap();
    assert_eq!(conn.recv_text().await, "line 1");

    let addr = server.stop();
    drop(conn);
    // Typed once the client knows the server is down: queued, sent after the reconnect and
    // on_connect. (A line typed in the instant the peer vanishes can go to the dying socket
    // and be lost: WebSocket has no acknowledgements. The README says so.)
    let mut log = RecordReader::new(child.stderr.take().unwrap());
    loop {
        let line = log.next_line().await.expect("stderr open");
        if line.contains("lost") || line.contains("peer closed") {
            break;
        }
    }
    stdin.write_all(b"line 2\n").await.unwrap();
    // Still down after the line was typed: an attempt failed since.
    loop {
        let line = log.next_line().await.expect("stderr open");
        if line.contains("cannot connect") {
            break;
        }
    }
    let mut server = TestServer::start_on(addr, ServerOptions::default()).await;
    let mut conn = server.accept().await;
    assert_eq!(conn.recv_text().await, "hello");
    assert_eq!(conn.recv_text().await, "line 2");
    stdin.write_all(b"line 3\n").await.unwrap();
    assert_eq!(conn.recv_text().await, "line 3");

    // EOF: Close 1000 and exit 0.
    drop(stdin);
    match conn.recv().await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected Close, got {other:?}"),
    }
    drop(conn);
    let status = tokio::time::timeout(SOON, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn ndjson_mode_writes_records_and_reads_inbound_lines() {
    let (addr, _) = TestServer::start(ServerOptions::default()).await.echo();
    let input = b"{\"type\":\"text\",\"data\":\"t\"}\n{\"type\":\"binary\",\"data\":\"AAEC\"}\nnot json\n{\"type\":\"json\",\"data\":{\"a\":1}}\n";
    let out = run_with_stdin(&["--ndjson", &format!("ws://{addr}/")], input).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<_> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["open", "text", "binary", "text", "close"]);
    assert_eq!(records[1]["data"], "t");
    assert_eq!(records[2]["data"], "AAEC");
    assert_eq!(records[3]["data"], "{\"a\":1}");
    assert_eq!(records[3]["seq"], 3);
    assert!(
        text(&out.stderr).contains("stdin line 3 skipped"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_peer_that_keeps_the_socket_open_after_its_close_does_not_hang_us() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let child = connect_cmd(&[&url, "-U", "--shutdown-timeout", "500ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    conn.send_close(1000, "").await;
    // `conn` is kept and never read again: the TCP connection stays open.
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("exit despite the open socket")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    drop(conn);
}

/// VmRSS of a running process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS").expect("VmRSS in /proc/PID/status")
}

/// Bytes that connect's stdin thread (`wsbridge-stdin`) has read: its `rchar`, as that thread
/// reads nothing but stdin. 0 until the thread exists.
fn stdin_bytes_read(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|task| task.path())
        .find(|path| {
            std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "wsbridge-stdin")
        })
        .and_then(|path| std::fs::read_to_string(path.join("io")).ok())
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("rchar:")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until connect's stdin thread has read `bytes` in all.
async fn wait_stdin_read(pid: u32, bytes: u64) {
    let what = format!("connect reading {bytes} bytes of stdin");
    wait_until(EVENTUALLY, &what, || async move {
        let read = stdin_bytes_read(pid);
        (read >= bytes).then_some(()).ok_or(format!("{read} read"))
    })
    .await
}

#[tokio::test]
async fn lines_trickling_in_while_reconnecting_are_queued_without_pinning_read_buffers() {
    // Nothing listens: the lines wait in the send queue (1,024) while it retries.
    let url = format!("ws://127.0.0.1:{}/", free_port());
    let mut child = connect_cmd(&[&url, "--reconnect", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"warm-up\n").await.unwrap();
    let mut written = "warm-up\n".len() as u64;
    wait_stdin_read(pid, written).await;
    let before = rss_kib(pid);
    // One short line per read: were each kept in its own 64 KiB read buffer, 1,000 of them
    // would hold ~64 MiB.
    for i in 0..1000 {
        let line = format!("line {i}\n");
        stdin.write_all(line.as_bytes()).await.unwrap();
        written += line.len() as u64;
        // Pacing, not a condition: one line per read is what the test is about.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait_stdin_read(pid, written).await;
    let after = rss_kib(pid);
    eprintln!("FIGURES trickle: VmRSS {before} -> {after} KiB over 1,000 queued lines");
    assert!(
        after < before + 16 * 1024,
        "1,000 queued lines grew VmRSS from {before} to {after} KiB"
    );
    drop(stdin);
    let _ = child.kill().await;
}

#[tokio::test]
async fn sending_keeps_reading_so_a_server_that_writes_before_it_reads_gets_everything() {
    // The server writes 32 MB before it reads anything, while stdin brings 32 MB to send: far
    // more than loopback buffers hold either way. A client that stopped reading while its own
    // writes waited would wait for a server that waits for it, for good.
    const EACH_WAY: usize = 250_000;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let line = format!("{}\n", "x".repeat(127));
    let mut child = spawn_connect(&[&url]);
    let mut stdin = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        let chunk = line.repeat(1000);
        for _ in 0..EACH_WAY / 1000 {
            stdin.write_all(chunk.as_bytes()).await?;
        }
        std::io::Result::Ok(())
    });
    let mut conn = server.accept().await;
    let peer = tokio::spawn(async move {
        let message = Message::text("y".repeat(127));
        for _ in 0..EACH_WAY {
            conn.ws.feed(message.clone()).await?;
        }
        conn.ws.flush().await?;
        let mut received = 0usize;
        while let Some(message) = conn.ws.next().await {
            if message?.is_text() {
                received += 1;
            }
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(received)
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let written = tokio::time::timeout(Duration::from_secs(60), async {
        let mut lines = 0usize;
        let mut buf = String::new();
        while stdout.read_line(&mut buf).await.unwrap() > 0 {
            lines += 1;
            buf.clear();
        }
        lines
    })
    .await
    .expect("both directions finish (a client that stops reading while it writes never does)");
    feeder.await.unwrap().unwrap();
    let received = peer.await.unwrap().unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(written, EACH_WAY, "messages from the server on stdout");
    assert_eq!(received, EACH_WAY, "stdin lines the server received");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

/// Sends SIGTERM to a child with kill(1).
fn terminate(child: &tokio::process::Child) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().expect("running").to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn send_only_with_a_refused_connection_exits_1_naming_the_error() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let out = run_with_stdin(&[&url, "--send-only"], b"hi\n").await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("cannot connect to {url}")),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn send_only_exits_on_the_peers_close() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    // stdin stays open: only the peer's Close can end it.
    let mut child = spawn_connect(&[&url, "--send-only"]);
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"hi\n").await.unwrap();
    let mut conn = server.accept().await;
    assert_eq!(conn.recv_text().await, "hi");
    conn.send_close(1000, "done").await;
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("connect --send-only exits after the peer's Close")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    drop((input, conn));
}

#[tokio::test]
async fn send_only_sigterm_closes_within_the_shutdown_timeout_without_blaming_stdout() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let mut child = spawn_connect(&[&url, "--send-only", "--shutdown-timeout", "1s"]);
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"hi\n").await.unwrap();
    let mut conn = server.accept().await;
    assert_eq!(conn.recv_text().await, "hi");
    terminate(&child);
    // Our Close arrives; the server does not answer it, so the client waits the whole
    // --shutdown-timeout for the answer and then exits: once, not twice, and cleanly.
    match conn.recv().await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected Close 1000, got {other:?}"),
    }
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("connect --send-only exits after SIGTERM")
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("stdout"), "stderr: {stderr}");
    drop((input, conn));
}

#[test]
fn help_examples_are_commands_and_comments_at_any_width() {
    for columns in ["80", "100", "200"] {
        let out = run_ok(
            std::process::Command::new(bin())
                .args(["connect", "--help"])
                .env("COLUMNS", columns),
        );
        let help = String::from_utf8_lossy(&out.stdout);
        let examples = help
            .split_once("Examples:\n")
            .unwrap_or_else(|| panic!("no examples:\n{help}"))
            .1;
        for line in examples
            .lines()
            .take_while(|l| !l.starts_with("At stdin EOF"))
        {
            // A wrapped comment would start a line with its next word: a command to a shell.
            assert!(
                line.is_empty()
                    || line.starts_with("  # ")
                    || line.starts_with("  wsbridge ")
                    || line.starts_with("  echo "),
                "COLUMNS={columns}: {line:?} in\n{examples}"
            );
        }
    }
}
