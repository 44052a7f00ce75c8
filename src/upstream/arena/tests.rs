//! The arena's unit tests: copies are whole, blocks come back once their payloads are gone,
//! and a quiet connection keeps no large block.

use super::*;

/// The address of the block a payload was copied into.
fn block_of(copy: &Bytes) -> usize {
    copy.as_ptr() as usize
}

#[test]
fn copies_are_the_payloads_and_large_ones_are_not_copied() {
    let mut arena = Arena::default();
    for size in [0, 1, 100, 4096, COPY_BELOW - 1] {
        let payload = vec![size as u8; size];
        assert_eq!(arena.copy(&payload).as_deref(), Some(&payload[..]));
    }
    assert_eq!(arena.copy(&vec![0; COPY_BELOW]), None);
}

#[test]
fn a_stream_reuses_its_two_blocks_once_their_payloads_are_written() {
    let mut arena = Arena::default();
    arena.streaming();
    let payload = [7u8; 4096];
    let per_block = STREAM_BLOCK / payload.len();
    // Fill a first block, then a second; the first one's payloads are then "written".
    let first: Vec<Bytes> = (0..per_block)
        .filter_map(|_| arena.copy(&payload))
        .collect();
    let second: Vec<Bytes> = (0..per_block)
        .filter_map(|_| arena.copy(&payload))
        .collect();
    let (first_at, second_at) = (block_of(&first[0]), block_of(&second[0]));
    assert_ne!(first_at, second_at, "two blocks");
    drop(first);
    // The third block is the first one again, from its start.
    let third = arena.copy(&payload).expect("a copy");
    assert_eq!(
        block_of(&third),
        first_at,
        "the written block is used again"
    );
    // A block whose payloads are still held is never written over: a new one is taken.
    let rest: Vec<Bytes> = (1..per_block)
        .filter_map(|_| arena.copy(&payload))
        .collect();
    let fourth = arena.copy(&payload).expect("a copy");
    assert_ne!(
        block_of(&fourth),
        second_at,
        "the held block was written over"
    );
    assert!(second.iter().all(|b| b[..] == payload[..]));
    assert!(rest.iter().chain([&third]).all(|b| b[..] == payload[..]));
}

#[test]
fn a_quiet_connection_lets_its_large_blocks_go() {
    let mut arena = Arena::default();
    arena.streaming();
    let kept = arena.copy(&[1u8; 100]).expect("a copy");
    assert!(arena.held() >= STREAM_BLOCK - 100);
    arena.idle();
    assert_eq!(arena.held(), 0, "an idle connection holds a large block");
    // The payload copied before keeps its bytes; the next copies take a small block.
    assert_eq!(kept[..], [1u8; 100]);
    arena.copy(&[2u8; 100]).expect("a copy");
    assert!(arena.held() <= TRICKLE_BLOCK);
}
