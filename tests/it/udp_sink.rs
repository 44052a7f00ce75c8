//! The udp sink on the real binary and real sockets: a datagram per record on loopback, in
//! order and without a newline; a record too large for a datagram counted, never split,
//! with the records after it delivered; a multicast group on the loopback interface; a
//! closed port counted (`io`) without stopping the sink. Each ends with routed == written +
//! dropped from `/status`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::SinkExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wsbridge::metrics::SinkStatus;

use crate::brokers::{fed_number, feed, sink_status};
use crate::common::*;

/// A receiving socket with a receive buffer large enough for a burst (forced where the
/// test runs as root, else up to the system's limit).
fn receiver(socket: std::net::UdpSocket) -> UdpSocket {
    const RCVBUF: usize = 8 << 20;
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, RCVBUF).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, RCVBUF);
    }
    socket.set_nonblocking(true).unwrap();
    UdpSocket::from_std(socket).unwrap()
}

fn config(server: &TestServer, metrics: u16, sink_keys: &str) -> String {
    TestConfig::new()
        .shutdown_timeout("5s")
        .metrics(metrics)
        .upstream("feed", &server.url("/"), "")
        .sink("udp", &format!("events = false\n{sink_keys}"))
        .to_string()
}

/// Reads datagrams until `count` data records came, checking they are numbered 1.. in order.
async fn receive_in_order(socket: &UdpSocket, count: u64, daemon: &Daemon) {
    let mut buf = vec![0u8; 70_000];
    for next in 1..=count {
        let n = tokio::time::timeout(SOON * 2, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no datagram {next} of {count}; stderr:\n{}",
                    daemon.stderr()
                )
            })
            .expect("recv");
        let datagram = &buf[..n];
        assert_ne!(datagram.last(), Some(&b'\n'), "a datagram has no newline");
        let record: serde_json::Value =
            serde_json::from_slice(datagram).expect("one JSON record per datagram");
        let data = record["data"].as_str().expect("text data");
        assert_eq!(fed_number(data.as_bytes()), next, "in order, none missing");
    }
}

/// Waits until the sink has settled (nothing buffered, routed == written + dropped) with at
/// least `routed` records routed.
async fn settled(metrics: u16, routed: u64) -> SinkStatus {
    let deadline = Instant::now() + SOON * 2;
    loop {
        let s = sink_status(([127, 0, 0, 1], metrics).into()).await;
        if s.records_routed >= routed
            && s.bytes_buffered == 0
            && s.records_routed == s.records_written + s.records_dropped
        {
            return s;
        }
        assert!(Instant::now() < deadline, "the sink did not settle: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_thousand_datagrams_arrive_in_order_on_loopback() {
    const COUNT: u64 = 2_000;
    let socket = receiver(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    let target = socket.local_addr().unwrap();
    let mut server = TestServer::start(ServerOptions::default()).await;
    let metrics = free_port();
    let daemon = Daemon::start(&config(&server, metrics, &format!("target = \"{target}\""))).await;
    let started = Instant::now();
    let _feed = feed(&mut server, COUNT).await;
    receive_in_order(&socket, COUNT, &daemon).await;
    let took = started.elapsed();
    let s = settled(metrics, COUNT).await;
    eprintln!(
        "FIGURES udp unicast: {COUNT}/{COUNT} datagrams in order in {took:.1?}; routed {}, written {}, dropped {}",
        s.records_routed, s.records_written, s.records_dropped
    );
    assert_eq!(
        (s.records_routed, s.records_written, s.records_dropped),
        (COUNT, COUNT, 0)
    );
}

#[tokio::test]
async fn a_record_too_large_for_a_datagram_is_counted_and_the_next_ones_go() {
    let socket = receiver(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    let target = socket.local_addr().unwrap();
    let mut server = TestServer::start(ServerOptions::default()).await;
    let metrics = free_port();
    let daemon = Daemon::start(&config(&server, metrics, &format!("target = \"{target}\""))).await;
    let mut conn = server.accept().await;
    let numbered = |n: u64| format!("{{\"n\":{n},\"pad\":\"abc\"}}");
    for n in 1..=5 {
        conn.ws.send(Message::text(numbered(n))).await.unwrap();
    }
    // 100 KB: more than the 65,507 bytes an IPv4 datagram holds.
    let huge = format!("{{\"big\":\"{}\"}}", "x".repeat(100_000));
    conn.ws.send(Message::text(huge)).await.unwrap();
    for n in 6..=10 {
        conn.ws.send(Message::text(numbered(n))).await.unwrap();
    }
    receive_in_order(&socket, 10, &daemon).await;
    let s = settled(metrics, 11).await;
    assert_eq!(s.records_written, 10, "{s:?}");
    assert_eq!(s.dropped_by_reason.get("too_large"), Some(&1), "{s:?}");
    assert_eq!(s.records_routed, s.records_written + s.records_dropped);
    drop(conn);
}

#[tokio::test]
async fn a_multicast_group_on_the_loopback_interface() {
    const COUNT: u64 = 300;
    let group = Ipv4Addr::new(239, 255, 77, 1);
    let std_socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    std_socket
        .join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)
        .expect("join the group on 127.0.0.1");
    let port = std_socket.local_addr().unwrap().port();
    let socket = receiver(std_socket);
    let target = SocketAddr::from((group, port));
    let mut server = TestServer::start(ServerOptions::default()).await;
    let metrics = free_port();
    let keys = format!("target = \"{target}\"\nttl = 0\ninterface = \"127.0.0.1\"");
    let daemon = Daemon::start(&config(&server, metrics, &keys)).await;
    let _feed = feed(&mut server, COUNT).await;
    receive_in_order(&socket, COUNT, &daemon).await;
    let s = settled(metrics, COUNT).await;
    assert_eq!((s.records_written, s.records_dropped), (COUNT, 0), "{s:?}");
}

/// Connected UDP learns of a closed port from the ICMP reply: the next send fails with
/// ECONNREFUSED. That record is counted (`io`), and the sink goes on: once a listener is
/// there, records arrive again.
#[tokio::test]
async fn a_closed_port_is_counted_and_the_sink_goes_on() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = closed.local_addr().unwrap();
    drop(closed);
    let mut server = TestServer::start(ServerOptions::default()).await;
    let metrics = free_port();
    let daemon = Daemon::start(&config(&server, metrics, &format!("target = \"{target}\""))).await;
    let mut conn = server.accept().await;
    let numbered = |n: u64| format!("{{\"n\":{n},\"pad\":\"abc\"}}");
    let mut n = 0;
    // Until the kernel has reported the closed port at least once.
    let deadline = Instant::now() + SOON;
    loop {
        n += 1;
        conn.ws.send(Message::text(numbered(n))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = sink_status(([127, 0, 0, 1], metrics).into()).await;
        if s.dropped_by_reason.get("io").copied().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no send failed: {s:?}");
    }
    // The same port, listening now: the sink still sends.
    let socket = receiver(std::net::UdpSocket::bind(target).expect("rebind the port"));
    let mut buf = vec![0u8; 1024];
    let got = loop {
        n += 1;
        conn.ws.send(Message::text(numbered(n))).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await {
            Ok(Ok(len)) => break len,
            Ok(Err(e)) => panic!("recv: {e}"),
            Err(_) => assert!(n < 200, "nothing arrived; stderr:\n{}", daemon.stderr()),
        }
    };
    let record: serde_json::Value = serde_json::from_slice(&buf[..got]).unwrap();
    assert!(record["data"].as_str().is_some(), "{record}");
    let s = settled(metrics, n).await;
    assert!(
        s.dropped_by_reason.get("io").copied().unwrap_or(0) > 0,
        "{s:?}"
    );
    assert_eq!(s.records_routed, s.records_written + s.records_dropped);
    drop(conn);
}
