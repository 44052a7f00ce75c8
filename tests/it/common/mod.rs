//! Fixtures for the integration tests: a real WebSocket server on loopback
//! (tokio-tungstenite) whose connections the test drives by hand, and the real `wsbridge`
//! binary run as a child process with its stdout read line by line. `config` builds the
//! configs it runs on; `wait` waits for events instead of sleeping; `http` reads the metrics
//! listener as text.

#![allow(dead_code)]
// each area uses a different part of this module
// tungstenite's handshake callback returns a large `Err` by design.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

mod config;
mod http;
mod wait;

pub use config::TestConfig;
pub use http::{http_get, upstream_status};
pub use wait::{status_of, wait_until, wait_until_still};

/// Generous bound for things that should happen "at once", for loaded CI machines.
pub const SOON: Duration = Duration::from_secs(10);

/// Generous bound for a condition a test waits for (a client registered, a record arrived,
/// a process gone) on a loaded 2-core machine; reaching it is a failure, not a slow pass.
pub const EVENTUALLY: Duration = Duration::from_secs(30);

/// One accepted WebSocket connection, driven by the test.
pub struct Conn {
    /// The handshake request's headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The request path.
    pub path: String,
    /// When the TCP connection was accepted.
    pub accepted_at: Instant,
    /// The socket.
    pub ws: WebSocketStream<TcpStream>,
}

impl Conn {
    /// The value of a handshake header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("server send");
    }

    /// Sends a Close frame with `code` and `reason`.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        self.ws
            .send(Message::Close(Some(frame)))
            .await
            .expect("server send");
    }

    /// The next text message from the client, skipping control frames.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match timeout(SOON, self.ws.next())
                .await
                .expect("client message in time")
            {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Binary(b))) => panic!("expected text, got binary {b:?}"),
                Some(Ok(_)) => continue,
                other => panic!("connection ended while waiting for a message: {other:?}"),
            }
        }
    }

    /// The next data message from the client.
    pub async fn recv(&mut self) -> Message {
        loop {
            match timeout(SOON, self.ws.next())
                .await
                .expect("client message in time")
            {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)))) => {
                    return m
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended while waiting for a message: {other:?}"),
            }
        }
    }
}

/// How the server answers handshakes.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Subprotocol to accept if the client offers it.
    pub protocol: Option<String>,
    /// Answer every handshake with this HTTP status instead (e.g. 403).
    pub reject: Option<u16>,
}

/// A WebSocket server on 127.0.0.1 that hands every accepted connection to the test.
pub struct TestServer {
    /// The listen address.
    pub addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
    accepts: mpsc::UnboundedReceiver<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts on a random port.
    pub async fn start(options: ServerOptions) -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), options).await
    }

    /// Starts on a given address (to restart on the same port).
    pub async fn start_on(addr: SocketAddr, options: ServerOptions) -> TestServer {
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().unwrap();
        let (conn_tx, conns) = mpsc::unbounded_channel();
        let (accept_tx, accepts) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let accepted_at = Instant::now();
                let _ = accept_tx.send(accepted_at);
                let options = options.clone();
                let conn_tx = conn_tx.clone();
                tokio::spawn(async move {
                    let mut headers = Vec::new();
                    let mut path = String::new();
                    let callback = |req: &Request, mut resp: Response| {
                        path = req.uri().to_string();
                        for (k, v) in req.headers() {
                            headers.push((
                                k.as_str().to_string(),
                                v.to_str().unwrap_or("").to_string(),
                            ));
                        }
                        if let Some(status) = options.reject {
                            let mut err = tokio_tungstenite::tungstenite::http::Response::new(
                                Some("go away: test rejection".to_string()),
                            );
                            *err.status_mut() =
                                tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
                                    .unwrap();
                            return Err(err);
                        }
                        if let (Some(want), Some(offered)) = (
                            &options.protocol,
                            req.headers().get("sec-websocket-protocol"),
                        ) {
                            if offered
                                .to_str()
                                .unwrap_or("")
                                .split(',')
                                .any(|p| p.trim() == want)
                            {
                                resp.headers_mut()
                                    .insert("sec-websocket-protocol", want.parse().unwrap());
                            }
                        }
                        Ok(resp)
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                        let _ = conn_tx.send(Conn {
                            headers,
                            path,
                            accepted_at,
                            ws,
                        });
                    }
                });
            }
        });
        TestServer {
            addr,
            conns,
            accepts,
            task,
        }
    }

    /// `ws://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The next connection that completed its handshake.
    pub async fn accept(&mut self) -> Conn {
        timeout(SOON, self.conns.recv())
            .await
            .expect("a connection in time")
            .expect("server running")
    }

    /// Echoes every data message of every connection until the client closes; returns the
    /// address. Each connection's handshake headers are sent to the returned channel.
    pub fn echo(mut self) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<(String, String)>>) {
        let addr = self.addr;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(mut conn) = self.conns.recv().await {
                let _ = tx.send(conn.headers.clone());
                tokio::spawn(async move {
                    while let Some(Ok(m)) = conn.ws.next().await {
                        if (m.is_text() || m.is_binary()) && conn.ws.send(m).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    /// The next connection, however long it takes (for servers running in the background).
    pub async fn accept_any(&mut self) -> Conn {
        self.conns.recv().await.expect("server running")
    }

    /// The time of the next accepted TCP connection (handshake or not).
    pub async fn next_accept_time(&mut self, within: Duration) -> Instant {
        timeout(within, self.accepts.recv())
            .await
            .expect("a TCP connection in time")
            .expect("server running")
    }

    /// Stops listening; connections already handed out live on until dropped.
    pub fn stop(self) -> SocketAddr {
        self.task.abort();
        self.addr
    }
}

/// Binds, retrying briefly while a just-closed listener's port is still held.
pub async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + SOON;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

/// A free loopback port for a listener the test cannot bind itself (the daemon's sinks and
/// metrics, a broker): bound, then released.
///
/// Ports come from below Linux's ephemeral range (32768 and up), so no outgoing connection
/// of a test running alongside is ever given one between its release and the daemon's bind,
/// and from a counter, so two tests of this binary never get the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread over the range by process, so concurrent test runs on one machine rarely meet.
    let base = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (base.wrapping_add(n) % SPAN);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN)
}

/// The built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wsbridge")
}

/// `wsbridge connect ARGS`, killed if the test drops it.
pub fn connect_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("connect").args(args).kill_on_drop(true);
    cmd
}

/// Starts `wsbridge connect ARGS` with stdin, stdout and stderr piped.
pub fn spawn_connect(args: &[&str]) -> Child {
    connect_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A process's output as text, for assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a short command of the binary to its end and asserts it exited 0 (showing its stderr
/// if not); returns its output.
pub fn run_ok(command: &mut std::process::Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running `wsbridge run` with its stdout parsed as NDJSON.
pub struct Daemon {
    pub child: Child,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Daemon {
    /// Writes `config` to a temp dir and starts `wsbridge run -c` on it.
    pub async fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config).await
    }

    /// Like [`Daemon::start`] in a given directory (whose paths the config may name).
    pub async fn start_in(dir: tempfile::TempDir, config: &str) -> Daemon {
        Self::start_with_env(dir, config, &[]).await
    }

    /// Like [`Daemon::start_in`] with extra environment variables.
    pub async fn start_with_env(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let config_path = dir.path().join("wsbridge.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(bin())
            .args(["run", "-c"])
            .arg(&config_path)
            .env("RUST_LOG", "wsbridge=debug")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start wsbridge");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Daemon {
            child,
            stdout,
            dir,
            config_path,
            stderr_path,
        }
    }

    /// The next stdout record.
    pub async fn next_record(&mut self) -> Value {
        let line = timeout(SOON, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no record within {SOON:?}; stderr:\n{}", self.stderr()))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("stdout closed; stderr:\n{}", self.stderr()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Skips records until one matches; returns it.
    pub async fn record_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SOON * 2;
        loop {
            assert!(
                Instant::now() < deadline,
                "no record {what} in time; stderr:\n{}",
                self.stderr()
            );
            let record = self.next_record().await;
            if pred(&record) {
                return record;
            }
        }
    }

    /// The rest of stdout until it closes.
    pub async fn rest_of_stdout(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(Ok(Some(line))) = timeout(SOON, self.stdout.next_line()).await {
            out.push(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")),
            );
        }
        out
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY-free: kill(1) keeps the tests free of libc bindings.
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Rewrites the config file (for reload tests).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).unwrap();
    }

    /// Waits for exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        timeout(SOON * 2, self.child.wait())
            .await
            .expect("exit in time")
            .unwrap()
    }

    /// Everything logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until stderr contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + SOON * 2;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A path inside the daemon's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Connects to a TCP sink, retrying until the daemon listens.
pub async fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + SOON;
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("cannot connect to the tcp sink {addr}: {e}"),
        }
    }
}

/// Connects to a unix sink, retrying until the daemon listens.
pub async fn connect_unix(path: &Path) -> tokio::net::UnixStream {
    let deadline = Instant::now() + SOON;
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("cannot connect to the unix sink {}: {e}", path.display()),
        }
    }
}

/// Reads NDJSON records from a sink client socket.
pub struct RecordReader<R> {
    lines: tokio::io::Lines<BufReader<R>>,
}

impl<R: tokio::io::AsyncRead + Unpin> RecordReader<R> {
    pub fn new(r: R) -> Self {
        RecordReader {
            lines: BufReader::new(r).lines(),
        }
    }

    /// The next line as JSON.
    pub async fn next(&mut self) -> Value {
        let line = timeout(SOON, self.lines.next_line())
            .await
            .expect("a record in time")
            .expect("read")
            .expect("sink connection open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The next raw line.
    pub async fn next_line(&mut self) -> Option<String> {
        timeout(SOON, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
    }

    /// The next raw line, or `None` at EOF or on a reset connection.
    pub async fn next_line_or_end(&mut self) -> Option<String> {
        self.lines.next_line().await.ok().flatten()
    }

    /// Skips records until one matches.
    pub async fn record_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let r = self.next().await;
            if pred(&r) {
                return r;
            }
        }
    }
}

/// Whether a record is a data message.
pub fn is_data(r: &Value) -> bool {
    matches!(r["type"].as_str(), Some("text" | "binary" | "json"))
}

/// A value in kB from `/proc/<pid>/status` (`VmRSS`, `VmHWM`), or `None` if the process or the
/// key is gone.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open file descriptors of a process, or `None` if it is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// The Python for the peer tests: `$WSBRIDGE_TEST_PYTHON`, else the venv `tests/run.sh` makes.
pub fn python() -> PathBuf {
    match std::env::var_os("WSBRIDGE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python"),
    }
}
