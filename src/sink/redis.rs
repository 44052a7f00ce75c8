//! The `redis` sink: each record an entry of a Redis stream (`stream`, with `{upstream}`),
//! added with `XADD … MAXLEN ~ maxlen`, a round of records in one pipeline.
//!
//! An entry has the fields `upstream`, `seq` (data records only), `ts`, `type` and `data`:
//! the text for `text`, the JSON for `json`, the base64 for `binary`, and for the events
//! (`open`, `close`, `error`) the whole NDJSON record.
//!
//! A retry never adds an entry twice: each record gets an explicit entry ID when it is
//! first sent, kept for every retry, strictly increasing per stream: `<ts>-<seq>`, or one
//! past the stream's last ID when that is not larger (a clock that went back, an event
//! without seq, a stream written before this start). Redis refuses an ID that is not above
//! its stream's last one, so an entry that was added before its reply was lost is refused
//! when sent again ("equal or smaller"), and that refusal counts as acknowledged. The last
//! ID of each stream is read from the server (`XINFO STREAM`) before the first entry.

pub mod settings;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult, Value};
use serde_json::value::RawValue;

use super::broker::settings::render;
use super::broker::{Ack, BrokerError, Publisher};
use super::Encoded;
pub use settings::RedisConfig;

/// How long connecting and a pipeline's replies may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A stream entry ID: milliseconds and a sequence number.
type EntryId = (u64, u64);

/// Runs with the entry ID of each record, assigned at the first attempt.
pub struct RedisRound {
    runs: Vec<Encoded>,
    ids: Vec<EntryId>,
}

/// Adds entries to one Redis server.
pub struct RedisPublisher {
    config: Arc<RedisConfig>,
    client: Client,
    connection: Option<MultiplexedConnection>,
    /// The last entry ID given out, per stream key.
    last: HashMap<String, EntryId>,
}

impl RedisPublisher {
    /// A publisher for `config`; fails if the URL is not one the client takes.
    pub fn new(config: Arc<RedisConfig>) -> Result<RedisPublisher, BrokerError> {
        let client = Client::open(config.url.as_str()).map_err(|e| BrokerError::Connect {
            server: config.display_url(),
            reason: format!("{e}; write the url like redis://host:6379/0"),
        })?;
        Ok(RedisPublisher {
            config,
            client,
            connection: None,
            last: HashMap::new(),
        })
    }

    fn lost(&self, reason: impl std::fmt::Display) -> BrokerError {
        BrokerError::Lost {
            server: self.server(),
            reason: reason.to_string(),
        }
    }

    /// The last ID of `key` as the server knows it ((0, 0) for a new stream).
    async fn last_id(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
    ) -> Result<EntryId, BrokerError> {
        let info: RedisResult<Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(conn)
            .await;
        match info {
            Ok(value) => Ok(last_generated(&value).unwrap_or((0, 0))),
            Err(e) if e.to_string().contains("no such key") => Ok((0, 0)),
            Err(e) => Err(self.lost(format!("cannot read the last ID of {key}: {e}"))),
        }
    }

    /// Gives every record of `round` its entry ID.
    async fn assign(
        &mut self,
        conn: &mut MultiplexedConnection,
        round: &mut RedisRound,
    ) -> Result<(), BrokerError> {
        let mut ids = Vec::new();
        for run in &round.runs {
            for record in run.records() {
                let Some(upstream) = record.upstream else {
                    ids.push((0, 0));
                    continue;
                };
                let key = render(&self.config.stream, upstream);
                let last = match self.last.get(&key) {
                    Some(last) => *last,
                    None => self.last_id(conn, &key).await?,
                };
                let wanted = (record.ts, record.seq.unwrap_or(0));
                let next = (last.0, last.1.saturating_add(1));
                let id = wanted.max(next);
                self.last.insert(key, id);
                ids.push(id);
            }
        }
        round.ids = ids;
        Ok(())
    }

    fn pipeline(&self, round: &RedisRound) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut ids = round.ids.iter();
        for run in &round.runs {
            for record in run.records() {
                let Some(&(ms, n)) = ids.next() else { break };
                let Some(upstream) = record.upstream else {
                    continue;
                };
                let line = record.line.strip_suffix(b"\n").unwrap_or(record.line);
                let (kind, data) = fields(line);
                let cmd = pipe.cmd("XADD").arg(render(&self.config.stream, upstream));
                if self.config.maxlen > 0 {
                    cmd.arg("MAXLEN").arg("~").arg(self.config.maxlen);
                }
                cmd.arg(format!("{ms}-{n}")).arg("upstream").arg(upstream);
                if let Some(seq) = record.seq {
                    cmd.arg("seq").arg(seq);
                }
                cmd.arg("ts")
                    .arg(record.ts)
                    .arg("type")
                    .arg(kind.as_ref())
                    .arg("data")
                    .arg(data.as_ref());
            }
        }
        pipe
    }
}

impl Publisher for RedisPublisher {
    type Round = RedisRound;

    fn server(&self) -> String {
        self.config.display_url()
    }

    fn round(&mut self, runs: Vec<Encoded>) -> RedisRound {
        RedisRound {
            runs,
            ids: Vec::new(),
        }
    }

    fn runs(round: &RedisRound) -> &[Encoded] {
        &round.runs
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.connection = None;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| BrokerError::Connect {
                server: self.server(),
                reason: e.to_string(),
            })?;
        self.connection = Some(connection);
        Ok(())
    }

    /// One pipeline, and its replies before returning: pipelines sent while another is
    /// unanswered could reach the server in another order, and an entry refused for a
    /// smaller ID would then count as added.
    async fn send(&mut self, round: &mut RedisRound) -> Result<Ack, BrokerError> {
        let Some(mut conn) = self.connection.clone() else {
            return Err(self.lost("not connected"));
        };
        if round.ids.is_empty() {
            self.assign(&mut conn, round).await?;
        }
        let replies: Vec<RedisResult<Value>> = self
            .pipeline(round)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.lost(e))?;
        for reply in replies {
            match reply {
                Ok(_) => {}
                // Added before, by an attempt whose reply was lost.
                Err(e) if e.to_string().contains("equal or smaller") => {}
                Err(e) => {
                    return Err(BrokerError::Refused {
                        server: self.server(),
                        reason: format!("{e}; check that the stream key holds a stream and that the server has memory left"),
                    })
                }
            }
        }
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    fn disconnect(&mut self) {
        self.connection = None;
    }
}

/// The `type` and `data` of an NDJSON record: the payload for data records (text
/// unescaped), the whole record for events.
fn fields(line: &[u8]) -> (Cow<'_, str>, Cow<'_, [u8]>) {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(line) else {
        return (Cow::Borrowed("text"), Cow::Borrowed(line));
    };
    let data = match (envelope.kind.as_ref(), envelope.data) {
        ("text" | "binary", Some(raw)) => match serde_json::from_str::<Cow<'_, str>>(raw.get()) {
            Ok(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
            Ok(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
            Err(_) => Cow::Borrowed(raw.get().as_bytes()),
        },
        (_, Some(raw)) => Cow::Borrowed(raw.get().as_bytes()),
        (_, None) => Cow::Borrowed(line),
    };
    (envelope.kind, data)
}

/// `last-generated-id` from an `XINFO STREAM` reply (a map, or a flat list in RESP2).
fn last_generated(info: &Value) -> Option<EntryId> {
    let pairs: Vec<(&Value, &Value)> = match info {
        Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| {
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        if text(k)? != "last-generated-id" {
            return None;
        }
        let id = text(v)?;
        let (ms, n) = id.split_once('-')?;
        Some((ms.parse().ok()?, n.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_records() {
        let (kind, data) =
            fields(br#"{"upstream":"f","seq":1,"ts":2,"type":"text","data":"a\"b"}"#);
        assert_eq!((kind.as_ref(), data.as_ref()), ("text", &b"a\"b"[..]));
        let (kind, data) =
            fields(br#"{"upstream":"f","seq":1,"ts":2,"type":"json","data":{"x":1}}"#);
        assert_eq!((kind.as_ref(), data.as_ref()), ("json", &br#"{"x":1}"#[..]));
        let open = br#"{"upstream":"f","ts":2,"type":"open","url":"ws://x/"}"#;
        let (kind, data) = fields(open);
        assert_eq!((kind.as_ref(), data.as_ref()), ("open", &open[..]));
    }

    #[test]
    fn last_generated_id_from_either_protocol() {
        let key = Value::BulkString(b"last-generated-id".to_vec());
        let id = Value::BulkString(b"1700-5".to_vec());
        let flat = Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(3),
            key.clone(),
            id.clone(),
        ]);
        assert_eq!(last_generated(&flat), Some((1700, 5)));
        assert_eq!(
            last_generated(&Value::Map(vec![(key, id)])),
            Some((1700, 5))
        );
    }
}
