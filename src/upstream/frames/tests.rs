//! The reading side's unit tests: payloads whole, small ones copied as taken, the message limit, `reply`.

use super::*;
use crate::jq::Program;
use crate::upstream::arena::COPY_BELOW;

fn frames() -> Frames {
    Frames::new(
        Keepalive::new(None, Duration::from_secs(10), None, Instant::now()),
        0,
        None,
    )
}

/// Feeds `messages` as one batch; returns, per event, whether the payload is the same and
/// whether it stayed where tungstenite put it.
fn batch_of(messages: &[Message]) -> Vec<(bool, bool, usize)> {
    let mut frames = frames();
    let mut originals = Vec::new();
    for message in messages {
        let original = match message {
            Message::Text(t) => t.as_bytes().as_ptr(),
            Message::Binary(b) => b.as_ptr(),
            _ => unreachable!(),
        };
        frames.on_frame(Some(Ok(message.clone())), Instant::now(), 0, usize::MAX);
        originals.push(original);
    }
    assert_eq!(frames.batch.len(), messages.len());
    let mut seen = Vec::new();
    for ((event, message), original) in frames.batch.iter().zip(messages).zip(originals) {
        let (same, kept) = match (&event.kind, message) {
            (EventKind::Text { data, .. }, Message::Text(t)) => (
                data.as_bytes() == t.as_bytes(),
                data.as_bytes().as_ptr() == original,
            ),
            (EventKind::Binary { data, .. }, Message::Binary(b)) => {
                (data == b, data.as_ptr() == original)
            }
            other => panic!("kind changed: {other:?}"),
        };
        seen.push((same, kept, event.payload_len()));
    }
    seen
}

fn messages(sizes: &[usize], rounds: u8) -> Vec<Message> {
    let mut out = Vec::new();
    for round in 0..rounds {
        for (i, &size) in sizes.iter().enumerate() {
            let fill = round.wrapping_mul(31).wrapping_add(i as u8);
            // Multi-byte characters too: a copied text must still be the same string.
            let text = "x".repeat(size) + "é€" + &fill.to_string();
            out.push(if i % 2 == 0 {
                Message::text(text)
            } else {
                Message::Binary(Bytes::from(vec![fill; size]))
            });
        }
    }
    out
}

#[test]
fn small_payloads_are_copied_as_they_are_taken_and_large_ones_kept() {
    for rounds in [1, 20] {
        let small = [0, 1, 64, 4096, COPY_BELOW - 100];
        for (same, kept, len) in batch_of(&messages(&small, rounds)) {
            assert!(same, "payload changed");
            assert!(
                !kept,
                "a payload of {len} bytes was kept in tungstenite's buffer"
            );
        }
        // `COPY_BELOW` and more: the payload has a block of its own, kept as it is.
        for (same, kept, len) in batch_of(&messages(&[COPY_BELOW, 100_000], rounds)) {
            assert!(same, "payload changed");
            assert!(kept, "a payload of {len} bytes was copied");
        }
    }
}

#[test]
fn the_limit_takes_that_many_data_messages_and_drops_the_rest() {
    let mut frames = frames();
    frames.remaining = Some(2);
    let now = Instant::now();
    for i in 0..5 {
        assert!(!frames.limit_reached() || i >= 2);
        frames.on_frame(Some(Ok(Message::text(format!("m{i}")))), now, 0, usize::MAX);
        // Pings are not data: they neither count nor are dropped from keepalive.
        frames.on_frame(Some(Ok(Message::Ping(Bytes::new()))), now, 0, usize::MAX);
    }
    assert!(frames.limit_reached() && frames.batch_full());
    let texts: Vec<_> = frames
        .batch
        .iter()
        .map(|e| match &e.kind {
            EventKind::Text { seq, data } => (*seq, data.to_str().into_owned()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, [(1, "m0".to_string()), (2, "m1".to_string())]);
}

#[test]
fn answered_pings_are_neither_data_nor_counted_against_the_limit() {
    let program = Program::compile("select(.ping?) | {pong: .ping}").unwrap();
    let mut frames = frames().shaped(None, Decompress::None, Some(Replier::new(program)));
    frames.remaining = Some(2);
    let now = Instant::now();
    for text in [r#"{"ping":1}"#, "a", r#"{"ping":2}"#, r#"{"ping":3}"#, "b"] {
        frames.on_frame(Some(Ok(Message::text(text))), now, 0, usize::MAX);
    }
    let texts: Vec<_> = frames
        .batch
        .iter()
        .map(|e| match &e.kind {
            EventKind::Text { seq, data } => (*seq, data.to_str().into_owned()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, [(1, "a".to_string()), (2, "b".to_string())]);
    assert!(frames.limit_reached());
    let mut outgoing = super::super::outgoing::Outgoing::default();
    frames.reply.as_mut().unwrap().send_into(&mut outgoing);
    assert_eq!(outgoing.held(), 3);
}
