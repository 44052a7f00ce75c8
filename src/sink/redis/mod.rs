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
//! when sent again ("equal or smaller"). Such a refusal counts as stored only when the entry
//! at that ID is this record (`XRANGE key id id`); otherwise another client moved the stream
//! past it: the record is counted dropped (`other_writer`) and the stream's last ID is read
//! again (`XINFO STREAM`) before the next records get theirs. The sink assumes it is the
//! only writer of its keys; `check` refuses configs that make two.
//!
//! Each entry of a pipeline is accounted for on its own ([`refusal`]): a refusal that will
//! not change (a key of another type) drops that record (`rejected`), one that may pass (out
//! of memory, loading) sends the records not added again after a reconnect, with new IDs:
//! the server said they were not added.

mod entry;
mod refusal;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult, Value};

use self::entry::{entry_fields, id_text, is_entry, last_generated, EntryId};
use self::refusal::{classify, is_no_such_key, is_wrong_type, Refusal};
use super::broker::settings::render;
use super::broker::{Ack, BrokerError, Publisher, Settled};
use super::{DropReason, Encoded};
pub use settings::RedisConfig;

/// An entry as `XRANGE` gives it: its ID and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// How long connecting and a pipeline's replies may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What is known of one record of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Needs an entry ID: never sent, or refused by the server without being added.
    Unsent,
    /// Sent with this ID; whether the server added it is not known yet.
    Sent(EntryId),
    /// In the stream (or a drop notice, which is not sent).
    Stored,
    /// Not in the stream, for good.
    Dropped(DropReason),
}

/// Runs with the fate of each of their records, kept between attempts.
pub struct RedisRound {
    runs: Vec<Encoded>,
    /// One per record of `runs`, in order; empty until the first attempt.
    fates: Vec<Fate>,
    /// The server's first answer per drop reason, for the log.
    why: Vec<(DropReason, String)>,
}

impl RedisRound {
    /// Every record with its run's index, its upstream (`None`: a drop notice) and fate slot.
    fn records(&self) -> impl Iterator<Item = (usize, super::Record<'_>)> {
        self.runs
            .iter()
            .enumerate()
            .flat_map(|(i, run)| run.records().map(move |r| (i, r)))
    }

    fn drop_record(&mut self, at: usize, reason: DropReason, why: impl FnOnce() -> String) {
        self.fates[at] = Fate::Dropped(reason);
        if !self.why.iter().any(|(r, _)| *r == reason) {
            self.why.push((reason, why()));
        }
    }

    /// The round with only the runs `keep` marks, each record with the fate it had: one
    /// sent keeps its entry ID, so that if it was added before its reply was lost, Redis
    /// refuses it rather than adding it again under a new one.
    fn retained(self, keep: &[bool]) -> RedisRound {
        let attempted = !self.fates.is_empty();
        let mut fates = self.fates.into_iter();
        let mut kept = RedisRound {
            runs: Vec::new(),
            fates: Vec::new(),
            why: self.why,
        };
        for (run, keep) in self.runs.into_iter().zip(keep) {
            let count = if attempted { run.record_count() } else { 0 };
            let run_fates: Vec<Fate> = fates.by_ref().take(count).collect();
            if *keep {
                kept.fates.extend(run_fates);
                kept.runs.push(run);
            }
        }
        kept
    }

    /// The acknowledgement of a round whose records all have their final fate.
    fn settled(&self) -> Settled {
        let mut settled = Settled::all_stored();
        for ((run, _), fate) in self.records().zip(&self.fates) {
            if let Fate::Dropped(reason) = fate {
                settled.refused(run, *reason, || {
                    self.why
                        .iter()
                        .find(|(r, _)| r == reason)
                        .map(|(_, w)| w.clone())
                        .unwrap_or_default()
                });
            }
        }
        settled
    }
}

/// Adds entries to one Redis server.
pub struct RedisPublisher {
    config: Arc<RedisConfig>,
    client: Client,
    connection: Option<MultiplexedConnection>,
    /// The last entry ID given out, per stream key; read from the server when missing.
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

    /// The last ID of `key` as the server knows it ((0, 0) for a new stream, or a key of
    /// another type: its entries are then refused one by one).
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
            Err(e) if is_no_such_key(&e) || is_wrong_type(&e) => Ok((0, 0)),
            Err(e) => Err(self.lost(format!("cannot read the last ID of {key}: {e}"))),
        }
    }

    /// Gives every record of `round` that needs one its entry ID.
    async fn assign(
        &mut self,
        conn: &mut MultiplexedConnection,
        round: &mut RedisRound,
    ) -> Result<(), BrokerError> {
        let mut ids = Vec::new();
        for (at, (_, record)) in round.records().enumerate() {
            if round.fates[at] != Fate::Unsent {
                continue;
            }
            let Some(upstream) = record.upstream else {
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
            ids.push((at, id));
        }
        for (at, id) in ids {
            round.fates[at] = Fate::Sent(id);
        }
        Ok(())
    }

    /// The `XADD` of every record sent and not settled, with the index of each.
    fn pipeline(&self, round: &RedisRound) -> (redis::Pipeline, Vec<usize>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent = Vec::new();
        for (at, (_, record)) in round.records().enumerate() {
            let (Fate::Sent(id), Some(upstream)) = (round.fates[at], record.upstream) else {
                continue;
            };
            let cmd = pipe.cmd("XADD").arg(render(&self.config.stream, upstream));
            if self.config.maxlen > 0 {
                cmd.arg("MAXLEN").arg("~").arg(self.config.maxlen);
            }
            cmd.arg(id_text(id));
            for (name, value) in entry_fields(&record, upstream) {
                cmd.arg(name).arg(value.as_ref());
            }
            sent.push(at);
        }
        (pipe, sent)
    }

    /// Settles the records refused for an ID at or below the stream's top: stored when the
    /// entry at that ID is this record, else dropped (`other_writer`), and the key's last ID
    /// is read again before the next records get theirs.
    async fn verify(
        &mut self,
        conn: &mut MultiplexedConnection,
        round: &mut RedisRound,
        refused: &[usize],
    ) -> Result<(), BrokerError> {
        if refused.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut checks = Vec::new();
        for (at, (_, record)) in round.records().enumerate() {
            let (Fate::Sent(id), Some(upstream)) = (round.fates[at], record.upstream) else {
                continue;
            };
            if refused.binary_search(&at).is_ok() {
                let key = render(&self.config.stream, upstream);
                pipe.cmd("XRANGE")
                    .arg(&key)
                    .arg(id_text(id))
                    .arg(id_text(id));
                checks.push((at, key, id));
            }
        }
        let found: Vec<Vec<StreamEntry>> = pipe
            .query_async(conn)
            .await
            .map_err(|e| self.lost(format!("cannot read back refused entries: {e}")))?;
        // `checks` is in record order: one more pass over the records pairs them up.
        let mut answers = checks.iter().zip(&found).peekable();
        let mut ours = Vec::with_capacity(checks.len());
        for (at, (_, record)) in round.records().enumerate() {
            let Some(((check, _, _), entries)) = answers.next_if(|((c, _, _), _)| *c == at) else {
                continue;
            };
            let expected = entry_fields(&record, record.upstream.unwrap_or_default());
            let same = entries.first().is_some_and(|(_, f)| is_entry(f, &expected));
            ours.push((*check, same));
        }
        for ((at, key, id), (_, same)) in checks.into_iter().zip(ours) {
            if same {
                round.fates[at] = Fate::Stored;
                continue;
            }
            round.drop_record(at, DropReason::OtherWriter, || {
                format!("another client added entries to {key} past ID {}; give each writer its own key", id_text(id))
            });
            self.last.remove(&key);
        }
        Ok(())
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
            fates: Vec::new(),
            why: Vec::new(),
        }
    }

    fn runs(round: &RedisRound) -> &[Encoded] {
        &round.runs
    }

    fn retain(&mut self, round: RedisRound, keep: &[bool]) -> RedisRound {
        round.retained(keep)
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
    /// unanswered could reach the server in another order, and an entry of ours would then
    /// be refused for a smaller ID. Only the records not settled by an earlier attempt are
    /// sent; the acknowledgement is ready once every record is settled.
    async fn send(&mut self, round: &mut RedisRound) -> Result<Ack, BrokerError> {
        let Some(mut conn) = self.connection.clone() else {
            return Err(self.lost("not connected"));
        };
        if round.fates.is_empty() {
            round.fates = round
                .records()
                .map(|(_, r)| match r.upstream {
                    Some(_) => Fate::Unsent,
                    None => Fate::Stored,
                })
                .collect();
        }
        self.assign(&mut conn, round).await?;
        let (pipe, sent) = self.pipeline(round);
        let replies: Vec<RedisResult<Value>> = if sent.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn)
                .await
                .map_err(|e| self.lost(e))?
        };
        let mut refused = Vec::new();
        let mut again = None;
        for (at, reply) in sent.into_iter().zip(replies) {
            match reply.as_ref().map_err(|e| (classify(e), e)) {
                Ok(_) => round.fates[at] = Fate::Stored,
                Err((Refusal::IdTooSmall, _)) => refused.push(at),
                // Not added: sent again, with a new ID, after a pause.
                Err((Refusal::Transient, e)) if e.code().is_some() => {
                    round.fates[at] = Fate::Unsent;
                    again.get_or_insert_with(|| e.to_string());
                }
                // No answer for this entry: its fate is unknown, its ID is kept.
                Err((Refusal::Transient, e)) => {
                    again.get_or_insert_with(|| e.to_string());
                }
                Err((Refusal::Permanent, e)) => round.drop_record(at, DropReason::Rejected, || {
                    format!("{e}; check that the stream key holds a stream")
                }),
            }
        }
        self.verify(&mut conn, round, &refused).await?;
        if let Some(reason) = again {
            return Err(BrokerError::Refused {
                server: self.server(),
                reason: format!("{reason}; the records not added are sent again"),
            });
        }
        // Never acknowledge a record whose fate is not known.
        if round
            .fates
            .iter()
            .any(|f| matches!(f, Fate::Unsent | Fate::Sent(_)))
        {
            return Err(self.lost("the server did not answer for every entry"));
        }
        Ok(Box::pin(std::future::ready(Ok(round.settled()))))
    }

    fn disconnect(&mut self) {
        self.connection = None;
    }
}

#[cfg(test)]
mod tests;
