//! websocat's flags on `wsbridge connect`, as its users type them: `-t` (text, the default),
//! `-b` (binary), `-u` (send only), `-n`/`--no-close` (no Close at stdin EOF: read until the
//! peer closes), `--basic-auth USER:PASS` and `--socks5 HOST:PORT` (through a SOCKS5 proxy
//! started here). Each against a real server on loopback.

use std::net::SocketAddr;
use std::process::Stdio;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Writes `input` to the child's stdin and closes it.
async fn feed(child: &mut tokio::process::Child, input: &[u8]) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
}

async fn finish(child: tokio::process::Child) -> std::process::Output {
    timeout(SOON, child.wait_with_output())
        .await
        .expect("connect exits in time")
        .unwrap()
}

#[tokio::test]
async fn dash_t_is_text_the_default() {
    let (addr, _) = TestServer::start(ServerOptions::default()).await.echo();
    let mut child = spawn_connect(&["-t", &format!("ws://{addr}/")]);
    feed(&mut child, b"one\ntwo\n").await;
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
}

#[tokio::test]
async fn dash_b_is_binary_and_dash_u_is_send_only() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut child = spawn_connect(&["-b", "-u", &server.url("/")]);
    let mut conn = server.accept().await;
    feed(&mut child, &[0, 1, 2, 255]).await;
    assert_eq!(conn.recv().await, Message::binary(vec![0u8, 1, 2, 255]));
    // Send only: what the server sends is not printed.
    conn.send_text("not printed").await;
    assert!(
        matches!(conn.recv().await, Message::Close(_)),
        "Close at EOF"
    );
    drop(conn); // a server ends the TCP connection after the Close handshake
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[tokio::test]
async fn no_close_keeps_reading_after_stdin_eof_until_the_peer_closes() {
    for flag in ["-n", "--no-close"] {
        let mut server = TestServer::start(ServerOptions::default()).await;
        let mut child = spawn_connect(&[flag, "--linger", "0s", &server.url("/")]);
        let mut conn = server.accept().await;
        feed(&mut child, b"last line\n").await;
        assert_eq!(conn.recv_text().await, "last line");
        // Without -n, --linger 0s would send Close at EOF; with it, the feed still arrives.
        conn.send_text("after eof").await;
        conn.send_text("still here").await;
        conn.send_close(1000, "done").await;
        assert!(
            matches!(conn.recv().await, Message::Close(_)),
            "{flag}: our Close answers theirs"
        );
        drop(conn);
        let out = finish(child).await;
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "after eof\nstill here\n", "{flag}");
    }
}

#[tokio::test]
async fn basic_auth_sends_the_header_and_never_logs_the_password() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let child = Command::new(bin())
        .args([
            "connect",
            "-vv",
            "-U",
            "--basic-auth",
            "Aladdin:open sesame",
        ])
        .arg(server.url("/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    assert_eq!(
        conn.header("authorization"),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
    conn.send_close(1000, "").await;
    drop(conn);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(
        !log.contains("open sesame") && !log.contains("QWxhZGRpbjpvcGVuIHNlc2FtZQ"),
        "{log}"
    );

    let out = Command::new(bin())
        .args(["connect", "--basic-auth", "no-colon", "ws://127.0.0.1:1/"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("USER:PASS"),
        "{}",
        text(&out.stderr)
    );
}

/// A SOCKS5 proxy without authentication that serves one CONNECT and reports the target.
async fn socks5_once() -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut greeting = [0u8; 2];
        client.read_exact(&mut greeting).await.unwrap();
        let mut methods = vec![0u8; greeting[1] as usize];
        client.read_exact(&mut methods).await.unwrap();
        assert!(methods.contains(&0), "no-auth offered");
        client.write_all(&[5, 0]).await.unwrap();
        let mut head = [0u8; 4];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..3], &[5, 1, 0], "CONNECT");
        let host = match head[3] {
            1 => {
                let mut ip = [0u8; 4];
                client.read_exact(&mut ip).await.unwrap();
                std::net::Ipv4Addr::from(ip).to_string()
            }
            3 => {
                let len = client.read_u8().await.unwrap();
                let mut name = vec![0u8; len as usize];
                client.read_exact(&mut name).await.unwrap();
                String::from_utf8(name).unwrap()
            }
            other => panic!("address type {other}"),
        };
        let port = client.read_u16().await.unwrap();
        let target = format!("{host}:{port}");
        let mut upstream = TcpStream::connect(&target).await.unwrap();
        client
            .write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])
            .await
            .unwrap();
        let _ = tx.send(target);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    (addr, rx)
}

#[tokio::test]
async fn socks5_is_proxy_socks5() {
    let (addr, _) = TestServer::start(ServerOptions::default()).await.echo();
    let (proxy, target) = socks5_once().await;
    let mut child = spawn_connect(&["--socks5", &proxy.to_string(), &format!("ws://{addr}/")]);
    feed(&mut child, b"through the proxy\n").await;
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through the proxy\n");
    assert_eq!(target.await.unwrap(), addr.to_string());

    let out = Command::new(bin())
        .args(["connect", "--socks5", "127.0.0.1:1080", "--proxy", "direct"])
        .arg(format!("ws://{addr}/"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "one proxy: {}",
        text(&out.stderr)
    );
}
