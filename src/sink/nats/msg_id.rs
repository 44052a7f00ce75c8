//! The `Nats-Msg-Id` of each record a nats sink publishes into JetStream: the key the
//! server drops a repeat by within the stream's `duplicate_window`.
//!
//! An id names one record and no other: it starts with the upstream and the sink's identity
//! (a short hash of what makes the sink's messages: subject template, format, `parse_json`,
//! `filter`), so two sinks writing into one stream never share an id, while instances of
//! one config (replicas) make the same ids. Then, by `msg_id`:
//! - `seq`: this process's run id (random per start) and the record's seq, which never
//!   restarts within a run, not even when a reload removes and adds back the upstream. A
//!   "duplicate" answer can only be our own resend, so the stored entry is this record.
//! - `content`: a hash of the record without its seq and ts: the same message from several
//!   daemons is stored once, and so is an identical payload repeated within the window.
//! - `{ jq = … }`: the id the message carries (its first output as text), the same in every
//!   daemon; a record it gives nothing for (no output, `null`, an error) gets the `seq` form,
//!   counted and logged at a bounded rate.
//!
//! Events (open/close/error, no seq) are named by the run id and a hash of their line, but in
//! `content` mode, where the run id would defeat the point.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tracing::warn;

use toml::Spanned;

use super::settings::NatsConfig;
use crate::config::{Format, SinkCheck, SinkConfig};
use crate::jq::{self, Program, Value};
use crate::sink::{Record, SinkStats};
use crate::throttle::Throttled;

/// What a nats sink puts in `Nats-Msg-Id`. Every form starts with the upstream and the
/// sink's identity (see the module doc), so two sinks writing into one stream never share an
/// id.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MsgId {
    /// `{upstream}:{sink}:{run}:{seq}`: unique per record of this daemon (the run is random
    /// per process, seq never restarts within it); a retry of this daemon is stored once.
    #[default]
    Seq,
    /// `{upstream}:{sink}:{hash of the record without seq and ts}`: several daemons on one feed
    /// are stored once; so is an identical payload repeated within the window.
    Content,
    /// `{upstream}:{sink}:{the program's output}`: the id the message carries (a trade id),
    /// the same in every daemon; `seq`'s form when the program gives nothing.
    Jq(Program),
}

impl MsgId {
    /// How the ids look, for `check`'s plan.
    pub fn shown(&self) -> String {
        match self {
            MsgId::Seq => "{upstream}:{sink}:{run}:{seq}".to_string(),
            MsgId::Content => "{upstream}:{sink}:{hash of the payload}".to_string(),
            MsgId::Jq(program) => format!(
                "{{upstream}}:{{sink}}:{{jq {:?}}} (else {{upstream}}:{{sink}}:{{run}}:{{seq}})",
                program.source()
            ),
        }
    }
}

/// `msg_id` as written: a name (`"seq"`, `"content"`) or `{ jq = "PROGRAM" }`. Untagged, so
/// the name is checked during validation, with its own message.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawMsgId {
    /// `"seq"` or `"content"`.
    Name(String),
    /// `{ jq = "PROGRAM" }`.
    Jq {
        /// The program that takes the id from the message.
        jq: String,
    },
}

/// `msg_id`: a name, or a jq program compiled here so a mistake is reported at its place.
pub fn validate(raw: Option<&Spanned<RawMsgId>>, check: &mut SinkCheck<'_, '_>) -> Option<MsgId> {
    let Some(raw) = raw else {
        return Some(MsgId::default());
    };
    let key = check.key("msg_id");
    match raw.get_ref() {
        RawMsgId::Name(name) => match name.as_str() {
            "seq" => Some(MsgId::Seq),
            "content" => Some(MsgId::Content),
            other => {
                check.error(
                    Some(raw.span()),
                    Some(key),
                    format!("{other:?} is not a msg_id; use \"seq\", \"content\" or {{ jq = \"PROGRAM\" }}"),
                );
                None
            }
        },
        RawMsgId::Jq { jq } => {
            let text = Spanned::new(raw.span(), jq.clone());
            check.jq_program(&text, format!("{key}.jq")).map(MsgId::Jq)
        }
    }
}

/// An id text longer than this, or holding anything but visible ASCII, is used by its hash:
/// a header value must not hold a line break, and the server keeps every id of the window.
const MAX_ID_TEXT: usize = 64;

/// Identifies this process's run in the `seq` form: seq starts again at each start, so
/// without it a restarted daemon's records would be taken for repeats.
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// Makes the ids of one sink's records.
#[derive(Debug)]
pub struct MsgIds {
    form: MsgId,
    /// The sink's identity in every id.
    sink: String,
    /// Whether a line is an envelope whose `data` is the message (ndjson, no filter).
    envelope: bool,
    /// Whether lines are NDJSON envelopes (for the `content` hash).
    ndjson: bool,
    /// Where fallbacks are counted, once the sink runs.
    stats: Option<Arc<SinkStats>>,
    fallbacks: Throttled,
}

impl MsgIds {
    /// The ids of the sink `sink`, a nats sink with settings `nats`.
    pub fn new(nats: &NatsConfig, sink: &SinkConfig) -> MsgIds {
        let ndjson = sink.format == Format::Ndjson;
        MsgIds {
            form: nats.msg_id.clone(),
            sink: identity(nats, sink),
            envelope: ndjson && sink.filter.is_none(),
            ndjson,
            stats: None,
            fallbacks: Throttled::default(),
        }
    }

    /// Counts fallbacks into `stats`.
    pub fn count_into(&mut self, stats: Arc<SinkStats>) {
        self.stats = Some(stats);
    }

    /// The id of `record` (whose published body is `body`) from `upstream`.
    pub fn id(&mut self, upstream: &str, record: &Record<'_>, body: &[u8]) -> String {
        let sink = &self.sink;
        let seq_form = |seq: u64| format!("{upstream}:{sink}:{}:{seq}", run_id());
        match (&self.form, record.seq) {
            (MsgId::Content, _) => {
                format!("{upstream}:{sink}:{}", hash(content(body, self.ndjson)))
            }
            (_, None) => format!("{upstream}:{sink}:{}:{}", run_id(), hash(body)),
            (MsgId::Seq, Some(seq)) => seq_form(seq),
            (MsgId::Jq(program), Some(seq)) => match taken(program, body, self.envelope) {
                Ok(id) => format!("{upstream}:{sink}:{id}"),
                Err(why) => {
                    let id = seq_form(seq);
                    self.fell_back(upstream, &why);
                    id
                }
            },
        }
    }

    fn fell_back(&mut self, upstream: &str, why: &str) {
        if let Some(stats) = &self.stats {
            stats
                .broker
                .msg_id_fallbacks
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(n) = self.fallbacks.due() {
            warn!(upstream, records = n, "msg_id: the jq program gave no id ({why}); published with the seq form of id, which replicas do not share");
        }
    }
}

/// The id `program` takes from the message of `body`, as id text; why not, if it gives none.
fn taken(program: &Program, body: &[u8], envelope: bool) -> Result<String, String> {
    let input = message(body, envelope).ok_or("the record is not what the sink wrote")?;
    let mut first = None;
    program
        .run(input, |value| {
            if first.is_none() {
                first = Some(value);
            }
        })
        .map_err(|e| e.0)?;
    let value = first.ok_or("no output")?;
    let text = match jq::as_text(&value) {
        Some(text) => text.to_vec(),
        None => {
            let mut out = Vec::new();
            jq::write_compact(&value, &mut out);
            if out == b"null" {
                return Err("null".into());
            }
            out
        }
    };
    if text.is_empty() {
        return Err("an empty string".into());
    }
    if text.len() > MAX_ID_TEXT || !text.iter().all(u8::is_ascii_graphic) {
        return Ok(hash(&text));
    }
    // Visible ASCII: valid UTF-8.
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// What a `{ jq = … }` program reads: the message itself. In an envelope that is its `data`
/// (text holding JSON as its value, other text as a string, binary as its base64 string);
/// a raw or filtered line is read as JSON when it is JSON, else as a string.
fn message(body: &[u8], envelope: bool) -> Option<Value> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    if !envelope {
        return Some(jq::parse_json(body).unwrap_or_else(|| text(body)));
    }
    let record: Envelope<'_> = serde_json::from_slice(body).ok()?;
    let data = record.data?;
    if record.kind == "text" {
        let text_data: String = serde_json::from_str(data.get()).ok()?;
        return Some(
            jq::parse_json(text_data.as_bytes()).unwrap_or_else(|| text(text_data.as_bytes())),
        );
    }
    jq::parse_json(data.get().as_bytes())
}

/// `bytes` as a jq string.
fn text(bytes: &[u8]) -> Value {
    Value::utf8_str(bytes.to_vec())
}

/// The sink's identity: a hash of what makes its messages, the same in every instance of
/// one config; two sinks that differ in any of it never share an id.
fn identity(nats: &NatsConfig, sink: &SinkConfig) -> String {
    let mut what = Vec::new();
    what.extend_from_slice(nats.subject_template.as_bytes());
    what.push(0);
    what.extend_from_slice(match sink.format {
        Format::Ndjson => b"ndjson",
        Format::Raw => b"raw",
    });
    what.push(u8::from(sink.parse_json));
    if let Some(filter) = &sink.filter {
        what.extend_from_slice(filter.source().as_bytes());
    }
    hash(&what)[..8].to_string()
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

#[cfg(test)]
mod tests;
