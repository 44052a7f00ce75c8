//! Readers for the daemon benchmarks in `bench/run.sh`.
//!
//! ```text
//! sinkreader tcp   --addr 127.0.0.1:PORT --clients N --expect M [--go-file PATH] [--max-secs S]
//! sinkreader lines --match SUBSTRING --expect M [--max-secs S]      (reads stdin)
//! sinkreader freeport                                               (prints a free loopback port)
//! ```
//!
//! - `tcp`: connects N clients to a tcp sink, waits until all are connected (and a moment
//!   more, so the sink has accepted them), creates `--go-file` (the load server starts
//!   sending when it appears), then counts lines on every client until each has M lines or
//!   `--max-secs` passes. Prints one JSON line: per-client records/s (median, min) and the
//!   total records/s across all clients.
//! - `lines`: counts stdin lines containing SUBSTRING; prints `REACHED M <ms>` (ms since it
//!   started) when M is reached, then keeps draining stdin until EOF or `--max-secs`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

struct Opts {
    cmd: String,
    addr: String,
    clients: usize,
    expect: u64,
    go_file: Option<String>,
    pattern: String,
    max_secs: u64,
}

fn parse() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        cmd: args.next().unwrap_or_default(),
        addr: String::new(),
        clients: 1,
        expect: 0,
        go_file: None,
        pattern: String::new(),
        max_secs: 60,
    };
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--addr" => o.addr = v(),
            "--clients" => o.clients = v().parse().expect("--clients N"),
            "--expect" => o.expect = v().parse().expect("--expect M"),
            "--go-file" => o.go_file = Some(v()),
            "--match" => o.pattern = v(),
            "--max-secs" => o.max_secs = v().parse().expect("--max-secs S"),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn main() {
    let o = parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(async move {
        match o.cmd.as_str() {
            "tcp" => tcp(o).await,
            "lines" => lines(o).await,
            "freeport" => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                println!("{}", l.local_addr().expect("addr").port());
                0
            }
            _ => {
                eprintln!("usage: sinkreader tcp|lines|freeport …");
                2
            }
        }
    });
    runtime.shutdown_background();
    std::process::exit(code);
}

struct ClientResult {
    lines: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

async fn tcp(o: Opts) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(o.max_secs);
    let mut streams = Vec::with_capacity(o.clients);
    for _ in 0..o.clients {
        let mut tries = 0;
        loop {
            match TcpStream::connect(&o.addr).await {
                Ok(s) => {
                    streams.push(s);
                    break;
                }
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    eprintln!("sinkreader: cannot connect to {}: {e}", o.addr);
                    return 1;
                }
            }
        }
    }
    // Give the sink a moment to accept and register every client.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(go) = &o.go_file {
        std::fs::write(go, b"go\n").expect("go file");
    }
    let go_at = Instant::now();
    let expect = o.expect;
    let mut tasks = Vec::new();
    for mut s in streams {
        tasks.push(tokio::spawn(async move {
            let mut r = ClientResult {
                lines: 0,
                first: None,
                last: None,
            };
            let mut buf = vec![0u8; 256 * 1024];
            while r.lines < expect {
                let left = deadline.saturating_duration_since(Instant::now());
                let n = match tokio::time::timeout(left, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => n,
                };
                let now = Instant::now();
                r.first.get_or_insert(now);
                r.lines += count_lines(&buf[..n]);
                r.last = Some(now);
            }
            r
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("reader task"));
    }
    let complete = results.iter().filter(|r| r.lines >= expect).count();
    let total_lines: u64 = results.iter().map(|r| r.lines).sum();
    let mut rates: Vec<f64> = results
        .iter()
        .map(|r| match (r.first, r.last) {
            (Some(_), Some(l)) => r.lines as f64 / (l - go_at).as_secs_f64().max(1e-9),
            _ => 0.0,
        })
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let last = results.iter().filter_map(|r| r.last).max();
    let span = last.map_or(0.0, |l| (l - go_at).as_secs_f64());
    let total_rate = if span > 0.0 {
        total_lines as f64 / span
    } else {
        0.0
    };
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let min = rates.first().copied().unwrap_or(0.0);
    println!(
        "{{\"clients\":{},\"complete\":{complete},\"lines\":{total_lines},\"secs\":{span:.6},\"total_rate\":{total_rate:.1},\"client_rate_median\":{median:.1},\"client_rate_min\":{min:.1}}}",
        o.clients
    );
    if complete == o.clients {
        0
    } else {
        1
    }
}

/// Line breaks in `bytes`. Counted in byte-sized sums of 255 bytes at most, which the
/// compiler turns into wide vector compares: counting into a `usize` per byte (the plain
/// `filter().count()`) took 40 % of the machine in the 64-client run, and the readers, not
/// the daemon, set the total.
fn count_lines(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|chunk| chunk.iter().map(|&b| u8::from(b == b'\n')).sum::<u8>() as u64)
        .sum()
}

async fn lines(o: Opts) -> i32 {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.max_secs);
    let mut input = BufReader::with_capacity(256 * 1024, tokio::io::stdin()).lines();
    let mut seen = 0u64;
    let mut reported = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, input.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => break,
        };
        if line.contains(&o.pattern) {
            seen += 1;
            if seen == o.expect && !reported {
                reported = true;
                println!("REACHED {seen} {}", started.elapsed().as_millis());
            }
        }
    }
    if !reported {
        println!("SEEN {seen} {}", started.elapsed().as_millis());
        return 1;
    }
    0
}
