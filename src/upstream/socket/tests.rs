//! The socket against a server written byte by byte: a response cut mid-header resumes the
//! handshake, a frame in the same segment as the response is not lost, and the halves of
//! the Sink and Stream work as one task's.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::*;

/// Reads the client's request; returns its Sec-WebSocket-Key.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut request = Vec::new();
    let mut byte = [0; 1];
    while !request.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.expect("read"),
            1,
            "request cut"
        );
        request.push(byte[0]);
    }
    let request = String::from_utf8(request).expect("ASCII request");
    request
        .lines()
        .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
        .expect("a key")
        .to_string()
}

fn response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

/// An unmasked server text frame.
fn text_frame(text: &str) -> Vec<u8> {
    let mut frame = vec![0x81, u8::try_from(text.len()).expect("short")];
    frame.extend_from_slice(text.as_bytes());
    frame
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    (listener, url)
}

/// The client's handshake with the server at `url`, over a fresh TCP connection.
async fn open(url: &str) -> Result<(Socket<TcpStream>, Response), WsError> {
    let address = url.trim_start_matches("ws://").trim_end_matches('/');
    let stream = TcpStream::connect(address).await.expect("connect");
    client(url, stream, None).await
}

#[tokio::test]
async fn a_response_cut_mid_header_resumes_and_a_frame_in_its_segment_is_kept() {
    let (listener, url) = listener().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let key = read_request(&mut stream).await;
        let response = response(&key);
        let (first, rest) = response.split_at(20);
        stream.write_all(first).await.expect("write");
        stream.flush().await.expect("flush");
        // The client must wait for the rest, not fail or spin on half a response.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut rest = rest.to_vec();
        rest.extend(text_frame("first"));
        stream.write_all(&rest).await.expect("write");
        stream
            .write_all(&text_frame("second"))
            .await
            .expect("write");
        stream
    });
    let (mut socket, response) = open(&url).await.expect("handshake");
    assert_eq!(response.status(), 101);
    for expected in ["first", "second"] {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), expected),
            other => panic!("expected the text {expected:?}, got {other:?}"),
        }
    }
    drop(server.await.expect("server"));
}

#[tokio::test]
async fn a_refused_handshake_is_an_http_error() {
    let (listener, url) = listener().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_request(&mut stream).await;
        let body = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        stream.write_all(body.as_bytes()).await.expect("write");
    });
    match open(&url).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r)),
    }
    server.await.expect("server");
}

#[tokio::test]
async fn what_is_sent_arrives_masked_and_the_peer_close_ends_the_stream() {
    let (listener, url) = listener().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let key = read_request(&mut stream).await;
        stream.write_all(&response(&key)).await.expect("write");
        // A masked client text frame of 5 bytes: header, mask, payload.
        let mut frame = [0; 2 + 4 + 5];
        stream.read_exact(&mut frame).await.expect("frame");
        assert_eq!(frame[0], 0x81, "a final text frame");
        assert_eq!(frame[1], 0x80 | 5, "masked, 5 bytes");
        let mask = [frame[2], frame[3], frame[4], frame[5]];
        let payload: Vec<u8> = frame[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        // A Close with code 1000, then the end of the connection.
        stream
            .write_all(&[0x88, 2, 0x03, 0xe8])
            .await
            .expect("close");
        payload
    });
    let (mut socket, _) = open(&url).await.expect("handshake");
    socket.send(Message::text("hello")).await.expect("send");
    match socket.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the peer's Close, got {other:?}"),
    }
    assert_eq!(server.await.expect("server"), b"hello");
    // tungstenite answered the Close; the stream then ends and stays ended.
    socket
        .flush()
        .await
        .expect("the answer to the Close goes out");
    assert!(socket.next().await.is_none());
    assert!(socket.next().await.is_none());
}
