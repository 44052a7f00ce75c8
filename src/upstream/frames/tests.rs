//! The reading side's unit tests: payloads whole, kept in dense batches and copied in sparse ones, and the message limit, `reply`.

use super::*;
use crate::jq::Program;

fn frames() -> Frames {
    Frames::new(
        Keepalive::new(None, Duration::from_secs(10), None, Instant::now()),
        0,
        None,
    )
}

/// Feeds `messages` as one batch, then settles it as `take_ready` does; returns, per event,
/// whether the payload is the same and whether it stayed where it was.
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
    frames.detach_sparse();
    assert_eq!(frames.batch.len(), messages.len());
    let mut seen = Vec::new();
    for ((event, message), original) in frames.batch.iter().zip(messages).zip(originals) {
        let (same, kept) = match (&event.kind, message) {
            (EventKind::Text { data, .. }, Message::Text(t)) => (
                data.as_str() == t.as_str(),
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
fn a_dense_batch_keeps_every_payload_where_it_was_read() {
    let sizes = [0, 1, 64, 4096, DETACH_BELOW - 1, DETACH_BELOW, 100_000];
    for (same, kept, len) in batch_of(&messages(&sizes, 20)) {
        assert!(same, "payload changed");
        assert!(kept, "a payload of {len} bytes was copied");
    }
    // Many small ones make a dense batch too.
    let small: Vec<_> = (0..=DENSE_BATCH / 64)
        .map(|i| Message::text(format!("{i:064}")))
        .collect();
    assert!(batch_of(&small).iter().all(|&(same, kept, _)| same && kept));
}

#[test]
fn a_sparse_batch_copies_its_small_payloads() {
    let sizes = [0, 1, 64, 4096, DETACH_BELOW - 100];
    for n in [1, 2, 5] {
        for (same, kept, len) in batch_of(&messages(&sizes, 1)[..n]) {
            assert!(same, "payload changed");
            assert!(!kept, "a payload of {len} bytes in a sparse batch was kept");
        }
    }
    // A large one fills its block: kept, and the small ones beside it are copied.
    let seen = batch_of(&messages(&[10, DETACH_BELOW + 1], 1));
    assert_eq!(
        seen.iter()
            .map(|&(same, kept, _)| (same, kept))
            .collect::<Vec<_>>(),
        [(true, false), (true, true)]
    );
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
            EventKind::Text { seq, data } => (*seq, data.to_string()),
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
            EventKind::Text { seq, data } => (*seq, data.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, [(1, "a".to_string()), (2, "b".to_string())]);
    assert!(frames.limit_reached());
    let mut outgoing = super::super::outgoing::Outgoing::default();
    frames.reply.as_mut().unwrap().send_into(&mut outgoing);
    assert_eq!(outgoing.held(), 3);
}
