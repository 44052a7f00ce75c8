//! `packaging/grafana/wsbridge.json` queries only metrics the daemon exports: a daemon with
//! every kind of figure (an upstream with `sequence` and `event_time` whose Pings are
//! answered, a tcp sink, and a nats sink pointed at a closed port so its broker figures
//! exist without a server) is scraped, and every `wsbridge_…` name in a panel's query must
//! be among the scraped ones, both with the `_bucket`/`_sum`/`_count` and `_total` suffixes
//! stripped as Prometheus does. The `[cluster]` panels are checked apart, against a daemon
//! holding a lease in a real `nats-server -js`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde_json::Value;

use crate::brokers::nats_server;
use crate::common::*;

/// A metric's family name: its suffixes stripped as Prometheus does.
fn family(name: &str) -> String {
    let name = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    name.strip_suffix("_total").unwrap_or(name).to_string()
}

/// Every `wsbridge_…` identifier in `text`.
fn names(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("wsbridge_"))
}

fn queried(dashboard: &Value, out: &mut BTreeSet<String>) {
    match dashboard {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Value::String(q)) => {
                        out.extend(names(q).map(family))
                    }
                    _ => queried(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queried(v, out)),
        _ => {}
    }
}

/// The metric families the dashboard's panels query: those of `[cluster]`, and the others.
fn dashboard_families() -> (BTreeSet<String>, BTreeSet<String>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/wsbridge.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut wanted = BTreeSet::new();
    queried(&dashboard, &mut wanted);
    wanted
        .into_iter()
        .partition(|name| name.starts_with("wsbridge_cluster_"))
}

/// Scrapes `metrics` until every `wanted` family is exported (some figures come on their own
/// time: a Ping round trip, a broker's first failed connect, a lease), then fails naming
/// those that never were.
async fn assert_exported(metrics: u16, wanted: &BTreeSet<String>, daemon: &Daemon) {
    let deadline = tokio::time::Instant::now() + SOON;
    let exported = loop {
        let scraped = http_get(metrics, "/metrics").await;
        let exported: BTreeSet<String> = scraped
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(names)
            .map(family)
            .collect();
        if wanted.is_subset(&exported) || tokio::time::Instant::now() > deadline {
            break exported;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}\n{}",
        daemon.stderr()
    );
}

#[tokio::test]
async fn every_metric_a_panel_queries_is_one_the_daemon_exports() {
    let (_, wanted) = dashboard_families();
    assert!(wanted.len() > 20, "{wanted:?}");

    let mut server = TestServer::start(ServerOptions::default()).await;
    let (metrics, sink, nats) = (free_port(), free_port(), free_port());
    let url = server.url("/");
    let config = format!(
        r#"
[metrics]
listen = "127.0.0.1:{metrics}"

[[upstream]]
name = "book"
url = "{url}"
ping_interval = "100ms"
sequence = ".u"
event_time = ".E"

[[sink]]
type = "tcp"
listen = "127.0.0.1:{sink}"

[[sink]]
type = "nats"
url = "nats://127.0.0.1:{nats}"
subject = "feeds.{{upstream}}"
"#
    );
    let daemon = Daemon::start(&config).await;
    let mut conn = server.accept().await;
    let e = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    conn.send_text(&format!(r#"{{"u":1,"E":{e}}}"#)).await;
    conn.send_text(&format!(r#"{{"u":3,"E":{e}}}"#)).await;
    // Reading answers the daemon's Pings.
    tokio::spawn(async move { while conn.ws.next().await.is_some() {} });
    assert_exported(metrics, &wanted, &daemon).await;
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn every_cluster_metric_a_panel_queries_is_exported_by_a_lease_holder() {
    let (wanted, _) = dashboard_families();
    assert!(wanted.len() >= 5, "the cluster panels query {wanted:?}");

    let nats = nats_server().await;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let metrics = free_port();
    let url = server.url("/");
    let config = format!(
        r#"
[metrics]
listen = "127.0.0.1:{metrics}"

[cluster]
nats = "nats://127.0.0.1:{}"
bucket = "leases"
instance = "a"
lease_ttl = "2s"

[[upstream]]
name = "book"
url = "{url}"

[[sink]]
type = "stdout"
events = false
"#,
        nats.port
    );
    let daemon = Daemon::start(&config).await;
    // The upstream opens only once this instance holds its lease: then every figure exists.
    let _conn = server.accept().await;
    assert_exported(metrics, &wanted, &daemon).await;
}
