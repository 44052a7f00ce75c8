//! The `nats` sink: each record a NATS message on `subject` (with `{upstream}`), published
//! with `async-nats`; into a JetStream stream with acknowledgements when `jetstream = true`.
//!
//! Every message carries the headers `Wsbridge-Upstream`, `Wsbridge-Ts` and, for data
//! records, `Wsbridge-Seq`; its body is the record's line without the newline. Events
//! (open/close/error) are published too when the sink's `events` is on, without
//! `Wsbridge-Seq`. With JetStream, `Nats-Msg-Id` ([`msg_id`]) makes the server drop a repeat
//! within the stream's `duplicate_window`, and an acknowledgement that says "duplicate"
//! counts as written: ids are unique per record, so the entry stored is this record (our own
//! resend, or in `content`/jq mode the same message from a replica).
//!
//! The client never reconnects by itself ([`super::broker`] does, with our backoff): a
//! client that reconnected on its own would send what it still held after records that
//! were lost with the old connection, out of order. async-nats has no "never" (its
//! `max_reconnects(0)` means without limit), so the client is allowed one attempt and
//! [`OneConnection`] refuses it before anything is sent.

mod auth;
pub mod msg_id;

pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Client, ConnectOptions, HeaderMap, Subject};
use bytes::Bytes;

use super::broker::settings::render;
use super::broker::{Ack, BrokerError, Publisher};
use super::{Encoded, Record, SinkStats};
use crate::config::SinkConfig;
pub use auth::NatsAuth;
use auth::OneConnection;
pub use msg_id::MsgId;
use msg_id::MsgIds;
pub use settings::NatsConfig;

/// How long connecting, a JetStream request and an acknowledgement may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes to one NATS server.
pub struct NatsPublisher {
    config: Arc<NatsConfig>,
    /// Makes each record's `Nats-Msg-Id` (boxed: a bound sink waits in an enum).
    ids: Box<MsgIds>,
    client: Option<Client>,
    jetstream: Option<jetstream::Context>,
    /// Whether the stream was created or checked (once per sink).
    stream_ready: bool,
    subjects: HashMap<Arc<str>, Subject>,
}

impl NatsPublisher {
    /// A publisher for the sink `sink`, whose nats settings are `config`.
    pub fn new(config: Arc<NatsConfig>, sink: &SinkConfig) -> NatsPublisher {
        NatsPublisher {
            ids: Box::new(MsgIds::new(&config, sink)),
            config,
            client: None,
            jetstream: None,
            stream_ready: false,
            subjects: HashMap::new(),
        }
    }

    /// Counts what only the publisher sees (ids that fell back) into `stats`.
    pub fn count_into(&mut self, stats: Arc<SinkStats>) {
        self.ids.count_into(stats);
    }

    fn lost(&self, reason: impl std::fmt::Display) -> BrokerError {
        BrokerError::Lost {
            server: self.server(),
            reason: reason.to_string(),
        }
    }

    async fn options(&self) -> Result<ConnectOptions, BrokerError> {
        let once =
            OneConnection::new(&self.config)
                .await
                .map_err(|reason| BrokerError::Connect {
                    server: self.server(),
                    reason,
                })?;
        let options = once
            .options()
            .name("wsbridge")
            .connection_timeout(TIMEOUT)
            .request_timeout(Some(TIMEOUT))
            // The least async-nats takes; the one attempt is refused: see the module doc.
            .max_reconnects(1)
            .ignore_discovered_servers()
            .no_echo();
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

    fn headers(&mut self, upstream: &str, record: &Record<'_>, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("Wsbridge-Upstream", upstream);
        if let Some(seq) = record.seq {
            headers.insert("Wsbridge-Seq", itoa::Buffer::new().format(seq));
        }
        headers.insert("Wsbridge-Ts", itoa::Buffer::new().format(record.ts));
        if self.config.jetstream.is_some() {
            headers.insert("Nats-Msg-Id", self.ids.id(upstream, record, body));
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
        Ok(super::broker::all_stored(async move {
            if acks.is_empty() {
                // Core NATS has no acknowledgement: written to the socket is as far as it goes.
                return client.flush().await.map_err(|e| BrokerError::Lost {
                    server,
                    reason: e.to_string(),
                });
            }
            for ack in acks {
                // `duplicate: true` is written too: the stored entry is this record (see the
                // module doc). An error of any kind fails the round, which is sent again.
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
