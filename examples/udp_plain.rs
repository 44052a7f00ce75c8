//! The pieces of `bench/udp.sh`: a plain UDP client sending N datagrams of S bytes as fast as
//! it can, one `send` each (what the udp sink does per record, without the feed, the queue
//! and the encoding: the baseline), and a receiver that counts them.
//!
//! ```text
//! udp_plain send --target 127.0.0.1:PORT --count N --size S
//! udp_plain count --port PORT --count N --ready FILE   # prints "<received> <first-to-last s>"
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Sends `count` datagrams of `size` bytes to `target` (tokio's UdpSocket).
    Send {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        size: usize,
    },
    /// Counts datagrams on `port` until `count` came or none came for 3 s; creates `ready`
    /// once bound.
    Count {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        ready: std::path::PathBuf,
    },
}

fn main() -> std::io::Result<()> {
    match Args::parse().cmd {
        Cmd::Send {
            target,
            count,
            size,
        } => send(target, count, size),
        Cmd::Count { port, count, ready } => {
            let socket = UdpSocket::bind(("127.0.0.1", port))?;
            // A receiver that keeps up: a large buffer for bursts.
            rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 32 << 20)?;
            socket.set_read_timeout(Some(Duration::from_secs(3)))?;
            std::fs::write(ready, b"")?;
            let mut buf = vec![0u8; 65536];
            let (mut got, mut first, mut last) = (0u64, None, Instant::now());
            while got < count {
                match socket.recv(&mut buf) {
                    Ok(_) => {
                        last = Instant::now();
                        first.get_or_insert(last);
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            let took = first.map_or(0.0, |f| (last - f).as_secs_f64());
            println!("{got} {took:.6}");
            Ok(())
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn send(target: SocketAddr, count: u64, size: usize) -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(target).await?;
    let mut datagram = vec![b'x'; size];
    if let Some(last) = datagram.last_mut() {
        *last = b'\n';
    }
    for _ in 0..count {
        socket.send(&datagram).await?;
    }
    Ok(())
}
