//! The reading side's unit tests: payloads whole whether copied or not, and the message limit, `reply`.

use super::*;
use crate::jq::Program;

fn frames() -> Frames {
    Frames::new(
        Keepalive::new(None, Duration::from_secs(10), None, Instant::now()),
        0,
        None,
    )
}

#[tokio::test]
async fn payloads_come_through_whole_whether_copied_or_not() {
    let mut frames = frames();
    // Sizes around the copy threshold and enough of them to fill several arenas.
    let sizes = [0, 1, 64, 4096, DETACH_BELOW - 1, DETACH_BELOW, 100_000];
    let mut sent = Vec::new();
    for round in 0..20u8 {
        for (i, &size) in sizes.iter().enumerate() {
            let fill = round.wrapping_mul(31).wrapping_add(i as u8);
            // Multi-byte characters too: a copied text must still be the same string.
            let text = "x".repeat(size) + "é€" + &fill.to_string();
            let binary = Bytes::from(vec![fill; size]);
            let message = if i % 2 == 0 {
                Message::text(text.clone())
            } else {
                Message::Binary(binary.clone())
            };
            let original = match &message {
                Message::Text(t) => t.as_bytes().as_ptr(),
                Message::Binary(b) => b.as_ptr(),
                _ => unreachable!(),
            };
            frames.on_frame(Some(Ok(message.clone())), Instant::now(), 0, usize::MAX);
            sent.push((message, original));
        }
    }
    assert_eq!(frames.batch.len(), sent.len());
    for (event, (message, original)) in frames.batch.iter().zip(&sent) {
        let (got, kept) = match (&event.kind, message) {
            (EventKind::Text { data, .. }, Message::Text(t)) => (
                data.as_str() == t.as_str(),
                data.as_bytes().as_ptr() == *original,
            ),
            (EventKind::Binary { data, .. }, Message::Binary(b)) => {
                (data == b, data.as_ptr() == *original)
            }
            other => panic!("kind changed: {other:?}"),
        };
        assert!(got, "payload changed");
        let len = event.payload_len();
        assert_eq!(
            kept,
            len >= DETACH_BELOW,
            "copied or not by size ({len} bytes)"
        );
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
