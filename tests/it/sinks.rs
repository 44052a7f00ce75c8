//! Sinks of `wsbridge run` on real sockets: every sink type gets every message exactly and
//! in order, fan-out to several clients, slow clients, inbound lines.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Reads records from a sink client until `n` data records arrived.
async fn data_records<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut RecordReader<R>,
    n: usize,
) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = reader.next().await;
        if is_data(&r) {
            out.push(r);
        }
    }
    out
}

#[tokio::test]
async fn text_and_binary_reach_every_sink_type_exactly_and_in_order() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("feed.sock");
    let (tcp, raw_tcp) = (free_port(), free_port());
    let config = format!(
        r#"
[[upstream]]
name = "feed"
url = "{url}"

[[sink]]
type = "stdout"

[[sink]]
type = "unix"
path = "{sock}"
mode = "0640"

[[sink]]
type = "tcp"
listen = "127.0.0.1:{tcp}"

[[sink]]
type = "tcp"
listen = "127.0.0.1:{raw_tcp}"
format = "raw"
"#,
        url = server.url("/"),
        sock = sock.display()
    );
    let mut daemon = Daemon::start_in(dir, &config).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");

    let mode = std::fs::metadata(&sock).unwrap();
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o777, 0o640);

    let mut unix = RecordReader::new(connect_unix(&sock).await);
    let mut tcp_reader = RecordReader::new(connect_tcp(([127, 0, 0, 1], tcp).into()).await);
    let mut raw = RecordReader::new(connect_tcp(([127, 0, 0, 1], raw_tcp).into()).await);
    // Clients connect asynchronously: wait until the sinks have registered them.
    daemon.wait_for_log("client connected").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let mut sent: Vec<Message> = vec![
        Message::text("plain"),
        Message::binary(binary.clone()),
        Message::text("two\nlines \"quoted\" é ✓"),
        Message::binary(Vec::new()),
        Message::text(""),
    ];
    for i in 0..200 {
        sent.push(Message::text(format!("{{\"i\":{i}}}")));
    }
    for m in &sent {
        conn.ws.send(m.clone()).await.unwrap();
    }

    let expect = |records: &[Value]| {
        for (i, (record, message)) in records.iter().zip(&sent).enumerate() {
            assert_eq!(record["seq"].as_u64(), Some(i as u64 + 1), "{record}");
            assert_eq!(record["upstream"], "feed");
            match message {
                Message::Text(t) => {
                    assert_eq!(record["type"], "text");
                    assert_eq!(record["data"].as_str(), Some(t.as_str()));
                }
                Message::Binary(b) => {
                    assert_eq!(record["type"], "binary");
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(record["data"].as_str().unwrap())
                        .unwrap();
                    assert_eq!(decoded, b.to_vec());
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(records.len(), sent.len());
    };
    let mut stdout_records = Vec::new();
    while stdout_records.len() < sent.len() {
        let r = daemon.next_record().await;
        if is_data(&r) {
            stdout_records.push(r);
        }
    }
    expect(&stdout_records);
    expect(&data_records(&mut unix, sent.len()).await);
    expect(&data_records(&mut tcp_reader, sent.len()).await);

    // Raw: payload lines only; text with a newline as its JSON string, binary as base64.
    let mut raw_lines = Vec::new();
    for _ in 0..sent.len() {
        raw_lines.push(raw.next_line().await.unwrap());
    }
    assert_eq!(raw_lines[0], "plain");
    assert_eq!(
        raw_lines[1],
        base64::engine::general_purpose::STANDARD.encode(&binary)
    );
    assert_eq!(
        raw_lines[2],
        serde_json::to_string("two\nlines \"quoted\" é ✓").unwrap()
    );
    assert_eq!(raw_lines[3], "");
    assert_eq!(raw_lines[4], "");
    assert_eq!(raw_lines[5], "{\"i\":0}");
    assert_eq!(raw_lines[204], "{\"i\":199}");

    daemon.signal(15);
    assert!(daemon.wait().await.success());
    assert!(!sock.exists(), "the socket file must be removed on exit");
}

#[tokio::test]
async fn two_tcp_clients_both_get_every_record() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let config = format!(
        "[[upstream]]\nname = \"feed\"\nurl = \"{}\"\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\n",
        server.url("/")
    );
    let daemon = Daemon::start(&config).await;
    let mut conn = server.accept().await;
    let mut a = RecordReader::new(connect_tcp(([127, 0, 0, 1], port).into()).await);
    let mut b = RecordReader::new(connect_tcp(([127, 0, 0, 1], port).into()).await);
    daemon.wait_for_log("id=2").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..1000 {
        conn.send_text(&format!("m{i}")).await;
    }
    for reader in [&mut a, &mut b] {
        let records = data_records(reader, 1000).await;
        let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        assert_eq!(records[999]["data"], "m999");
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_and_the_other_misses_nothing() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let config = format!(
        r#"
[[upstream]]
name = "feed"
url = "{}"
[[sink]]
type = "tcp"
listen = "127.0.0.1:{port}"
buffer = 1024
on_slow = "disconnect"
"#,
        server.url("/")
    );
    let daemon = Daemon::start(&config).await;
    let mut conn = server.accept().await;
    let stalled = connect_tcp(([127, 0, 0, 1], port).into()).await;
    let mut reader = RecordReader::new(connect_tcp(([127, 0, 0, 1], port).into()).await);
    daemon.wait_for_log("id=2").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Far more than the stalled client's socket buffers and queue can hold (~30 MB), paced
    // so that a reading client keeps up even on a loaded machine: a reader slower than the
    // feed would rightly be disconnected too.
    let total = 30_000u64;
    let payload = "x".repeat(1000);
    let sender = tokio::spawn(async move {
        for i in 0..total {
            conn.send_text(&format!("{i}:{payload}")).await;
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        conn
    });
    // Read cheaply (no JSON parse per line in this debug-built test): the reader must keep
    // up with the feed, or it would rightly be disconnected as well.
    let mut expected = 1;
    while expected <= total {
        let line = reader
            .next_line()
            .await
            .expect("the reading client stays connected");
        if let Some(rest) = line.split("\"seq\":").nth(1) {
            let seq: u64 = rest.split(',').next().unwrap().parse().unwrap();
            assert_eq!(seq, expected, "gap in seq");
            expected += 1;
        }
    }
    let _conn = sender.await.unwrap();
    daemon
        .wait_for_log("disconnecting a client that is too slow")
        .await;

    // The stalled client was cut off: reading it now ends (EOF or reset) before the total.
    let mut stalled = RecordReader::new(stalled);
    let mut received = 0u64;
    while tokio::time::timeout(SOON, stalled.next_line_or_end())
        .await
        .expect("the stalled client must be closed")
        .is_some()
    {
        received += 1;
    }
    assert!(
        received < total,
        "the stalled client got all {received} records"
    );
}

#[tokio::test]
async fn inbound_lines_reach_the_server_and_bad_lines_get_an_error_on_that_client_only() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("in.sock");
    let config = format!(
        "[[upstream]]\nname = \"feed\"\nurl = \"{}\"\n[[sink]]\ntype = \"unix\"\npath = \"{}\"\n",
        server.url("/"),
        sock.display()
    );
    let daemon = Daemon::start_in(dir, &config).await;
    let mut conn = server.accept().await;
    let (read_half, mut writer) = connect_unix(&sock).await.into_split();
    let mut reader = RecordReader::new(read_half);
    let mut bystander = RecordReader::new(connect_unix(&sock).await);
    daemon.wait_for_log("id=2").await;

    writer
        .write_all(b"{\"type\":\"text\",\"data\":\"hello\"}\n")
        .await
        .unwrap();
    assert_eq!(conn.recv_text().await, "hello");

    writer.write_all(b"this is not json\n").await.unwrap();
    let error = reader.record_where(|r| r["type"] == "error").await;
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("not an inbound record"),
        "{error}"
    );

    writer
        .write_all(b"{\"upstream\":\"feed\",\"type\":\"binary\",\"data\":\"AAEC/w==\"}\n")
        .await
        .unwrap();
    assert_eq!(conn.recv().await, Message::binary(vec![0u8, 1, 2, 255]));
    writer
        .write_all(b"{\"type\":\"json\",\"data\":{\"op\":\"ping\",\"n\":[1,2]}}\n")
        .await
        .unwrap();
    assert_eq!(conn.recv_text().await, r#"{"op":"ping","n":[1,2]}"#);
    writer
        .write_all(b"{\"upstream\":\"other\",\"type\":\"text\",\"data\":\"x\"}\n")
        .await
        .unwrap();
    let error = reader.record_where(|r| r["type"] == "error").await;
    assert!(
        error["error"].as_str().unwrap().contains("\"other\""),
        "{error}"
    );

    // The bystander saw data only, none of the other client's errors.
    conn.send_text("after").await;
    let seen = bystander.record_where(is_data).await;
    assert_eq!(seen["data"], "after");
    let mine = reader.record_where(is_data).await;
    assert_eq!(mine["data"], "after");
}
