use std::sync::Arc;

use super::*;
use crate::config::Format;
use crate::hub::Batch;
use crate::record::{Encoding, Event, EventKind};
use crate::sink::Encoder;

/// A run of `texts` text records of `upstream`, as the sink's queue hands it out.
fn run(upstream: &str, texts: u64) -> Encoded {
    let events = (1..=texts)
        .map(|seq| {
            Event::now(EventKind::Text {
                seq,
                data: format!("{upstream} {seq}").as_str().into(),
            })
        })
        .collect();
    let encoding = Encoding {
        format: Format::Ndjson,
        events: false,
        parse_json: false,
        binary_bytes: false,
    };
    Encoder::new(encoding)
        .encode(&Batch::new(Arc::from(upstream), events))
        .expect("records")
}

fn upstreams(round: &RedisRound) -> Vec<&str> {
    round.runs.iter().filter_map(Encoded::upstream).collect()
}

#[test]
fn a_round_that_loses_a_run_keeps_the_fate_and_entry_id_of_every_other_record() {
    let round = RedisRound {
        runs: vec![run("a", 2), run("b", 1), run("c", 2)],
        fates: vec![
            Fate::Sent((10, 1)),
            Fate::Stored,
            Fate::Sent((10, 2)),
            Fate::Unsent,
            Fate::Sent((11, 2)),
        ],
        why: Vec::new(),
    };
    let kept = round.retained(&[true, false, true]);
    assert_eq!(upstreams(&kept), ["a", "c"]);
    assert_eq!(
        kept.fates,
        [
            Fate::Sent((10, 1)),
            Fate::Stored,
            Fate::Unsent,
            Fate::Sent((11, 2))
        ]
    );
    assert_eq!(kept.records().count(), kept.fates.len());
}

#[test]
fn a_round_never_sent_loses_its_runs_and_gets_ids_when_first_sent() {
    let round = RedisRound {
        runs: vec![run("a", 1), run("b", 3)],
        fates: Vec::new(),
        why: Vec::new(),
    };
    let kept = round.retained(&[false, true]);
    assert_eq!(upstreams(&kept), ["b"]);
    assert!(kept.fates.is_empty());
}
