//! `filter` on the real binary: the README's CSV recipe line for line, selection by a JSON
//! field with a runtime error that drops only its record (counted in /status), and a
//! program that does not compile reported by `check` at its line and column.

use std::net::SocketAddr;

use serde_json::Value;

use crate::common::*;

/// The upstream `feed` at `server`; the test adds its sinks.
fn config(server: &TestServer) -> TestConfig {
    TestConfig::new().upstream("feed", &server.url("/"), "")
}

/// A blocking tcp sink's keys, with `rest`.
fn tcp_sink(port: u16, rest: &str) -> String {
    format!("listen = \"127.0.0.1:{port}\"\non_slow = \"block\"\n{rest}")
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

#[tokio::test]
async fn csv_recipe_line_for_line() {
    let (csv_port, all_port) = (free_port(), free_port());
    let mut server = TestServer::start(ServerOptions::default()).await;
    let csv_filter = "format = \"raw\"\nfilter = '\"\\(.ts),\\(.data.price)\"'";
    let config = config(&server)
        .sink("tcp", &tcp_sink(csv_port, csv_filter))
        .sink("tcp", &tcp_sink(all_port, "events = false"));
    let mut daemon = Daemon::start(&config.to_string()).await;
    let mut csv = RecordReader::new(connect_tcp(addr(csv_port)).await);
    let mut all = RecordReader::new(connect_tcp(addr(all_port)).await);
    let mut conn = server.accept().await;
    let prices = ["1.5", "2", "30000.25", "null"];
    for price in prices {
        conn.send_text(&format!("{{\"symbol\":\"BTC-USD\",\"price\":{price}}}"))
            .await;
    }
    for price in prices {
        let record = all.next().await;
        let ts = record["ts"].as_u64().expect("ts");
        assert_eq!(csv.next_line().await, Some(format!("{ts},{price}")));
    }
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}

#[tokio::test]
async fn a_runtime_error_drops_only_its_record_and_counts() {
    let (port, metrics) = (free_port(), free_port());
    let mut server = TestServer::start(ServerOptions::default()).await;
    let filter = r#"filter = 'select(.data.symbol? == "BTC") | {seq, p: (.data.price + 1)}'"#;
    let config = config(&server)
        .metrics(metrics)
        .sink("tcp", &tcp_sink(port, filter));
    let mut daemon = Daemon::start(&config.to_string()).await;
    let mut reader = RecordReader::new(connect_tcp(addr(port)).await);
    let mut conn = server.accept().await;
    for message in [
        r#"{"symbol":"BTC","price":1}"#,
        r#"{"symbol":"ETH","price":2}"#,
        r#"{"symbol":"BTC","price":"three"}"#,
        "not JSON",
        r#"{"symbol":"BTC","price":4}"#,
    ] {
        conn.send_text(message).await;
    }
    // The open event has no `symbol`: not selected.
    assert_eq!(reader.next().await, serde_json::json!({"seq": 1, "p": 2}));
    assert_eq!(reader.next().await, serde_json::json!({"seq": 5, "p": 5}));
    daemon
        .wait_for_log("the sink's filter failed on a record")
        .await;
    let status: Value = serde_json::from_str(&http_get(metrics, "/status").await).unwrap();
    let sink = &status["sinks"][0];
    assert_eq!(sink["filter_errors"], 1, "{status}");
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}

#[test]
fn check_reports_a_program_that_does_not_compile_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n\n[[sink]]\ntype = \"stdout\"\nfilter = 'select(.data.x ==) | .ts'\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Line 7; the `)` where a term was expected is column 18 of the program, 28 of the line.
    assert!(
        stderr.contains(":7:28: sink[0].filter: the jq program does not compile: expected term"),
        "{stderr}"
    );
}

#[tokio::test]
async fn recipe_csv() {
    let out = crate::recipes::run_recipe("csv-filter").await;
    assert_eq!(out, "BTC,0.5\nETH,2\nSOL,3\nBTC,0.7\nETH,5\nSOL,1.5\n");
}
