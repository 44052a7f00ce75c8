//! The `nats` sink: each record a NATS message on `subject` (with `{upstream}`), published
//! with `async-nats`; into a JetStream stream with acknowledgements when `jetstream = true`.
//!
//! Every message carries the headers `Wsbridge-Upstream`, `Wsbridge-Ts` and, for data
//! records, `Wsbridge-Seq`; its body is the record's line without the newline. Events
//! (open/close/error) are published too when the sink's `events` is on, without
//! `Wsbridge-Seq`. With JetStream, `Nats-Msg-Id` makes the server drop a repeat within the
//! stream's `duplicate_window`: `seq` mode names a record by upstream, this daemon's run
//! and seq (a resend after a lost acknowledgement); `content` mode by upstream and a hash
//! of the record without its seq and ts (the same message from several daemons).
//!
//! The client never reconnects by itself ([`super::broker`] does, with our backoff): a
//! client that reconnected on its own would send what it still held after records that
//! were lost with the old connection, out of order.

pub mod settings;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Client, ConnectOptions, HeaderMap, Subject};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::broker::settings::render;
use super::broker::{Ack, BrokerError, Publisher};
use super::{Encoded, Record};
pub use settings::{MsgId, NatsAuth, NatsConfig};

/// How long connecting, a JetStream request and an acknowledgement may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Identifies this daemon's run in `Nats-Msg-Id` (`seq` mode): seq starts again at each
/// start, so without it a restarted daemon's records would be taken for repeats.
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// Publishes to one NATS server.
pub struct NatsPublisher {
    config: Arc<NatsConfig>,
    /// Whether the records are NDJSON envelopes (for the `content` hash).
    ndjson: bool,
    client: Option<Client>,
    jetstream: Option<jetstream::Context>,
    /// Whether the stream was created or checked (once per sink).
    stream_ready: bool,
    subjects: HashMap<Arc<str>, Subject>,
}

impl NatsPublisher {
    /// A publisher for `config`; `ndjson` says whether lines are envelopes.
    pub fn new(config: Arc<NatsConfig>, ndjson: bool) -> NatsPublisher {
        NatsPublisher {
            config,
            ndjson,
            client: None,
            jetstream: None,
            stream_ready: false,
            subjects: HashMap::new(),
        }
    }

    fn lost(&self, reason: impl std::fmt::Display) -> BrokerError {
        BrokerError::Lost {
            server: self.server(),
            reason: reason.to_string(),
        }
    }

    async fn options(&self) -> Result<ConnectOptions, BrokerError> {
        let mut options = ConnectOptions::new()
            .name("wsbridge")
            .connection_timeout(TIMEOUT)
            .request_timeout(Some(TIMEOUT))
            // One attempt after a loss, at once, then the client gives up: see the module doc.
            .max_reconnects(1)
            .ignore_discovered_servers()
            .no_echo();
        let url = &self.config.url;
        if !url.username().is_empty() {
            let user = percent(url.username());
            let pass = percent(url.password().unwrap_or(""));
            options = options.user_and_password(user, pass);
        }
        match &self.config.auth {
            NatsAuth::None => {}
            NatsAuth::Token(token) => options = options.token(token.expose().to_string()),
            NatsAuth::CredsFile(path) => {
                options =
                    options
                        .credentials_file(path)
                        .await
                        .map_err(|e| BrokerError::Connect {
                            server: self.server(),
                            reason: format!("cannot read the creds file {}: {e}", path.display()),
                        })?;
            }
        }
        Ok(options)
    }

    /// Creates the stream when missing; one that exists is left as it is, with a warning
    /// where it differs from the config.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), BrokerError> {
        let Some(want) = &self.config.jetstream else {
            return Ok(());
        };
        let config = jetstream::stream::Config {
            name: want.name.clone(),
            subjects: want.subjects.clone(),
            max_age: want.max_age.unwrap_or_default(),
            max_bytes: want
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            duplicate_window: want.duplicate_window,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let stream = js.get_or_create_stream(config).await.map_err(|e| BrokerError::Refused {
            server: self.server(),
            reason: format!("cannot create or find the JetStream stream {}: {e}; is JetStream enabled (nats-server -js) and may this user manage streams?", want.name),
        })?;
        let have = &stream.cached_info().config;
        if have.subjects != want.subjects || have.duplicate_window != want.duplicate_window {
            tracing::warn!(
                stream = %want.name,
                subjects = ?have.subjects,
                duplicate_window = ?have.duplicate_window,
                "the stream exists with other settings than the config's; wsbridge leaves it as it is"
            );
        }
        Ok(())
    }

    fn subject(&mut self, upstream: &str) -> Subject {
        if let Some(s) = self.subjects.get(upstream) {
            return s.clone();
        }
        let subject = Subject::from(render(&self.config.subject, upstream));
        self.subjects.insert(Arc::from(upstream), subject.clone());
        subject
    }

    fn headers(&self, upstream: &str, record: &Record<'_>, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("Wsbridge-Upstream", upstream);
        if let Some(seq) = record.seq {
            headers.insert("Wsbridge-Seq", itoa::Buffer::new().format(seq));
        }
        headers.insert("Wsbridge-Ts", itoa::Buffer::new().format(record.ts));
        if self.config.jetstream.is_some() {
            let id = match (self.config.msg_id, record.seq) {
                (MsgId::Seq, Some(seq)) => format!("{upstream}:{}:{seq}", run_id()),
                (MsgId::Seq, None) => format!("{upstream}:{}:{}", run_id(), hash(body)),
                (MsgId::Content, _) => format!("{upstream}:{}", hash(content(body, self.ndjson))),
            };
            headers.insert("Nats-Msg-Id", id);
        }
        headers
    }
}

impl Publisher for NatsPublisher {
    type Round = Vec<Encoded>;

    fn server(&self) -> String {
        self.config.display_url()
    }

    fn round(&mut self, runs: Vec<Encoded>) -> Vec<Encoded> {
        runs
    }

    fn runs(round: &Vec<Encoded>) -> &[Encoded] {
        round
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.disconnect();
        let options = self.options().await?;
        let mut address = self.config.url.clone();
        let _ = address.set_username("");
        let _ = address.set_password(None);
        let client = options
            .connect(address.as_str())
            .await
            .map_err(|e| BrokerError::Connect {
                server: self.server(),
                reason: e.to_string(),
            })?;
        if self.config.jetstream.is_some() {
            let js = jetstream::context::ContextBuilder::new()
                .timeout(TIMEOUT)
                // The window of `super::broker` bounds what is in flight; never wait here.
                .max_ack_inflight(1 << 20)
                .backpressure_on_inflight(false)
                .build(client.clone());
            if !self.stream_ready {
                self.ensure_stream(&js).await?;
                self.stream_ready = true;
            }
            self.jetstream = Some(js);
        }
        self.client = Some(client);
        Ok(())
    }

    async fn send(&mut self, round: &mut Vec<Encoded>) -> Result<Ack, BrokerError> {
        let Some(client) = self.client.clone() else {
            return Err(self.lost("not connected"));
        };
        let mut acks = Vec::new();
        for run in round.iter() {
            for record in run.records() {
                // A drop notice meant for a reader of a socket: the count is in the metrics.
                let Some(upstream) = record.upstream else {
                    continue;
                };
                let line = record.line.strip_suffix(b"\n").unwrap_or(record.line);
                let body: Bytes = run.bytes().slice_ref(line);
                let subject = self.subject(upstream);
                let headers = self.headers(upstream, &record, &body);
                match &self.jetstream {
                    Some(js) => {
                        let publish = PublishMessage::build().payload(body).headers(headers);
                        let ack = js
                            .send_publish(subject, publish)
                            .await
                            .map_err(|e| self.lost(e))?;
                        acks.push(ack);
                    }
                    None => client
                        .publish_with_headers(subject, headers, body)
                        .await
                        .map_err(|e| self.lost(e))?,
                }
            }
        }
        let server = self.server();
        Ok(Box::pin(async move {
            if acks.is_empty() {
                // Core NATS has no acknowledgement: written to the socket is as far as it goes.
                return client.flush().await.map_err(|e| BrokerError::Lost {
                    server,
                    reason: e.to_string(),
                });
            }
            for ack in acks {
                ack.await.map_err(|e| BrokerError::Lost {
                    server: server.clone(),
                    reason: format!("no acknowledgement from JetStream: {e}"),
                })?;
            }
            Ok(())
        }))
    }

    fn disconnect(&mut self) {
        self.jetstream = None;
        // Dropping the last handle ends the client's task, and with it what it still held.
        self.client = None;
    }
}

/// What `content` mode hashes: an envelope from its `type` on (its seq and ts differ from
/// one daemon to another), any other line whole.
fn content(body: &[u8], ndjson: bool) -> &[u8] {
    const TYPE: &[u8] = b",\"type\":\"";
    if ndjson {
        // The first `,"type":"` is the envelope's: inside a JSON string its quotes are escaped.
        if let Some(at) = memchr::memmem::find(body, TYPE) {
            return &body[at..];
        }
    }
    body
}

/// 128 bits of SHA-256 in hex: the same in every daemon and every version.
fn hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(32);
    for byte in &digest[..16] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A URL's user or password as typed (`%40` back to `@`).
fn percent(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ignores_seq_and_ts() {
        let a = br#"{"upstream":"f","seq":1,"ts":10,"type":"text","data":"x"}"#;
        let b = br#"{"upstream":"f","seq":7,"ts":99,"type":"text","data":"x"}"#;
        assert_eq!(hash(content(a, true)), hash(content(b, true)));
        assert_ne!(hash(content(a, false)), hash(content(b, false)));
        assert_eq!(hash(b"x").len(), 32);
    }
}
