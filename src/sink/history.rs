//! A listener sink's history for late joiners (`replay = N`): the newest N data records of
//! each upstream routed to the sink, kept as the encoded runs every client was sent.
//!
//! The sink's [`super::Driver`] owns it and is the only task touching it: it adds each batch
//! before handing the batch to the clients, and a new client gets a snapshot when the driver
//! opens its queue, between two batches. So a late joiner's first live record is the one
//! after the last record of its history: no gap, no repeat, however hot the feed.
//!
//! Memory: at most N data records per upstream (with the open/close/error records among
//! them), and at most `max_bytes` of encoded lines for all upstreams together (the client
//! queue's `buffer_bytes`); when the bytes bind first, the upstream holding the most loses
//! its oldest records. Runs share the bytes clients were sent, so a partly kept batch holds
//! its whole buffer until its last record ages out.

use std::collections::VecDeque;

use super::Encoded;

/// The records a history hands a new client, and what they weigh in its queue.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The runs, oldest first within each upstream.
    pub runs: Vec<Encoded>,
    /// Records in them.
    pub records: usize,
    /// Bytes in them.
    pub bytes: usize,
}

/// One run kept, with its data records counted once.
#[derive(Debug)]
struct Held {
    run: Encoded,
    data: usize,
}

/// What is kept of one upstream.
#[derive(Debug)]
struct Kept {
    upstream: String,
    runs: VecDeque<Held>,
    /// Data records held.
    data: usize,
    /// Bytes held.
    bytes: usize,
}

impl Kept {
    /// Drops the oldest records until at most `max` data records are left.
    fn keep_data(&mut self, max: usize) {
        while self.data > max {
            let Some(front) = self.runs.front_mut() else {
                break;
            };
            let excess = self.data - max;
            if front.data <= excess {
                self.drop_front();
                continue;
            }
            // Cut just after the excess-th data record of this run.
            let mut seen = 0;
            let mut cut = 0;
            for (i, record) in front.run.records().enumerate() {
                if record.seq.is_some() {
                    seen += 1;
                    if seen == excess {
                        cut = i + 1;
                        break;
                    }
                }
            }
            self.cut_front(cut, excess);
        }
    }

    /// Drops the oldest records holding at least `excess` bytes.
    fn shed_bytes(&mut self, excess: usize) {
        let Some(front) = self.runs.front() else {
            return;
        };
        if front.run.len() <= excess || front.run.record_count() == 1 {
            self.drop_front();
            return;
        }
        let (mut bytes, mut data, mut cut) = (0, 0, 0);
        for record in front.run.records() {
            bytes += record.line.len();
            data += usize::from(record.seq.is_some());
            cut += 1;
            if bytes >= excess {
                break;
            }
        }
        self.cut_front(cut, data);
    }

    fn drop_front(&mut self) {
        if let Some(held) = self.runs.pop_front() {
            self.data -= held.data;
            self.bytes -= held.run.len();
        }
    }

    /// Drops the first `records` records of the oldest run, `data` of them data records.
    fn cut_front(&mut self, records: usize, data: usize) {
        let Some(front) = self.runs.front_mut() else {
            return;
        };
        if records >= front.run.record_count() {
            self.drop_front();
            return;
        }
        let rest = front.run.skip(records);
        self.bytes -= front.run.len() - rest.len();
        self.data -= data;
        front.data -= data;
        front.run = rest;
    }
}

/// The newest records of each upstream of one sink.
#[derive(Debug)]
pub struct History {
    /// Data records kept per upstream (`replay`).
    per_upstream: usize,
    /// Bytes kept for all upstreams together.
    max_bytes: usize,
    upstreams: Vec<Kept>,
    bytes: usize,
}

impl History {
    /// A history of `per_upstream` data records per upstream, `max_bytes` in all.
    pub fn new(per_upstream: usize, max_bytes: usize) -> History {
        History {
            per_upstream,
            max_bytes: max_bytes.max(1),
            upstreams: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a batch's records (a run of one upstream), dropping what ages out.
    pub fn push(&mut self, run: &Encoded) {
        let Some(upstream) = run.records().next().and_then(|r| r.upstream) else {
            return; // a notice of our own, not part of any feed
        };
        // A sink routes a handful of upstreams: a scan beats hashing the name per batch.
        let index = match self.upstreams.iter().position(|k| k.upstream == upstream) {
            Some(i) => i,
            None => {
                self.upstreams.push(Kept {
                    upstream: upstream.to_string(),
                    runs: VecDeque::new(),
                    data: 0,
                    bytes: 0,
                });
                self.upstreams.len() - 1
            }
        };
        let kept = &mut self.upstreams[index];
        let data = run.records().filter(|r| r.seq.is_some()).count();
        kept.runs.push_back(Held {
            run: run.clone(),
            data,
        });
        kept.data += data;
        kept.bytes += run.len();
        let before = kept.bytes;
        kept.keep_data(self.per_upstream);
        self.bytes = self.bytes + run.len() - (before - kept.bytes);
        while self.bytes > self.max_bytes {
            let Some(largest) = self.upstreams.iter_mut().max_by_key(|k| k.bytes) else {
                break;
            };
            let before = largest.bytes;
            largest.shed_bytes(self.bytes - self.max_bytes);
            let shed = before - largest.bytes;
            if shed == 0 {
                break;
            }
            self.bytes -= shed;
        }
    }

    /// Everything kept, for a client that joins now.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for held in self.upstreams.iter().flat_map(|k| &k.runs) {
            snapshot.records += held.run.record_count();
            snapshot.bytes += held.run.len();
            snapshot.runs.push(held.run.clone());
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Format;
    use crate::hub::Batch;
    use crate::record::{Encoding, Event, EventKind};
    use crate::sink::Encoder;

    fn encoder() -> Encoder {
        Encoder::new(Encoding {
            format: Format::Ndjson,
            events: true,
            parse_json: false,
            binary_bytes: false,
        })
    }

    /// A run of `upstream` with data records `seqs` (and a close event after `close_after`).
    fn run(
        upstream: &str,
        seqs: std::ops::RangeInclusive<u64>,
        close_after: Option<u64>,
    ) -> Encoded {
        let mut events = Vec::new();
        for seq in seqs {
            events.push(Event::now(EventKind::Text {
                seq,
                data: format!("m{seq}").into(),
            }));
            if close_after == Some(seq) {
                events.push(Event::now(EventKind::Close {
                    code: 1006,
                    reason: String::new(),
                    retry_in_ms: None,
                }));
            }
        }
        let batch = Batch::new(Arc::from(upstream), events);
        encoder().encode(&batch).expect("records")
    }

    fn seqs(snapshot: &Snapshot, upstream: &str) -> Vec<u64> {
        snapshot
            .runs
            .iter()
            .flat_map(|r| r.records())
            .filter(|r| r.upstream == Some(upstream))
            .filter_map(|r| r.seq)
            .collect()
    }

    #[test]
    fn keeps_the_newest_n_data_records_of_each_upstream_across_batch_boundaries() {
        let mut history = History::new(5, usize::MAX);
        history.push(&run("a", 1..=3, None));
        history.push(&run("b", 1..=2, None));
        history.push(&run("a", 4..=9, Some(6)));
        history.push(&run("a", 10..=11, None));
        let snapshot = history.snapshot();
        assert_eq!(seqs(&snapshot, "a"), vec![7, 8, 9, 10, 11]);
        assert_eq!(seqs(&snapshot, "b"), vec![1, 2]);
        // The close between 6 and 7 is kept: it tells the joiner the feed reconnected there.
        assert_eq!(snapshot.records, 8);
        let bytes: usize = snapshot.runs.iter().map(Encoded::len).sum();
        assert_eq!(snapshot.bytes, bytes);
        // Every kept line is whole.
        for record in snapshot.runs.iter().flat_map(|r| r.records()) {
            assert!(record.line.starts_with(b"{") && record.line.ends_with(b"}\n"));
        }
    }

    #[test]
    fn the_bytes_bound_takes_from_the_largest_upstream_first() {
        let one = run("a", 1..=1, None).len();
        let mut history = History::new(100, one * 10);
        history.push(&run("b", 1..=2, None));
        history.push(&run("a", 1..=20, None));
        let snapshot = history.snapshot();
        assert!(
            snapshot.bytes <= one * 10,
            "{} > {}",
            snapshot.bytes,
            one * 10
        );
        assert_eq!(seqs(&snapshot, "b"), vec![1, 2]);
        let a = seqs(&snapshot, "a");
        assert_eq!(a.last(), Some(&20));
        assert!(a.windows(2).all(|w| w[1] == w[0] + 1), "{a:?}");
    }
}
