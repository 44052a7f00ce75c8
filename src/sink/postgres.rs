//! The `postgres` sink: each record a row of a PostgreSQL table (`table`, created when
//! missing), a round of records written with one `COPY` and one transaction.
//!
//! The table's columns are `upstream text, run text, seq bigint, ts timestamptz, type text,
//! data jsonb`: `run` is this daemon's run ID (random per process start, the same across
//! reloads: `seq` starts again at 1 at each start), `data` is a JSON text message as its
//! JSON, other text as a JSON string, the base64 string for binary, the parsed message for
//! `json`, and for the events (`open`, `close`, `error`, `gap`), rows with `seq` null, the
//! whole record.
//!
//! Exactly once in the table, across server restarts and lost replies: a unique index on
//! `(upstream, run, seq)`, and each round copied into a temporary staging table and moved
//! with `INSERT … SELECT … ON CONFLICT DO NOTHING` in the same transaction. A round sent again
//! after its commit's reply was lost (the server killed just after committing) inserts
//! nothing the second time; events (`seq` null, which a unique index does not compare) are
//! skipped when the same event row is there already.
//!
//! No TLS: the client connects in plain text (`sslmode=disable`); reach a remote server
//! through a tunnel or a local socket proxy.

pub mod settings;

use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};
use tracing::debug;

use super::broker::{Ack, BrokerError, Publisher};
use super::Encoded;
pub use settings::PostgresConfig;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one round (its COPY and its commit) may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// The temporary table each round is copied into (one per connection, emptied at commit).
const STAGING: &str = "pg_temp.wsbridge_staging";

/// This daemon's run: `seq` starts again at each start, so rows of different runs differ
/// by it.
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// A round: its runs, and their rows in COPY's text format, made at the first attempt.
pub struct PostgresRound {
    runs: Vec<Encoded>,
    rows: Option<Bytes>,
}

/// Writes rows to one table of one server.
pub struct PostgresPublisher {
    config: Arc<PostgresConfig>,
    client_config: tokio_postgres::Config,
    client: Option<Client>,
    /// `INSERT … SELECT … ON CONFLICT DO NOTHING; COMMIT` from the staging table.
    insert: String,
}

impl PostgresPublisher {
    /// A publisher for `config`; fails if the URL is not one the client takes.
    pub fn new(config: Arc<PostgresConfig>) -> Result<PostgresPublisher, BrokerError> {
        let mut client_config: tokio_postgres::Config =
            config.url.as_str().parse().map_err(|_| BrokerError::Connect {
                server: config.display_url(),
                reason: "not a connection URL the postgres client takes; write it like postgres://user@127.0.0.1:5432/db".into(),
            })?;
        client_config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("wsbridge")
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        let table = config.quoted_table();
        let insert = format!(
            "INSERT INTO {table} (upstream, run, seq, ts, type, data) \
             SELECT s.upstream, s.run, s.seq, to_timestamp(s.ts / 1000.0), s.type, s.data::jsonb \
             FROM {STAGING} s \
             WHERE s.seq IS NOT NULL OR NOT EXISTS (\
               SELECT 1 FROM {table} t WHERE t.upstream = s.upstream AND t.run = s.run \
               AND t.seq IS NULL AND t.ts = to_timestamp(s.ts / 1000.0) AND t.type = s.type \
               AND t.data = s.data::jsonb) \
             ORDER BY s.n \
             ON CONFLICT DO NOTHING; COMMIT"
        );
        Ok(PostgresPublisher {
            config,
            client_config,
            client: None,
            insert,
        })
    }

    fn lost(&self, reason: impl std::fmt::Display) -> BrokerError {
        BrokerError::Lost {
            server: self.server(),
            reason: reason.to_string(),
        }
    }

    /// The table, its unique index and this connection's staging table, when missing.
    fn setup(&self) -> String {
        let table = self.config.quoted_table();
        let base = self.config.table.rsplit('.').next().unwrap_or("wsbridge");
        let index = format!("\"{}_once\"", &base[..base.len().min(58)]);
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (upstream text NOT NULL, run text NOT NULL, \
             seq bigint, ts timestamptz NOT NULL, type text NOT NULL, data jsonb); \
             CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} (upstream, run, seq); \
             CREATE TEMP TABLE IF NOT EXISTS wsbridge_staging (n bigint, upstream text, \
             run text, seq bigint, ts bigint, type text, data text) ON COMMIT DELETE ROWS"
        )
    }

    /// One transaction: the rows into the staging table, then into the table.
    async fn write(&self, client: &Client, rows: Bytes) -> Result<(), tokio_postgres::Error> {
        client.batch_execute("BEGIN").await?;
        let copy = format!("COPY {STAGING} (n, upstream, run, seq, ts, type, data) FROM STDIN");
        let mut sink = pin!(client.copy_in::<_, Bytes>(copy.as_str()).await?);
        sink.send(rows).await?;
        sink.as_mut().finish().await?;
        client.batch_execute(&self.insert).await
    }
}

impl Publisher for PostgresPublisher {
    type Round = PostgresRound;

    fn server(&self) -> String {
        self.config.display_url()
    }

    fn round(&mut self, runs: Vec<Encoded>) -> PostgresRound {
        PostgresRound { runs, rows: None }
    }

    fn runs(round: &PostgresRound) -> &[Encoded] {
        &round.runs
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.client = None;
        let connect = |reason: String| BrokerError::Connect {
            server: self.server(),
            reason,
        };
        let (client, connection) = self
            .client_config
            .connect(NoTls)
            .await
            .map_err(|e| connect(error_text(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!("postgres connection ended: {e}");
            }
        });
        let setup = self.setup();
        match tokio::time::timeout(ROUND_TIMEOUT, client.batch_execute(&setup)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(connect(format!("cannot create the table {} or its unique index: {}; check the user's rights and that an existing table has the columns upstream, run, seq, ts, type and data", self.config.table, error_text(&e)))),
            Err(_) => return Err(connect("no answer to creating the table in time".into())),
        }
        self.client = Some(client);
        Ok(())
    }

    /// The round's transaction, and its commit's reply before returning: an error leaves
    /// the round to be sent again on a new connection, which the unique key makes harmless.
    async fn send(&mut self, round: &mut PostgresRound) -> Result<Ack, BrokerError> {
        let rows = round.rows.get_or_insert_with(|| rows(&round.runs)).clone();
        let Some(client) = self.client.as_ref() else {
            return Err(self.lost("not connected"));
        };
        if !rows.is_empty() {
            match tokio::time::timeout(ROUND_TIMEOUT, self.write(client, rows)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.as_db_error().is_some() && !e.is_closed() => {
                    return Err(BrokerError::Refused {
                        server: self.server(),
                        reason: format!(
                            "{}; check that the table {} has the columns upstream, run, seq, ts, type and data",
                            error_text(&e),
                            self.config.table
                        ),
                    })
                }
                Ok(Err(e)) => return Err(self.lost(error_text(&e))),
                Err(_) => return Err(self.lost(format!("no answer within {ROUND_TIMEOUT:?}"))),
            }
        }
        Ok(super::broker::all_stored(std::future::ready(Ok(()))))
    }

    fn disconnect(&mut self) {
        // Dropping the client closes the connection; the server rolls back what was open.
        self.client = None;
    }
}

/// The client's error with the server's message (its `Display` alone says "db error").
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The rows of `runs` in COPY's text format: `n, upstream, run, seq, ts, type, data`.
fn rows(runs: &[Encoded]) -> Bytes {
    let mut out = BytesMut::new();
    let mut n = 0u64;
    for run in runs {
        for record in run.records() {
            // Notices (drop reports for a socket's reader) are not records.
            let Some(upstream) = record.upstream else {
                continue;
            };
            let (kind, data) = columns(record.line);
            n += 1;
            out.put_slice(n.to_string().as_bytes());
            out.put_u8(b'\t');
            escape(&mut out, upstream);
            out.put_u8(b'\t');
            out.put_slice(run_id().as_bytes());
            out.put_u8(b'\t');
            match record.seq {
                Some(seq) => out.put_slice(seq.to_string().as_bytes()),
                None => out.put_slice(b"\\N"),
            }
            out.put_u8(b'\t');
            out.put_slice(record.ts.to_string().as_bytes());
            out.put_u8(b'\t');
            escape(&mut out, &kind);
            out.put_u8(b'\t');
            escape(&mut out, &data);
            out.put_u8(b'\n');
        }
    }
    out.freeze()
}

/// `text` as a field of COPY's text format.
fn escape(out: &mut BytesMut, text: &str) {
    for b in text.bytes() {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            // PostgreSQL text cannot hold NUL.
            0 => out.put_slice("\u{fffd}".as_bytes()),
            b => out.put_u8(b),
        }
    }
}

/// The `type` and `data` columns of a record's line(s): for data records the message (a JSON
/// text as its JSON, other text as a string, binary as its base64 string), for events and
/// lines that are not envelopes (a `filter`'s output) the whole line; several lines (a
/// `filter` that made more than one) as an array. `data` is always JSON PostgreSQL takes.
fn columns(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let mut values: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_string())))
        .collect();
    let (kind, mut data) = match values.len() {
        1 => {
            let value = values.remove(0);
            envelope(value)
        }
        _ => {
            let kind = values
                .first()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("json")
                .to_string();
            (kind, Value::Array(values))
        }
    };
    let mut json = data.to_string();
    // jsonb refuses the NUL character; JSON escapes it as \u0000.
    if json.contains("\\u0000") {
        strip_nul(&mut data);
        json = data.to_string();
    }
    (kind, json)
}

/// The type and data of one parsed line.
fn envelope(value: Value) -> (String, Value) {
    let Value::Object(mut fields) = value else {
        return ("json".into(), value);
    };
    let kind = match fields.get("type").and_then(Value::as_str) {
        Some(kind) => kind.to_string(),
        None => return ("json".into(), Value::Object(fields)),
    };
    let data = match (kind.as_str(), fields.remove("data")) {
        ("text", Some(Value::String(text))) => {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        ("binary" | "json", Some(data)) => data,
        (_, data) => {
            if let Some(data) = data {
                fields.insert("data".into(), data);
            }
            Value::Object(fields)
        }
    };
    (kind, data)
}

/// Replaces NUL characters in every string and key with U+FFFD.
fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(fields) => {
            let owned = std::mem::take(fields);
            for (key, mut v) in owned {
                strip_nul(&mut v);
                fields.insert(key.replace('\0', "\u{fffd}"), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(line: &str) -> (String, String) {
        columns(line.as_bytes())
    }

    #[test]
    fn data_is_the_message_as_json() {
        assert_eq!(
            cols(r#"{"upstream":"a","seq":1,"ts":5,"type":"text","data":"{\"p\":1.5}"}"#),
            ("text".into(), r#"{"p":1.5}"#.into())
        );
        assert_eq!(
            cols(r#"{"upstream":"a","seq":1,"ts":5,"type":"text","data":"hello"}"#),
            ("text".into(), r#""hello""#.into())
        );
        assert_eq!(
            cols(r#"{"upstream":"a","seq":1,"ts":5,"type":"binary","data":"AAEC/w=="}"#),
            ("binary".into(), r#""AAEC/w==""#.into())
        );
        assert_eq!(
            cols(r#"{"upstream":"a","seq":1,"ts":5,"type":"json","data":{"p":[1,2]}}"#),
            ("json".into(), r#"{"p":[1,2]}"#.into())
        );
    }

    #[test]
    fn events_are_the_whole_record() {
        let line = r#"{"upstream":"a","ts":5,"type":"gap","expected":3,"got":5}"#;
        assert_eq!(cols(line), ("gap".into(), line.into()));
    }

    #[test]
    fn what_jsonb_refuses_is_made_safe() {
        // A NUL in the text, a number beyond f64: still JSON the server takes.
        let (_, data) = cols(r#"{"upstream":"a","seq":1,"ts":5,"type":"text","data":"a\u0000b"}"#);
        assert_eq!(data, "\"a\u{fffd}b\"");
        let (_, data) = cols(r#"{"upstream":"a","seq":1,"ts":5,"type":"text","data":"1e999"}"#);
        assert_eq!(data, r#""1e999""#);
    }

    #[test]
    fn copy_fields_are_escaped() {
        let mut out = BytesMut::new();
        escape(&mut out, "a\tb\\c\nd\re");
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd\\re");
    }
}
