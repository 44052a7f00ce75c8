//! Fixtures for the broker sink tests (`nats_sink`, `redis_sink`): a real server process
//! (nats-server, redis-server) on a free port in a temp dir, killed with the test; a feed
//! that sends numbered messages as fast as wsbridge takes them; `/status` polling.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wsbridge::metrics::SinkStatus;

use crate::common::*;

/// `nats-server` with JetStream on 127.0.0.1, its store in the server's own directory.
pub async fn nats_server() -> ServerProcess {
    ServerProcess::start(
        "nats-server",
        &["-a", "127.0.0.1", "-p", "{port}", "-js", "-sd", "{dir}"],
    )
    .await
}

/// Every message of JetStream stream `name` on the nats-server at `port`, in stream order:
/// as many as the stream holds when asked.
pub async fn stream_messages(port: u16, name: &str) -> Vec<async_nats::jetstream::Message> {
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .expect("connect to nats-server");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name} exists: {e}"));
    let total = stream.info().await.expect("stream info").state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        let message = tokio::time::timeout(SOON, messages.next())
            .await
            .expect("next message in time")
            .expect("more messages")
            .expect("a message");
        out.push(message);
    }
    out
}

/// A server process the test started; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    /// The program, for messages.
    program: &'static str,
    args: Vec<String>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory (kept across restarts).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts `program` with `args` (in which `{port}` and `{dir}` are replaced), retrying
    /// on another port if the first was taken meanwhile, and waits until it accepts.
    pub async fn start(program: &'static str, args: &[&str]) -> ServerProcess {
        let path = which(program);
        let mut dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    a.replace("{port}", &port.to_string())
                        .replace("{dir}", &dir.path().display().to_string())
                })
                .collect();
            let mut server = ServerProcess {
                program,
                args,
                port,
                dir,
                child: None,
            };
            if server.spawn(&path).await {
                return server;
            }
            dir = server.dir;
        }
        panic!("{program} did not start on any of 5 free ports");
    }

    async fn spawn(&mut self, path: &Path) -> bool {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(path)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        self.child = Some(child);
        let deadline = Instant::now() + SOON;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited: the port was taken
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{} did not listen within {SOON:?}: {}",
            self.program,
            self.log()
        );
    }

    /// `kill -9`, and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port with the same directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        let path = which(self.program);
        let deadline = Instant::now() + SOON;
        // The port may be held for a moment after the kill.
        while !self.spawn(&path).await {
            assert!(
                Instant::now() < deadline,
                "{} did not restart: {}",
                self.program,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// The path of a program the Debian packages install, or a failure that says how to get it.
fn which(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return path;
        }
    }
    panic!("{program} is not installed: apt-get install -y nats-server redis-server (tests/run.sh does)");
}

/// Sends `count` numbered text messages (`{"n":1,…}` …) to the first connection, as fast as
/// it takes them, answering Pings meanwhile; then keeps the connection open.
pub async fn feed(server: &mut TestServer, count: u64) -> tokio::task::JoinHandle<()> {
    let conn = server.accept().await;
    tokio::spawn(async move {
        let (mut tx, mut rx) = conn.ws.split();
        // Reading lets tungstenite queue the Pong replies, sent with the next frames.
        tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        for n in 1..=count {
            let text = format!("{{\"n\":{n},\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}}");
            if tx.feed(Message::text(text)).await.is_err() {
                return;
            }
            if n % 256 == 0 && tx.flush().await.is_err() {
                return;
            }
        }
        let _ = tx.flush().await;
        std::future::pending::<()>().await;
    })
}

/// The `n` of a record's data, as [`feed`] numbered it.
pub fn fed_number(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let at = text
        .find("\\\"n\\\":")
        .map(|i| i + 6)
        .or_else(|| text.find("\"n\":").map(|i| i + 4));
    let at = at.unwrap_or_else(|| panic!("no n in {text}"));
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The first sink's status, fetched from the daemon's metrics endpoint.
pub async fn sink_status(metrics: SocketAddr) -> SinkStatus {
    status_of(metrics)
        .await
        .sinks
        .into_iter()
        .next()
        .expect("a sink")
}

/// Polls the first sink's status until `done` says so; fails after `within`.
pub async fn wait_status(
    metrics: SocketAddr,
    within: Duration,
    what: &str,
    done: impl Fn(&SinkStatus) -> bool,
) -> SinkStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = sink_status(metrics).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The config's upstream and metrics sections, for a feed at `feed` and metrics on a free
/// port; the test adds its sinks.
pub fn daemon_head(feed: &str) -> (TestConfig, SocketAddr) {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let head = TestConfig::new()
        .metrics(metrics.port())
        .upstream("feed", feed, "");
    (head, metrics)
}

/// A JetStream `nats` sink's keys: publishing to `subject` on the server at `port`, into the
/// stream FEED (`wsbridge.>`), data records only.
pub fn nats_sink_keys(port: u16, subject: &str, extra: &str) -> String {
    format!(
        "url = \"nats://127.0.0.1:{port}\"\nsubject = \"{subject}\"\njetstream = true\nevents = false\n\
         stream = {{ name = \"FEED\", subjects = [\"wsbridge.>\"] }}\n{extra}"
    )
}

/// A `redis` sink's keys: `XADD`s to `stream` on the server at `port`, untrimmed, data
/// records only, blocking when it falls behind.
pub fn redis_sink_keys(port: u16, stream: &str) -> String {
    format!(
        "url = \"redis://127.0.0.1:{port}/0\"\nstream = \"{stream}\"\nmaxlen = 0\nevents = false\n\
         on_slow = \"block\""
    )
}
