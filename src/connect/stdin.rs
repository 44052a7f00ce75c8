//! `connect`'s stdin: lines (or chunks) read on a thread of their own and queued as messages.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::Decoder as _;
use tracing::warn;

use crate::lines::{BoundedLines, Line};
use crate::record::parse_inbound;

/// Feeds stdin into the upstream's send queue from a thread of its own (so splitting lines
/// runs beside the connection's framing and masking); at EOF, queues a Close (1000) behind
/// the rest, unless `close_at_eof` is off: then the queue just closes, and the connection
/// stays until the peer ends it, as with nothing to send (`-U`).
pub(super) struct StdinReader {
    pub(super) queue: mpsc::Sender<Message>,
    pub(super) binary: bool,
    pub(super) ndjson: bool,
    pub(super) max_line: usize,
    pub(super) close_at_eof: bool,
}

/// Bytes read from stdin at a time.
const READ_SIZE: usize = 64 * 1024;
/// A read smaller than this has its messages copied out of the read buffer.
const SMALL_READ: usize = 16 * 1024;
/// At most this many messages are queued at once.
const GROUP: usize = 256;

impl StdinReader {
    pub(super) fn spawn<R: Read + Send + 'static>(self, stdin: R) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("wsbridge-stdin".into())
            .spawn(move || self.run(stdin))
            .map(drop)
    }

    fn run<R: Read>(self, mut stdin: R) {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut lines = BoundedLines::new(self.max_line);
        let mut number = 0u64;
        loop {
            let (at_eof, small) = match read_some(&mut stdin, &mut buf) {
                Ok(n) => (n == 0, n < SMALL_READ),
                Err(e) => {
                    warn!(error = %e, "cannot read stdin");
                    (true, true)
                }
            };
            // Messages share the read buffer, which saves a copy when stdin comes in large
            // reads; after a small read they are copied, so that a slow trickle of lines
            // queued while reconnecting does not pin a 64 KiB buffer each.
            // A read's messages are queued a group at a time (see [`StdinReader::send_all`]).
            let mut group = Vec::with_capacity(GROUP);
            if self.binary && !self.ndjson {
                // One message per read chunk, as websocat's --binary does.
                let chunk = buf.split();
                let chunk = if small {
                    Bytes::copy_from_slice(&chunk)
                } else {
                    chunk.freeze()
                };
                if !chunk.is_empty() {
                    group.push(Message::Binary(chunk));
                }
            } else {
                loop {
                    let line = if at_eof {
                        lines.decode_eof(&mut buf)
                    } else {
                        lines.decode(&mut buf)
                    };
                    let Ok(Some(line)) = line else { break };
                    number += 1;
                    if let Some(message) = self.message(number, line, small) {
                        group.push(message);
                    }
                    if group.len() == GROUP && !self.send_all(&mut group) {
                        return;
                    }
                }
            }
            if !self.send_all(&mut group) {
                return;
            }
            if at_eof {
                break;
            }
        }
        if !self.close_at_eof {
            return;
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        self.send(Message::Close(Some(close)));
    }

    /// The message for stdin line `number` (its text copied out of the read buffer if `copy`),
    /// or `None` (with a warning) if it is skipped.
    fn message(&self, number: u64, line: Line, copy: bool) -> Option<Message> {
        match line {
            Line::Text(text) if self.ndjson => match parse_inbound(&text) {
                Ok(inbound) => Some(inbound.message),
                Err(e) => {
                    warn!("stdin line {number} skipped: {e}");
                    None
                }
            },
            Line::Text(text) if copy => Some(Message::text(text.as_str())),
            Line::Text(text) => Some(Message::Text(text)),
            Line::TooLong => {
                warn!(
                    "stdin line {number} skipped: longer than max_message_size ({} bytes)",
                    self.max_line
                );
                None
            }
            Line::NotUtf8 => {
                warn!("stdin line {number} skipped: not valid UTF-8 (use --binary for bytes)");
                None
            }
        }
    }

    /// Queues a message, waiting for room; false once the connection is gone.
    fn send(&self, message: Message) -> bool {
        self.queue.blocking_send(message).is_ok()
    }

    /// Queues `messages` (emptying it): room for all of them at once where the queue has it,
    /// one semaphore operation rather than one per message (the connection's thread takes
    /// them as many at once); else one at a time, waiting for room. False once the
    /// connection is gone.
    fn send_all(&self, messages: &mut Vec<Message>) -> bool {
        let mut rest = messages.drain(..);
        while rest.len() > 0 {
            match self.queue.try_reserve_many(rest.len()) {
                Ok(permits) => permits.zip(rest.by_ref()).for_each(|(p, m)| p.send(m)),
                Err(TrySendError::Closed(())) => return false,
                Err(TrySendError::Full(())) => {
                    if let Some(message) = rest.next() {
                        if !self.send(message) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }
}

/// Appends one read's worth of bytes to `buf`; 0 at EOF.
fn read_some(stdin: &mut impl Read, buf: &mut BytesMut) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + READ_SIZE, 0);
    let result = loop {
        match stdin.read(&mut buf[start..]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    buf.truncate(start + *result.as_ref().unwrap_or(&0));
    result
}
