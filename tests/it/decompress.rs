//! `decompress` against a real server sending compressed binary messages: gzip, zlib and
//! raw deflate arrive as the original text, binary stays binary, and a zip bomb is an error
//! record with the daemon's memory flat while the connection goes on.

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn config(url: &str, extra: &str) -> String {
    TestConfig::feed_to_stdout(url, extra)
        .shutdown_timeout("2s")
        .to_string()
}

fn gzip(data: &[u8], level: Compression) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), level);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn send_binary(conn: &mut Conn, data: Vec<u8>) {
    conn.ws
        .send(Message::Binary(Bytes::from(data)))
        .await
        .expect("server send");
}

async fn next_data(daemon: &mut Daemon) -> serde_json::Value {
    daemon
        .record_where("data", |r| is_data(r) || r["type"] == "error")
        .await
}

#[tokio::test]
async fn gzip_zlib_and_deflate_payloads_arrive_as_the_original_text() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start(&config(&server.url("/"), r#"decompress = "auto""#)).await;
    let mut conn = server.accept().await;
    let text = r#"{"ch":"market.btcusdt.trade.detail","tick":{"price":67000.5}}"#;
    send_binary(&mut conn, gzip(text.as_bytes(), Compression::default())).await;
    send_binary(&mut conn, zlib(text.as_bytes())).await;
    send_binary(&mut conn, deflate(text.as_bytes())).await;
    let not_utf8 = [0xff, 0x00, 0xfe, 0x01];
    send_binary(&mut conn, gzip(&not_utf8, Compression::default())).await;
    for seq in 1..=3 {
        let record = next_data(&mut daemon).await;
        assert_eq!(record["type"], "text", "{record}");
        assert_eq!(record["data"], text);
        assert_eq!(record["seq"], seq);
    }
    let record = next_data(&mut daemon).await;
    assert_eq!(record["type"], "binary", "{record}");
    let expected = base64::engine::general_purpose::STANDARD.encode(not_utf8);
    assert_eq!(record["data"], expected.as_str());
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn a_zip_bomb_is_an_error_record_memory_stays_flat_and_the_feed_goes_on() {
    // 1 GiB of zeros in about 1 MiB: 64 gzip members of 16 MiB each.
    let member = gzip(&vec![0u8; 16 << 20], Compression::best());
    let bomb = member.repeat(64);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let mut server = TestServer::start(ServerOptions::default()).await;
    let extra = r#"decompress = "gzip"
max_message_size = "2MiB""#;
    let mut daemon = Daemon::start(&config(&server.url("/"), extra)).await;
    let pid = daemon.child.id().unwrap();
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    // Watch the daemon's anonymous memory while it takes the bomb.
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(proc_status_kib(pid, "RssAnon").unwrap_or(0));
            tokio::select! {
                _ = &mut stop => return peak,
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    });
    send_binary(&mut conn, bomb).await;
    send_binary(&mut conn, gzip(b"after the bomb", Compression::default())).await;
    let error = next_data(&mut daemon).await;
    assert_eq!(error["type"], "error", "{error}");
    let text = error["error"].as_str().unwrap();
    assert!(
        text.contains("inflates to more than max_message_size (2097152 bytes); it was dropped"),
        "{text}"
    );
    assert!(error.get("retry_in_ms").is_none(), "no reconnect: {error}");
    let next = next_data(&mut daemon).await;
    assert_eq!(next["data"], "after the bomb");
    assert_eq!(next["seq"], 1, "the bomb took no seq");
    let _ = stop_tx.send(());
    let peak_kib = watcher.await.unwrap();
    assert!(peak_kib > 0, "could not read RssAnon of {pid}");
    // Inflating is bounded to max_message_size: the 1 GiB never exists, not even in part.
    assert!(
        peak_kib < 48 << 10,
        "the daemon's RssAnon reached {peak_kib} KiB while inflating"
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn connect_prints_inflated_messages_with_decompress() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let child = tokio::process::Command::new(bin())
        .args(["connect", &server.url("/"), "-U", "--decompress", "gzip"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    send_binary(&mut conn, gzip(b"{\"p\":1}", Compression::default())).await;
    conn.send_close(1000, "").await;
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"p\":1}\n");
}
