//! Inbound lines from a sink's client: framed with a bounded length, parsed, held to the
//! target upstream's `max_message_size`, and put straight into that upstream's send queue
//! (never back through the hub). A bad line gets an error record on that client's
//! connection only; the client stays connected.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;

use super::Encoded;
use crate::config::SinkConfig;
use crate::hub::Directory;
use crate::lines::{BoundedLines, Line};
use crate::record::{client_error_line, parse_inbound};

/// Where a sink's clients' lines go, and the rules they are held to.
#[derive(Debug, Clone)]
pub struct Router {
    /// The sink's settings (`inbound`, which upstreams it serves).
    pub config: Arc<SinkConfig>,
    /// The running upstreams' inboxes.
    pub directory: watch::Receiver<Arc<Directory>>,
    /// The longest line framed, in bytes: room for the largest `max_message_size` of any
    /// upstream in its envelope (base64 included). The target upstream's own limit is
    /// applied once the line is parsed.
    pub max_line: usize,
}

/// One client's inbound lines.
pub struct Inbound {
    lines: FramedRead<Pin<Box<dyn AsyncRead + Send>>, BoundedLines>,
    router: Router,
}

impl Inbound {
    /// Lines read from `reader`, routed by `router`.
    pub fn new(reader: impl AsyncRead + Send + 'static, router: Router) -> Inbound {
        let reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(reader);
        Inbound {
            lines: FramedRead::new(reader, BoundedLines::new(router.max_line)),
            router,
        }
    }

    /// Handles the next line: `Some(Ok(reply))` with the error record for the client, if
    /// any; `None` once the client closed its side.
    pub async fn next(&mut self) -> Option<io::Result<Option<Encoded>>> {
        let line = match self.lines.next().await? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        let reply = match line {
            Line::Text(text) => self.router.route(&text),
            Line::TooLong => Some(client_error_line(
                None,
                &format!(
                    "line longer than {} bytes; it is discarded up to its newline",
                    self.router.max_line
                ),
            )),
            Line::NotUtf8 => Some(client_error_line(
                None,
                "line is not valid UTF-8; it is discarded",
            )),
        };
        Some(Ok(reply.map(Encoded::notice)))
    }
}

impl Router {
    /// Sends one inbound line upstream; returns the error record for the client, if any.
    pub fn route(&self, line: &str) -> Option<Vec<u8>> {
        if line.trim().is_empty() {
            return None;
        }
        if !self.config.inbound {
            return Some(client_error_line(
                None,
                "this sink does not accept lines (inbound = false)",
            ));
        }
        let inbound = match parse_inbound(line) {
            Ok(inbound) => inbound,
            Err(e) => return Some(client_error_line(None, &e.to_string())),
        };
        let directory = self.directory.borrow().clone();
        let name = match inbound.upstream {
            Some(name) => {
                if !self.config.routes(&name) || !directory.contains_key(&name) {
                    return Some(client_error_line(
                        Some(&name),
                        &format!("this sink serves no upstream named {name:?}"),
                    ));
                }
                name
            }
            None => {
                let mut served = directory.keys().filter(|n| self.config.routes(n));
                match (served.next(), served.next()) {
                    (Some(only), None) => only.clone(),
                    _ => {
                        return Some(client_error_line(
                            None,
                            "this sink serves several upstreams: name one with \"upstream\"",
                        ))
                    }
                }
            }
        };
        let Some(inbox) = directory.get(&name) else {
            return Some(client_error_line(Some(&name), "upstream is gone"));
        };
        let size = inbound.message.len();
        if size > inbox.max_message_size {
            return Some(client_error_line(
                Some(&name),
                &format!(
                    "the message is {size} bytes, over the upstream's max_message_size of {} bytes; it was not sent",
                    inbox.max_message_size
                ),
            ));
        }
        match inbox.queue.try_send(inbound.message) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(_)) => Some(client_error_line(
                Some(&name),
                "the upstream's send queue is full (it may be reconnecting); the message was not sent, retry later",
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Some(client_error_line(
                Some(&name),
                "the upstream is stopped; the message was not sent",
            )),
        }
    }
}
