//! A WebSocket load server for `bench/run.sh`, bound to loopback only.
//!
//! ```text
//! loadserver send  --count N --size S [--binary] [--connections C] [--go-file PATH]
//! loadserver echo  [--connections C]
//! loadserver count [--connections C] [--report-open N]
//! ```
//!
//! - `send`: on each connection, send N messages of S bytes as fast as the socket takes them,
//!   then Close (1000). The frame bytes are encoded once; after tokio-tungstenite's handshake
//!   the raw `TcpStream` is taken back and the pre-encoded frames are written to it in large
//!   batches, so the server costs next to nothing per message. With `--go-file`, sending
//!   starts once that file exists (so readers of a daemon's sink can connect first).
//! - `echo`: echo every data message. After the handshake it works on raw frames: each read's
//!   worth of client frames is unmasked into server frames and written back in one write, so
//!   the echo is never the bottleneck of a client measurement.
//! - `count`: count received data messages and payload bytes; print one JSON line per
//!   connection when the client closes. `--report-open N` prints `OPEN N <ms>` once N
//!   connections are open at the same time (ms since the server started).
//!
//! Prints `LISTENING <port>` on stdout when ready. Everything is bounded: the server exits
//! after `--connections` connections have ended (0 = no limit) or after `--max-secs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Send,
    Echo,
    Count,
}

#[derive(Debug, Parser)]
#[command(about = "WebSocket load server for the wsbridge benchmarks (loopback only)")]
struct Args {
    mode: Mode,
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// send: messages per connection.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// send: payload bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// send: binary frames instead of text.
    #[arg(long)]
    binary: bool,
    /// Exit after this many connections have ended (0 = no limit).
    #[arg(long, default_value_t = 0)]
    connections: u64,
    /// send: wait for this file to exist before sending.
    #[arg(long)]
    go_file: Option<std::path::PathBuf>,
    /// count: print `OPEN N <ms>` once N connections are open at once.
    #[arg(long)]
    report_open: Option<u64>,
    /// Hard limit on the server's lifetime, in seconds.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
}

struct Shared {
    args: Args,
    started: Instant,
    open: AtomicU64,
    handshaken: AtomicU64,
    ended: AtomicU64,
    frames: Bytes,
    frames_per_batch: u64,
    done: tokio::sync::Notify,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let port = listener.local_addr()?.port();
    let (frames, frames_per_batch) = encode_batch(&args);
    let max = Duration::from_secs(args.max_secs);
    let shared = Arc::new(Shared {
        args,
        started: Instant::now(),
        open: AtomicU64::new(0),
        handshaken: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        frames,
        frames_per_batch,
        done: tokio::sync::Notify::new(),
    });
    println!("LISTENING {port}");
    let limit = async {
        loop {
            let wait = shared.done.notified();
            let limit = shared.args.connections;
            if limit > 0 && shared.ended.load(Ordering::SeqCst) >= limit {
                return;
            }
            wait.await;
        }
    };
    tokio::pin!(limit);
    let deadline = tokio::time::sleep(max);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut limit => break,
            _ = &mut deadline => {
                eprintln!("loadserver: --max-secs reached, exiting");
                break;
            }
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("loadserver: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    let result = match shared.args.mode {
                        Mode::Send => send(stream, &shared).await,
                        Mode::Echo => echo(stream, &shared).await,
                        Mode::Count => count(stream, &shared).await,
                    };
                    if let Err(e) = result {
                        eprintln!("loadserver: connection: {e}");
                    }
                    shared.ended.fetch_add(1, Ordering::SeqCst);
                    shared.done.notify_waiters();
                });
            }
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(())
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// One unmasked server frame header for a payload of `len` bytes.
fn frame_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.extend_from_slice(&[0x80 | opcode]);
    put_len(out, len);
}

/// A buffer of whole frames, about 256 KiB (at least one frame), and how many it holds.
fn encode_batch(args: &Args) -> (Bytes, u64) {
    if args.mode != Mode::Send {
        return (Bytes::new(), 0);
    }
    // Printable ASCII without line breaks, so a text payload is one line as it is.
    let payload: Vec<u8> = (0..args.size)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36])
        .collect();
    let mut one = BytesMut::new();
    frame_header(&mut one, if args.binary { 2 } else { 1 }, args.size);
    one.extend_from_slice(&payload);
    let per = (256 * 1024 / one.len()).max(1) as u64;
    let per = per.min(args.count.max(1));
    let mut batch = BytesMut::with_capacity(one.len() * per as usize);
    for _ in 0..per {
        batch.extend_from_slice(&one);
    }
    (batch.freeze(), per)
}

async fn send(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
        .await
        .map_err(std::io::Error::other)?;
    // The client sends nothing before it has data to read, so nothing is left buffered.
    let mut tcp = ws.into_inner();
    if let Some(go) = &shared.args.go_file {
        let deadline = Instant::now() + Duration::from_secs(shared.args.max_secs);
        while !go.exists() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("go file never appeared"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let total = shared.args.count;
    let per = shared.frames_per_batch.max(1);
    let frame_len = shared.frames.len() / per as usize;
    let mut sent = 0u64;
    while sent + per <= total {
        tcp.write_all(&shared.frames).await?;
        sent += per;
    }
    if sent < total {
        let rest = (total - sent) as usize;
        tcp.write_all(&shared.frames[..rest * frame_len]).await?;
    }
    // Close 1000, then wait (bounded) for the client's Close before ending TCP.
    tcp.write_all(&[0x88, 0x02, 0x03, 0xe8]).await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), wait_for_close(&mut tcp)).await;
    let _ = tcp.shutdown().await;
    Ok(())
}

/// Reads (masked) client frames until a Close frame or EOF.
async fn wait_for_close(tcp: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some((b0, at, len, _)) = parse_frame(&buf) {
            if b0 & 0x0f == 8 {
                return Ok(());
            }
            let _ = buf.split_to(at + len);
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn echo(stream: TcpStream, _shared: &Shared) -> std::io::Result<()> {
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
        .await
        .map_err(std::io::Error::other)?;
    // Raw frames from here on: unmask each client frame into an unmasked server frame, a
    // whole read's worth at a time, so the echo costs a copy, not a message round trip.
    let (mut rd, mut wr) = ws.into_inner().into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(BytesMut, bool)>(64);
    let writer = tokio::spawn(async move {
        while let Some((chunk, last)) = rx.recv().await {
            wr.write_all(&chunk).await?;
            if last {
                break;
            }
        }
        // After our Close reply the client ends the TCP connection.
        let _ = wr.shutdown().await;
        std::io::Result::Ok(())
    });
    let mut inb = BytesMut::with_capacity(256 * 1024);
    'read: loop {
        if rd.read_buf(&mut inb).await? == 0 {
            break;
        }
        let mut out = BytesMut::with_capacity(inb.len() + 64);
        let mut closed = false;
        while let Some((b0, at, len, key)) = parse_frame(&inb) {
            let frame = inb.split_to(at + len);
            let opcode = b0 & 0x0f;
            let reply = match opcode {
                0..=2 => b0,
                8 => {
                    closed = true;
                    0x88
                }
                9 => 0x8a,
                _ => continue,
            };
            let payload = &frame[at..];
            out.extend_from_slice(&[reply]);
            put_len(&mut out, len);
            let start = out.len();
            out.extend_from_slice(payload);
            for (i, b) in out[start..].iter_mut().enumerate() {
                *b ^= key[i & 3];
            }
            if closed {
                break;
            }
        }
        if !out.is_empty() && tx.send((out, closed)).await.is_err() {
            break 'read;
        }
        if closed {
            break;
        }
    }
    drop(tx);
    writer.await.map_err(std::io::Error::other)?
}

/// Header of one whole buffered client frame: (first byte, payload offset, payload length,
/// mask key), or None until the frame is complete.
fn parse_frame(buf: &[u8]) -> Option<(u8, usize, usize, [u8; 4])> {
    if buf.len() < 2 {
        return None;
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let mut key = [0u8; 4];
    if buf[1] & 0x80 != 0 {
        if buf.len() < at + 4 {
            return None;
        }
        key.copy_from_slice(&buf[at..at + 4]);
        at += 4;
    }
    if buf.len() < at + len {
        return None;
    }
    Some((buf[0], at, len, key))
}

fn put_len(out: &mut BytesMut, len: usize) {
    if len < 126 {
        out.extend_from_slice(&[len as u8]);
    } else if len <= 0xffff {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

async fn count(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
        .await
        .map_err(std::io::Error::other)?;
    let open_now = shared.handshaken.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(n) = shared.args.report_open {
        if open_now == n && shared.ended.load(Ordering::SeqCst) == 0 {
            println!("OPEN {n} {}", shared.started.elapsed().as_millis());
        }
    }
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while let Some(next) = ws.next().await {
        match next {
            Ok(Message::Text(t)) => {
                messages += 1;
                bytes += t.len() as u64;
            }
            Ok(Message::Binary(b)) => {
                messages += 1;
                bytes += b.len() as u64;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    println!("{{\"messages\":{messages},\"bytes\":{bytes},\"secs\":{secs:.6}}}");
    Ok(())
}
