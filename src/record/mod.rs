//! The NDJSON record: what every sink client reads, one JSON object per line.
//!
//! ```json
//! {"upstream":"trades","seq":42,"ts":1764000000123,"type":"text","data":"{\"p\":1.5}"}
//! {"upstream":"trades","seq":43,"ts":1764000000124,"type":"binary","data":"AAEC/w=="}
//! {"upstream":"trades","seq":44,"ts":1764000000125,"type":"json","data":{"p":1.5}}
//! {"upstream":"trades","ts":1764000000000,"type":"open","url":"wss://stream.example.com/ws","protocol":"chat"}
//! {"upstream":"trades","ts":1764000009000,"type":"close","code":1001,"reason":"going away","retry_in_ms":500}
//! {"upstream":"trades","ts":1764000009001,"type":"error","error":"connection reset","retry_in_ms":1000}
//! {"upstream":"book","ts":1764000009002,"type":"gap","expected":300,"got":305}
//! {"upstream":"book","seq":45,"ts":1764000009002,"type":"text","data":"{\"u\":305}","lag_ms":12}
//! ```
//!
//! - `seq` counts data messages per upstream from 1 since the daemon started; it does not
//!   restart on reconnect, so a gap means a lost record.
//! - `ts` is the receive time in Unix milliseconds.
//! - `binary` data is standard base64. `json` (sinks with `parse_json = true`) embeds a text
//!   message that holds valid JSON as the value itself.
//! - `close` and `error` carry `retry_in_ms` when the upstream will reconnect after that delay.
//!   An `error` for a refused handshake carries `status`, the HTTP status (401, 429, …).
//! - `gap` (an upstream with `sequence`): the feed's own numbering skipped from `expected`
//!   to `got`; it comes just before the message numbered `got`.
//! - `lag_ms` (an upstream with `event_time`): on a data record, its receive time minus the
//!   time the source gave it, in milliseconds (negative when the source's clock is ahead).
//!
//! With `format = "raw"` only the payload is written: text as it is (as a JSON string if it
//! holds a line break, so one message is one line), binary as base64; events are not written.
//!
//! The inbound line, written by sink clients (and `connect --ndjson` on stdin), is parsed by
//! [`parse_inbound`]: `{"upstream":"trades","type":"text"|"binary"|"json","data":…}`.
//!
//! The record is built in three modules: [`Event`] (the event model, in `event`), one encoder
//! of the wire format ([`Encoding`], in `encode`) and inbound parsing ([`parse_inbound`], in
//! `inbound`).

mod encode;
mod event;
mod inbound;
mod text;

pub use encode::{client_error_line, Encoding, LineEnd};
pub use event::{unix_millis, Event, EventKind};
pub use inbound::{parse_inbound, Inbound, InboundError};
pub use text::Text;
