//! The queue's bounds, taken and given back.

use super::*;

fn run(len: usize) -> Encoded {
    Encoded::notice(vec![b'x'; len])
}

#[tokio::test]
async fn either_bound_makes_the_queue_full() {
    let stats = Arc::new(SinkStats::default());
    let (tx, mut rx) = queue(
        Bounds {
            records: 3,
            bytes: 1000,
        },
        stats.clone(),
    );
    // Bytes bind first.
    assert_eq!(tx.offer(&run(600)), Offer::Queued);
    assert_eq!(tx.offer(&run(600)), Offer::Full);
    assert_eq!(stats.bytes_buffered.load(Ordering::Relaxed), 600);
    let round = rx.next_round().await.unwrap();
    assert_eq!(round.len(), 1);
    assert_eq!(tx.offer(&run(600)), Offer::Full, "taken is not yet written");
    rx.written();
    assert_eq!(stats.bytes_buffered.load(Ordering::Relaxed), 0);
    // Records bind first.
    for _ in 0..3 {
        assert_eq!(tx.offer(&run(10)), Offer::Queued);
    }
    assert_eq!(tx.offer(&run(10)), Offer::Full);
    drop(rx);
    assert_eq!(tx.offer(&run(10)), Offer::Gone);
    assert_eq!(stats.bytes_buffered.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_run_larger_than_the_bounds_fits_an_empty_queue() {
    let stats = Arc::new(SinkStats::default());
    let (tx, mut rx) = queue(
        Bounds {
            records: 1,
            bytes: 100,
        },
        stats,
    );
    assert_eq!(tx.offer_waiting(&run(10_000)).await, Offer::Queued);
    assert_eq!(tx.offer(&run(1)), Offer::Full);
    assert_eq!(rx.next_round().await.unwrap()[0].len(), 10_000);
    rx.written();
    assert_eq!(tx.offer(&run(1)), Offer::Queued);
}

#[tokio::test]
async fn runs_are_given_back_one_by_one() {
    let stats = Arc::new(SinkStats::default());
    let (tx, mut rx) = queue(
        Bounds {
            records: 10,
            bytes: 1000,
        },
        stats.clone(),
    );
    assert_eq!(tx.offer(&run(600)), Offer::Queued);
    assert_eq!(tx.offer(&run(300)), Offer::Queued);
    let round = rx.next_round().await.unwrap();
    assert_eq!(tx.offer(&run(500)), Offer::Full);
    rx.written_run(&round[0]);
    assert_eq!(stats.bytes_buffered.load(Ordering::Relaxed), 300);
    assert_eq!(tx.offer(&run(500)), Offer::Queued);
    rx.written_run(&round[1]);
    drop(rx);
    assert_eq!(stats.bytes_buffered.load(Ordering::Relaxed), 0);
}
