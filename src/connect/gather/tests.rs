//! Gathering: the bytes written are the encoder's lines in order, whichever went by
//! reference, and a short write goes on where it stopped.

use std::io::IoSlice;

use crate::record::Text;
use bytes::Bytes;

use super::*;
use crate::config::Format;
use crate::record::{Event, EventKind};

fn raw(binary_bytes: bool) -> Encoding {
    Encoding {
        format: Format::Raw,
        events: false,
        parse_json: false,
        binary_bytes,
    }
}

fn text(s: &str) -> Event {
    Event {
        ts: 1,
        kind: EventKind::Text {
            seq: 1,
            data: Text::from(s),
        },
        lag_ms: None,
    }
}

fn binary(b: &[u8]) -> Event {
    Event {
        ts: 1,
        kind: EventKind::Binary {
            seq: 1,
            data: Bytes::copy_from_slice(b),
        },
        lag_ms: None,
    }
}

fn flat(slices: &[IoSlice<'_>]) -> Vec<u8> {
    slices.iter().flat_map(|s| s.iter().copied()).collect()
}

#[test]
fn the_bytes_are_the_encoders_lines_in_order() {
    let large = "L".repeat(BY_REFERENCE_FROM);
    let broken = format!("{}\nx", "B".repeat(BY_REFERENCE_FROM));
    let events = [
        text("small"),
        text(&large),
        text(&large),
        text(&broken),
        binary(&[0, 1, 2]),
        binary(&vec![9; 2 * BY_REFERENCE_FROM]),
        text("end"),
    ];
    for encoding in [
        raw(false),
        raw(true),
        Encoding {
            format: Format::Ndjson,
            ..raw(false)
        },
    ] {
        let mut expected = Vec::new();
        let mut lines = Gather::default();
        for event in &events {
            encoding.encode("up", event, &mut expected);
            lines.push("up", event, encoding);
        }
        assert_eq!(flat(&lines.slices()), expected, "{encoding:?}");
        assert_eq!(lines.len(), expected.len());
        // Raw lines without a line break go by reference: the buffer holds the rest.
        if encoding == raw(true) {
            let by_reference = 2 * large.len() + 2 * BY_REFERENCE_FROM;
            assert_eq!(lines.buffered(), expected.len() - by_reference);
        }
        lines.clear(1 << 20);
        assert!(lines.is_empty() && lines.slices().is_empty());
    }
}

#[test]
fn a_gather_is_full_before_the_kernels_limit_on_pieces() {
    let large = text(&"x".repeat(BY_REFERENCE_FROM));
    let mut lines = Gather::default();
    while !lines.full() {
        lines.push("up", &text("between"), raw(false));
        lines.push("up", &large, raw(false));
    }
    assert!(lines.slices().len() <= 1024);
}

#[test]
fn short_writes_go_on_where_they_stopped() {
    let parts = [b"abc".as_slice(), b"", b"defgh", b"ij"];
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut out = Vec::new();
    let mut calls = 0;
    // Takes at most 2 bytes of the first piece each time, and is interrupted once.
    write_all_with(&mut slices, |s| {
        calls += 1;
        if calls == 2 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let first = s.iter().find(|s| !s.is_empty()).map_or(&[][..], |s| &s[..]);
        let n = first.len().min(2);
        out.extend_from_slice(&first[..n]);
        Ok(n)
    })
    .expect("written");
    assert_eq!(out, b"abcdefghij");
    let mut none: Vec<IoSlice<'_>> = vec![IoSlice::new(b"x")];
    let err = write_all_with(&mut none, |_| Ok(0)).expect_err("a write of 0");
    assert_eq!(err.kind(), io::ErrorKind::WriteZero);
}
