//! Reads that adapt, on an in-memory pipe: the bytes come through in order, a burst is read
//! ahead, and nothing is held once the socket is empty.

use std::future::poll_fn;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One read of at most `len` bytes, as tungstenite asks; `None` if the stream would wait.
fn try_read<S: AsyncRead + Unpin>(r: &mut ReadAhead<S>, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut out = ReadBuf::new(&mut buf);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match Pin::new(&mut *r).poll_read(&mut cx, &mut out) {
        Poll::Ready(result) => {
            result.unwrap();
            let n = out.filled().len();
            Some(buf[..n].to_vec())
        }
        Poll::Pending => None,
    }
}

#[tokio::test]
async fn a_trickle_is_read_directly_and_holds_nothing() {
    let (mut peer, socket) = tokio::io::duplex(1 << 20);
    let mut r = ReadAhead::new(socket);
    for i in 0..100u8 {
        peer.write_all(&[i; 64]).await.unwrap();
        assert_eq!(try_read(&mut r, TUNGSTENITE_READ), Some(vec![i; 64]));
        assert_eq!(try_read(&mut r, TUNGSTENITE_READ), None);
        assert_eq!(r.held(), 0);
    }
}

#[tokio::test]
async fn a_burst_is_read_ahead_then_given_back() {
    let (mut peer, socket) = tokio::io::duplex(4 << 20);
    let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    peer.write_all(&sent).await.unwrap();
    let mut r = ReadAhead::new(socket);
    let mut got = Vec::new();
    let mut ahead = false;
    while let Some(chunk) = try_read(&mut r, TUNGSTENITE_READ) {
        assert!(!chunk.is_empty());
        got.extend_from_slice(&chunk);
        ahead |= r.held() > TUNGSTENITE_READ;
    }
    assert!(ahead, "a burst is read ahead");
    assert!(got == sent, "the bytes come through in order");
    assert_eq!(r.held(), 0, "given back once the socket is empty");
    // And it streams again with the next burst.
    peer.write_all(&sent[..200_000]).await.unwrap();
    let mut again = Vec::new();
    while let Some(chunk) = try_read(&mut r, TUNGSTENITE_READ) {
        again.extend_from_slice(&chunk);
    }
    assert!(again == sent[..200_000]);
}

#[tokio::test]
async fn the_end_of_the_stream_and_writes_pass_through() {
    let (mut peer, socket) = tokio::io::duplex(1 << 20);
    let mut r = ReadAhead::new(socket);
    peer.write_all(&[7; 100_000]).await.unwrap();
    r.write_all(b"hello").await.unwrap();
    r.flush().await.unwrap();
    drop(peer.shutdown().await);
    let mut answer = [0; 5];
    peer.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"hello");
    drop(peer);
    let mut all = Vec::new();
    poll_fn(|cx| {
        let mut buf = [0; 1000];
        let mut out = ReadBuf::new(&mut buf);
        let r = Pin::new(&mut r).poll_read(cx, &mut out);
        all.extend_from_slice(out.filled());
        match r {
            Poll::Ready(Ok(())) if out.filled().is_empty() => Poll::Ready(()),
            Poll::Ready(Ok(())) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
    assert_eq!(all, vec![7; 100_000]);
}

#[tokio::test]
async fn small_asks_in_a_stream_start_reading_ahead_too() {
    // tungstenite asks for what is left of its block, which can be a few hundred bytes.
    let (mut peer, socket) = tokio::io::duplex(1 << 20);
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    peer.write_all(&sent).await.unwrap();
    let mut r = ReadAhead::new(socket);
    let mut got = Vec::new();
    let mut reads_before_ahead = 0;
    while let Some(chunk) = try_read(&mut r, 726) {
        got.extend_from_slice(&chunk);
        if r.held() == 0 {
            reads_before_ahead += 1;
        }
    }
    assert!(got == sent);
    assert!(reads_before_ahead < 20, "{reads_before_ahead} direct reads");
}
