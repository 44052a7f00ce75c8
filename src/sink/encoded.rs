//! Records encoded once per sink: the lines of one batch in one buffer, shared by every
//! destination of the sink, with each record's boundary and identity (upstream, seq, ts)
//! kept beside them. A sink that writes bytes (stdout, sockets, a file, a program's stdin)
//! writes the buffer as it is; one that publishes per record (NATS, Redis) walks
//! [`Encoded::records`]. A sink's `filter` runs here ([`RecordFilter`]), so every sink has it;
//! the lines it makes of one record stay that record's, with its `seq` and `ts`.

use std::sync::Arc;

use bytes::Bytes;

use super::filter::RecordFilter;
use super::SinkStats;
use crate::config::Format;
use crate::fence::{self, Fence};
use crate::hub::Batch;
use crate::jq::Program;
use crate::record::{Encoding, Event, EventKind};

/// Where one record's line ends in the buffer, and which record it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    end: usize,
    seq: Option<u64>,
    ts: u64,
}

/// The lines of records encoded together: one batch of an upstream, or one notice for a
/// single destination. Cloning it is a few reference counts, never a copy of the bytes.
#[derive(Debug, Clone)]
pub struct Encoded {
    upstream: Option<Arc<str>>,
    bytes: Bytes,
    marks: Arc<[Mark]>,
    /// The lease its upstream ran under (`[cluster]`): checked right before writing.
    fence: Option<Arc<Fence>>,
}

/// One record of an [`Encoded`]: its line (ending in `\n`, except `connect --binary`'s raw
/// bytes; with a `filter`, as many lines as the program made of the record) and what a
/// per-record publisher puts in headers or fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The upstream it came from; `None` for a notice such as a drop report.
    pub upstream: Option<&'a str>,
    /// The data message's `seq`; `None` for open/close/error and notices.
    pub seq: Option<u64>,
    /// Receive time, Unix milliseconds.
    pub ts: u64,
    /// The encoded line.
    pub line: &'a [u8],
}

impl Encoded {
    /// A single line of our own for one destination (an error record to a client).
    pub fn notice(line: Vec<u8>) -> Encoded {
        let end = line.len();
        Encoded {
            upstream: None,
            bytes: Bytes::from(line),
            marks: Arc::from([Mark {
                end,
                seq: None,
                ts: crate::record::unix_millis(),
            }]),
            fence: None,
        }
    }

    /// Whether these records may still be written: their upstream's lease (if any) is
    /// proven now.
    pub fn may_write(&self) -> bool {
        fence::holds(self.fence.as_ref())
    }

    /// Resolves once these records may no longer be written; never without a lease.
    pub async fn fence_lapsed(&self) {
        fence::lapsed(self.fence.as_ref()).await
    }

    /// The upstream these records came from, if they are not a notice of our own.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    /// Every line, back to back.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The size of [`Encoded::bytes`].
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no bytes (never, for what a queue holds).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many records the bytes hold.
    pub fn record_count(&self) -> usize {
        self.marks.len()
    }

    /// The records after the first `n`, sharing this run's bytes (a history keeps the newest
    /// records of a batch without copying them). `n` at or past the end leaves no record.
    pub fn skip(&self, n: usize) -> Encoded {
        let n = n.min(self.marks.len());
        let start = match n {
            0 => 0,
            n => self.marks[n - 1].end,
        };
        Encoded {
            upstream: self.upstream.clone(),
            bytes: self.bytes.slice(start..),
            marks: self.marks[n..]
                .iter()
                .map(|m| Mark {
                    end: m.end - start,
                    ..*m
                })
                .collect(),
            fence: self.fence.clone(),
        }
    }

    /// The records one by one.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        let mut start = 0;
        self.marks.iter().map(move |mark| {
            let line = &self.bytes[start..mark.end];
            start = mark.end;
            Record {
                upstream: self.upstream.as_deref(),
                seq: mark.seq,
                ts: mark.ts,
                line,
            }
        })
    }
}

/// Encodes batches with a sink's [`Encoding`]: the one place a sink's lines are made.
#[derive(Debug)]
pub struct Encoder {
    encoding: Encoding,
    filter: Option<RecordFilter>,
}

impl Encoder {
    /// An encoder writing `encoding`.
    pub fn new(encoding: Encoding) -> Encoder {
        Encoder {
            encoding,
            filter: None,
        }
    }

    /// Runs every record the encoding writes through `program` (the sink's `filter`); its
    /// runtime errors count into `stats`.
    pub fn with_filter(mut self, program: Program, stats: Arc<SinkStats>) -> Encoder {
        self.filter = Some(RecordFilter::new(program, self.encoding.format, stats));
        self
    }

    /// The lines of `batch`, or `None` if this encoding writes none of its events.
    pub fn encode(&mut self, batch: &Batch) -> Option<Encoded> {
        let mut bytes = Vec::new();
        let mut marks = Vec::with_capacity(batch.events.len());
        self.encode_each(batch, &mut bytes, |end, event| {
            marks.push(Mark {
                end,
                seq: seq(event),
                ts: event.ts,
            })
        });
        if marks.is_empty() {
            return None;
        }
        Some(Encoded {
            upstream: Some(batch.upstream.clone()),
            bytes: Bytes::from(bytes),
            marks: marks.into(),
            fence: batch.fence.clone(),
        })
    }

    /// Appends the lines of `batch` to `out` and returns how many records they are: for a
    /// sink that gathers batches in one buffer of its own (stdout), so that a batch costs no
    /// allocation.
    pub fn encode_into(&mut self, batch: &Batch, out: &mut Vec<u8>) -> usize {
        let mut records = 0;
        self.encode_each(batch, out, |_, _| records += 1);
        records
    }

    /// Appends each event's line(s) to `out`, calling `written` with where each record's
    /// lines end and its event.
    fn encode_each(
        &mut self,
        batch: &Batch,
        out: &mut Vec<u8>,
        mut written: impl FnMut(usize, &Event),
    ) {
        let estimate: usize = batch.events.iter().map(|e| self.estimate(e)).sum();
        out.reserve(estimate);
        for event in &batch.events {
            let wrote = match &mut self.filter {
                Some(filter) => {
                    writes(&self.encoding, event) && filter.apply(&batch.upstream, event, out)
                }
                None => self.encoding.encode(&batch.upstream, event, out),
            };
            if wrote {
                written(out.len(), event);
            }
        }
    }

    /// About how long an event's line is, so a batch's buffer is allocated once.
    fn estimate(&self, event: &Event) -> usize {
        let envelope = match self.encoding.format {
            Format::Ndjson => 96,
            Format::Raw => 1,
        };
        let payload = match &event.kind {
            EventKind::Binary { data, .. } if !self.encoding.binary_bytes => data.len() / 3 * 4 + 4,
            _ => event.payload_len(),
        };
        envelope + payload
    }
}

/// Whether `encoding` writes `event` at all: data always; open/close/error in ndjson with
/// `events = true` (raw writes payloads, and events have none).
fn writes(encoding: &Encoding, event: &Event) -> bool {
    event.is_data() || (encoding.format == Format::Ndjson && encoding.events)
}

fn seq(event: &Event) -> Option<u64> {
    match &event.kind {
        EventKind::Text { seq, .. } | EventKind::Binary { seq, .. } => Some(*seq),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_boundaries_and_identity() {
        let encoding = Encoding {
            format: Format::Ndjson,
            events: false,
            parse_json: false,
            binary_bytes: false,
        };
        let batch = Batch {
            upstream: Arc::from("feed"),
            events: vec![
                Event::now(EventKind::Text {
                    seq: 7,
                    data: "a".into(),
                }),
                Event::now(EventKind::Close {
                    code: 1000,
                    reason: String::new(),
                    retry_in_ms: None,
                }),
                Event::now(EventKind::Binary {
                    seq: 8,
                    data: vec![1u8, 2, 3].into(),
                }),
            ],
            fence: None,
        };
        let encoded = Encoder::new(encoding).encode(&batch).expect("two records");
        let records: Vec<_> = encoded.records().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].upstream, records[0].seq, records[1].seq),
            (Some("feed"), Some(7), Some(8))
        );
        let mut expected = Vec::new();
        encoding.encode("feed", &batch.events[0], &mut expected);
        assert_eq!(records[0].line, &expected[..]);
        assert_eq!(records[0].line.len() + records[1].line.len(), encoded.len());
    }
}
