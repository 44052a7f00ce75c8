//! Vanishing peers and reconnect storms (issue #7): what `wsbridge run` does when the server
//! goes away in the ways real servers do, on real sockets with the real binary.
//!
//! Each test asserts a detection bound (how soon an `error` record says the connection is
//! gone) and the reconnect that follows. Figures are printed with `eprintln!`; run with
//! `cargo test --test faults_peers -- --nocapture` to see them (`tests/faults_peers.md`).
//!
//! The two heavy tests (1,000 reconnect cycles, a 200-upstream storm) take [`LOAD`] for
//! writing, the others for reading, so the heavy ones never skew the others' timings.
//!
//! The frozen-server test runs `tests/peers/aiohttp_server.py` with `$WSBRIDGE_TEST_PYTHON`,
//! else `.cache/venv/bin/python` (created by `tests/run.sh`); without it, it fails saying so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, Mutex, RwLock};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Heavy tests hold it for writing, timing tests for reading.
static LOAD: RwLock<()> = RwLock::const_new(());

/// Slack on every upper bound, for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(2);

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `t - origin` in milliseconds, negative if `t` came first.
fn signed_ms(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        millis(t - origin)
    } else {
        -millis(origin - t)
    }
}

/// The `error` text of a record.
fn error_text(record: &Value) -> &str {
    record["error"].as_str().unwrap_or_default()
}

/// Unix milliseconds of a record (the daemon's clock).
fn ts(record: &Value) -> i64 {
    record["ts"].as_i64().expect("a ts")
}

/// A daemon config with one upstream `feed` (fast, deterministic backoff) and stdout.
fn one_upstream(url: &str, extra: &str) -> String {
    let reconnect = r#"reconnect = { initial = "100ms", max = "500ms", jitter = 0.0 }"#;
    TestConfig::feed_to_stdout(url, &format!("{reconnect}\n{extra}"))
        .shutdown_timeout("1s")
        .to_string()
}

/// Sends a signal with kill(1), as the common fixture does (no libc bindings).
fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

// ---------------------------------------------------------------------------------------
// 1. Server killed: the TCP connection is reset.

#[tokio::test]
async fn reset_connection_is_reported_at_once_and_reconnected_when_the_server_is_back() {
    let _light = LOAD.read().await;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start(&one_upstream(&server.url("/"), "")).await;
    let conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");

    // Kill the server: no more listener, and the open connection is reset (SO_LINGER 0
    // makes close() send RST instead of FIN).
    let addr = server.stop();
    conn.ws.get_ref().set_zero_linger().unwrap();
    let killed = Instant::now();
    drop(conn);
    let error = daemon.next_record().await;
    let detected = killed.elapsed();
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error_text(&error).to_lowercase().contains("reset"),
        "the error should say the connection was reset: {error}"
    );
    assert!(error["retry_in_ms"].is_u64(), "{error}");
    assert!(detected < SLACK, "reset reported after {detected:?}");

    // While it is down, attempts are refused and retried.
    let refused = daemon.next_record().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(refused["retry_in_ms"].is_u64(), "{refused}");
    // And retried: a second refusal, before the server comes back.
    daemon
        .record_where("a second refused attempt", |r| r["type"] == "error")
        .await;
    let mut server = TestServer::start_on(addr, ServerOptions::default()).await;
    let back = Instant::now();
    let mut conn = server.accept().await;
    daemon
        .record_where("open after the server is back", |r| r["type"] == "open")
        .await;
    let reopened = back.elapsed();
    // Backoff is capped at 500 ms.
    assert!(
        reopened < Duration::from_millis(500) + SLACK,
        "reconnected {reopened:?} after the server came back"
    );
    conn.send_text("after the reset").await;
    let r = daemon.record_where("data", is_data).await;
    assert_eq!(r["data"], "after the reset");
    eprintln!(
        "FIGURE reset: error after {:.1} ms ({}); open {:.0} ms after the server was back (backoff max 500 ms)",
        millis(detected),
        error_text(&error),
        millis(reopened)
    );
}

// ---------------------------------------------------------------------------------------
// 2. Server frozen: a separate aiohttp process is SIGSTOPped; TCP stays up, nothing answers.

const HOW_TO_FIX: &str = "run `tests/run.sh`, which creates .cache/venv with \
     tests/peers/requirements.txt, or set WSBRIDGE_TEST_PYTHON to a Python that has aiohttp";

/// `tests/peers/aiohttp_server.py` in its own process.
struct PyServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PyServer {
    async fn start() -> PyServer {
        let python = python();
        assert!(
            python.exists(),
            "the frozen-server test needs Python with aiohttp at {}; {HOW_TO_FIX}",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aiohttp_server.py");
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("aiohttp.stderr");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--port", "0", "--exit-on-stdin-eof"])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped()) // held by `child`: EOF (our death) ends the server
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {HOW_TO_FIX}", python.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("aiohttp_server.py listening within 30 s")
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "aiohttp_server.py exited ({HOW_TO_FIX}); stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            });
        let port = first
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected `LISTENING <port>`, got {first:?}"));
        // Keep its event log flowing so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PyServer {
            child,
            port,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("aiohttp server running")
    }
}

#[tokio::test]
#[ignore = "needs Python with aiohttp: tests/run.sh sets it up and runs it"]
async fn frozen_server_is_detected_by_ping_timeout_and_reconnected_after_it_resumes() {
    let _light = LOAD.read().await;
    let server = PyServer::start().await;
    let extra = r#"ping_interval = "300ms"
ping_timeout = "300ms"
connect_timeout = "1s""#;
    let url = format!("ws://127.0.0.1:{}/echo", server.port);
    let mut daemon = Daemon::start(&one_upstream(&url, extra)).await;
    let open = daemon.next_record().await;
    assert_eq!(open["type"], "open", "{open}");

    kill("STOP", server.pid());
    let frozen = Instant::now();
    let error = daemon.next_record().await;
    let detected = frozen.elapsed();
    assert_eq!(error["type"], "error", "{error}");
    assert!(error_text(&error).contains("ping_timeout"), "{error}");
    assert!(error["retry_in_ms"].is_u64(), "{error}");
    // The Ping goes out 300 ms after the last frame (the handshake); it is dead 300 ms later.
    let since_open = Duration::from_millis((ts(&error) - ts(&open)) as u64);
    assert!(
        since_open >= Duration::from_millis(550),
        "declared dead {since_open:?} after open, before ping_interval + ping_timeout"
    );
    assert!(
        detected < Duration::from_millis(600) + SLACK,
        "detected {detected:?} after the freeze"
    );

    // Still frozen: the kernel accepts TCP, nobody answers the handshake.
    let stuck = daemon.next_record().await;
    assert_eq!(stuck["type"], "error", "{stuck}");
    assert!(error_text(&stuck).contains("connect_timeout"), "{stuck}");

    kill("CONT", server.pid());
    let resumed = Instant::now();
    daemon
        .record_where("open after SIGCONT", |r| r["type"] == "open")
        .await;
    let reopened = resumed.elapsed();
    assert!(
        reopened < Duration::from_millis(1000 + 500) + SLACK,
        "reconnected {reopened:?} after SIGCONT"
    );
    eprintln!(
        "FIGURE frozen: error {} ms after open, {:.0} ms after SIGSTOP (bound 600 ms + slack); \
         while frozen: {}; open {:.0} ms after SIGCONT",
        ts(&error) - ts(&open),
        millis(detected),
        error_text(&stuck),
        millis(reopened)
    );
}

// ---------------------------------------------------------------------------------------
// 3. Network cut mid-message: half a large frame arrives, then nothing.

#[tokio::test]
async fn half_sent_frame_is_detected_by_ping_timeout_and_reconnected() {
    let _light = LOAD.read().await;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let extra = r#"ping_interval = "300ms"
ping_timeout = "300ms""#;
    let mut daemon = Daemon::start(&one_upstream(&server.url("/"), extra)).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    conn.send_text("last whole message").await;
    let last = daemon.next_record().await;
    assert_eq!(last["data"], "last whole message", "{last}");

    // A binary frame announcing 100,000 bytes (unmasked, 64-bit length), and half of them.
    let mut header = vec![0x82u8, 127];
    header.extend_from_slice(&100_000u64.to_be_bytes());
    let stream = conn.ws.get_mut();
    stream.write_all(&header).await.unwrap();
    stream.write_all(&[0x5a; 50_000]).await.unwrap();
    stream.flush().await.unwrap();
    let cut = Instant::now();

    // No record for the half message; the keepalive sees no whole frame, pings, gets no
    // Pong (none could pass a half-sent frame) and gives up.
    let error = daemon.next_record().await;
    let detected = cut.elapsed();
    assert_eq!(
        error["type"], "error",
        "nothing but an error may follow: {error}"
    );
    assert!(error_text(&error).contains("ping_timeout"), "{error}");
    let since_last = Duration::from_millis((ts(&error) - ts(&last)) as u64);
    assert!(
        since_last >= Duration::from_millis(550),
        "declared dead {since_last:?} after the last whole frame"
    );
    assert!(
        detected < Duration::from_millis(600) + SLACK,
        "detected {detected:?} after the cut"
    );

    // What the server side got: the unanswered Ping, then the end of the connection.
    let mut pings = 0;
    while let Ok(Some(Ok(m))) = timeout(SOON, conn.ws.next()).await {
        if m.is_ping() {
            pings += 1;
        }
    }
    assert_eq!(pings, 1, "wsbridge should have sent exactly one Ping");

    let _again = server.accept().await;
    let reopen = daemon.next_record().await;
    assert_eq!(reopen["type"], "open", "{reopen}");
    eprintln!(
        "FIGURE half frame: error {} ms after the last whole frame, {:.0} ms after the cut \
         (bound 600 ms + slack); 1 Ping sent, no record for the half message; reconnected",
        ts(&error) - ts(&last),
        millis(detected)
    );
}

// ---------------------------------------------------------------------------------------
// 4. A server that accepts TCP and never answers the handshake.

#[tokio::test]
async fn unanswered_handshake_fails_after_connect_timeout_and_is_retried_with_backoff() {
    let _light = LOAD.read().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = format!(
        r#"
[[upstream]]
name = "mute"
url = "{url}"
connect_timeout = "500ms"
reconnect = {{ initial = "200ms", max = "1s", multiplier = 2.0, jitter = 0.0 }}

[[sink]]
type = "stdout"
"#
    );
    let mut daemon = Daemon::start(&config).await;
    let mut held = Vec::new();
    let mut accepts = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..3 {
        let (stream, _) = timeout(SOON, listener.accept())
            .await
            .expect("an attempt in time")
            .unwrap();
        accepts.push(Instant::now());
        held.push(stream);
        let error = daemon.next_record().await;
        errors.push((Instant::now(), error));
    }
    // The server did get the upgrade request; it just never answered.
    let mut request = vec![0u8; 4096];
    let n = timeout(SOON, held[0].read(&mut request))
        .await
        .unwrap()
        .unwrap();
    assert!(
        request[..n].starts_with(b"GET / HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&request[..n])
    );

    let mut waited = Vec::new();
    for (accepted, (at, error)) in accepts.iter().zip(&errors) {
        assert_eq!(error["type"], "error", "{error}");
        assert!(error_text(error).contains("connect_timeout"), "{error}");
        let took = *at - *accepted;
        assert!(
            took >= Duration::from_millis(400),
            "gave up {took:?} after the TCP accept, before connect_timeout (500 ms)"
        );
        assert!(
            took < Duration::from_millis(500) + SLACK,
            "gave up {took:?} after the TCP accept"
        );
        waited.push(millis(took));
    }
    let retries: Vec<u64> = errors
        .iter()
        .map(|(_, e)| e["retry_in_ms"].as_u64().expect("retry_in_ms"))
        .collect();
    assert_eq!(retries, [200, 400, 800], "backoff doubles from initial");
    let gaps: Vec<f64> = accepts.windows(2).map(|w| millis(w[1] - w[0])).collect();
    for (gap, retry) in gaps.iter().zip(&retries) {
        let nominal = 500.0 + *retry as f64;
        assert!(
            *gap >= nominal - 100.0,
            "attempts {gaps:?} ms apart: shorter than connect_timeout + backoff ({nominal} ms)"
        );
        assert!(
            *gap < nominal + millis(SLACK),
            "attempts {gaps:?} ms apart, nominal {nominal} ms"
        );
    }
    eprintln!(
        "FIGURE no handshake: error {:.0?} ms after each TCP accept (bound 500 ms); retry_in_ms {retries:?}; attempts {:.0?} ms apart (nominal 700, 900); {}",
        waited,
        gaps,
        error_text(&errors[0].1)
    );
}

// ---------------------------------------------------------------------------------------
// 5. TLS: a certificate wsbridge does not trust, then the same server with ca_file.

type TlsWs = tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;

/// A wss:// server with a self-signed certificate for localhost and 127.0.0.1; each
/// connection is reported as the WebSocket or the reason it failed.
async fn tls_server() -> (u16, String, mpsc::UnboundedReceiver<Result<TlsWs, String>>) {
    tls_server_with(false).await
}

/// [`tls_server`] whose self-signed certificate is marked CA:TRUE when `is_ca` (as OpenSSL 3's
/// `openssl req -x509` makes them by default).
async fn tls_server_with(
    is_ca: bool,
) -> (u16, String, mpsc::UnboundedReceiver<Result<TlsWs, String>>) {
    use tokio_rustls::rustls;
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    if is_ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key_pair).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = match acceptor.accept(stream).await {
                    Err(e) => Err(format!("TLS: {e}")),
                    Ok(tls) => tokio_tungstenite::accept_async(tls)
                        .await
                        .map_err(|e| format!("WebSocket: {e}")),
                };
                let _ = tx.send(result);
            });
        }
    });
    (port, cert.pem(), rx)
}

#[tokio::test]
async fn untrusted_certificate_is_reported_at_once_and_ca_file_fixes_it() {
    let _light = LOAD.read().await;
    let (port, pem, mut conns) = tls_server().await;
    let url = format!("wss://localhost:{port}/");

    let started = Instant::now();
    let mut daemon = Daemon::start(&one_upstream(&url, "")).await;
    let error = daemon.next_record().await;
    let reported = started.elapsed();
    assert_eq!(error["type"], "error", "{error}");
    // The exact wording is `tls_failure_record_says_tls_handshake_failed_and_suggests_ca_file`.
    assert!(
        error_text(&error).contains(&url) && error_text(&error).contains("certificate"),
        "names the URL and the certificate problem: {error}"
    );
    assert!(error["retry_in_ms"].is_u64(), "{error}");
    assert!(reported < SLACK * 2, "reported {reported:?} after start");
    let server_saw = timeout(SOON, conns.recv()).await.unwrap().unwrap();
    assert!(
        matches!(&server_saw, Err(e) if e.starts_with("TLS")),
        "the server should see the TLS handshake fail"
    );
    // And it keeps retrying.
    let again = daemon.next_record().await;
    assert_eq!(again["type"], "error", "{again}");
    drop(daemon);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let extra = format!(
        "ca_file = \"{}\"\non_connect = [\"hello from wsbridge\"]",
        ca.display()
    );
    let mut daemon = Daemon::start_in(dir, &one_upstream(&url, &extra)).await;
    let mut ws = loop {
        // Skip what the first daemon's last attempts left behind.
        match timeout(SOON, conns.recv()).await.unwrap().unwrap() {
            Ok(ws) => break ws,
            Err(_) => continue,
        }
    };
    let open = daemon.next_record().await;
    assert_eq!(open["type"], "open", "{open}");
    assert_eq!(open["url"], url);
    let first = timeout(SOON, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first, Message::text("hello from wsbridge"));
    ws.send(Message::text("hello over tls")).await.unwrap();
    let r = daemon.record_where("data", is_data).await;
    assert_eq!(r["data"], "hello over tls");
    eprintln!(
        "FIGURE tls: error {:.0} ms after daemon start: {}; with ca_file: open and a message each way",
        millis(reported),
        error_text(&error)
    );
}

/// An untrusted certificate is reported as "TLS handshake failed: …" with what to do about it.
/// tokio-tungstenite returns rustls' handshake errors as `Error::Io`, which `classify` must
/// look inside; else the record read only "invalid peer certificate: UnknownIssuer".
#[tokio::test]
async fn tls_failure_record_says_tls_handshake_failed_and_suggests_ca_file() {
    let _light = LOAD.read().await;
    let (port, _pem, _conns) = tls_server().await;
    let url = format!("wss://localhost:{port}/");
    let mut daemon = Daemon::start(&one_upstream(&url, "")).await;
    let error = daemon.next_record().await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error_text(&error).contains("TLS handshake failed"),
        "{error}"
    );
    assert!(error_text(&error).contains("ca_file"), "the hint: {error}");
}

/// A self-signed certificate marked CA:TRUE, given as `ca_file`, is the server's own: it is
/// trusted as a pin. WebPKI alone refuses it ("CaUsedAsEndEntity").
#[tokio::test]
async fn a_self_signed_ca_certificate_in_ca_file_is_pinned_and_trusted() {
    let _light = LOAD.read().await;
    let (port, pem, mut conns) = tls_server_with(true).await;
    let url = format!("wss://localhost:{port}/");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("server.pem");
    std::fs::write(&ca, &pem).unwrap();
    let extra = format!("ca_file = \"{}\"", ca.display());
    let mut daemon = Daemon::start_in(dir, &one_upstream(&url, &extra)).await;
    let mut ws = match timeout(SOON, conns.recv()).await.unwrap().unwrap() {
        Ok(ws) => ws,
        Err(e) => panic!(
            "the handshake failed at the server: {e}; stderr:\n{}",
            daemon.stderr()
        ),
    };
    let open = daemon.next_record().await;
    assert_eq!(open["type"], "open", "{open}");
    ws.send(Message::text("pinned")).await.unwrap();
    let r = daemon.record_where("data", is_data).await;
    assert_eq!(r["data"], "pinned");
}

/// A pin is that certificate only: another self-signed one in `ca_file` does not let this
/// server in, and the error says what to do.
#[tokio::test]
async fn a_pin_trusts_only_that_exact_certificate() {
    let _light = LOAD.read().await;
    let (port, _pem, _conns) = tls_server_with(true).await;
    let (_other_port, other_pem, _other_conns) = tls_server_with(true).await;
    let url = format!("wss://localhost:{port}/");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("other.pem");
    std::fs::write(&ca, &other_pem).unwrap();
    let extra = format!("ca_file = \"{}\"", ca.display());
    let mut daemon = Daemon::start_in(dir, &one_upstream(&url, &extra)).await;
    let error = daemon.next_record().await;
    assert_eq!(error["type"], "error", "{error}");
    let text = error_text(&error);
    assert!(text.contains("TLS handshake failed"), "{error}");
    assert!(
        text.contains("set ca_file to that exact certificate"),
        "the hint says how to pin: {error}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. DNS failure.

#[tokio::test]
async fn unresolvable_host_is_reported_promptly_and_retried() {
    let _light = LOAD.read().await;
    let url = "ws://does-not-exist.invalid/";
    let config = format!(
        r#"
[[upstream]]
name = "nowhere"
url = "{url}"
connect_timeout = "5s"
reconnect = {{ initial = "200ms", max = "1s", jitter = 0.0 }}

[[sink]]
type = "stdout"
"#
    );
    let started = Instant::now();
    let mut daemon = Daemon::start(&config).await;
    let first = daemon.next_record().await;
    let reported = started.elapsed();
    let second = daemon.next_record().await;
    for error in [&first, &second] {
        assert_eq!(error["type"], "error", "{error}");
        let text = error_text(error);
        assert!(
            text.contains("does-not-exist.invalid"),
            "names the host: {error}"
        );
        assert!(
            text.contains("lookup") || text.contains("resolve"),
            "says the name did not resolve: {error}"
        );
        assert!(!text.contains("connect_timeout"), "{error}");
    }
    assert_eq!(first["retry_in_ms"], 200, "{first}");
    assert_eq!(second["retry_in_ms"], 400, "{second}");
    assert!(
        ts(&second) - ts(&first) >= 195,
        "retried before the backoff"
    );
    assert!(reported < SLACK * 2, "reported {reported:?} after start");
    eprintln!(
        "FIGURE dns: error {:.0} ms after daemon start: {}; retried after {} ms",
        millis(reported),
        error_text(&first),
        ts(&second) - ts(&first)
    );
}

// ---------------------------------------------------------------------------------------
// A daemon whose stdout is drained in the background (so it never blocks on the pipe) for
// the heavy tests, which produce thousands of records.

struct Bridge {
    child: Child,
    records: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bridge {
    async fn start(config: &str) -> Bridge {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("wsbridge.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let mut child = Command::new(bin())
            .args(["run", "-c"])
            .arg(&config_path)
            .env("RUST_LOG", "wsbridge=debug")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start wsbridge");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, records) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let record = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                let _ = tx.send(record); // keep draining even when nobody listens
            }
        });
        Bridge {
            child,
            records,
            seen: Vec::new(),
            stderr_path,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("wsbridge running")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Takes in what has arrived so far.
    fn collect(&mut self) {
        while let Ok(r) = self.records.try_recv() {
            self.seen.push(r);
        }
    }

    fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.seen.iter().filter(|r| pred(r)).count()
    }

    /// Waits until `n` records seen so far match `pred`.
    async fn wait_count(&mut self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + SOON * 2;
        self.collect();
        while self.count(&pred) < n {
            match tokio::time::timeout_at(deadline, self.records.recv()).await {
                Ok(Some(r)) => self.seen.push(r),
                _ => panic!(
                    "only {} of {n} records {what}; stderr tail:\n{}",
                    self.count(&pred),
                    tail(&self.stderr(), 40)
                ),
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// 7. No leaks over 1,000 reconnect cycles.

/// The daemon's footprint at one moment.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    cycles: u64,
    fds: usize,
    tasks: u64,
    rss_kib: u64,
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS").expect("VmRSS in /proc/PID/status")
}

/// The churning server's side of the leak test: what it accepted, and a gate that pauses it.
#[derive(Default)]
struct Churn {
    /// TCP connections accepted.
    accepts: AtomicU64,
    /// Held by the test to pause the server before its next accept.
    gate: Mutex<()>,
    /// Set while the server waits at the gate; cleared while it holds the gate, so that a
    /// test holding the gate and seeing it set knows no accept is under way.
    parked: AtomicBool,
}

/// Pauses the server and waits until the daemon sits in one pending handshake (every
/// accepted connection ended on its side, the next attempt queued in the listen backlog): a
/// steady state. Then reads fds and tasks a few times (the smallest, as an HTTP exchange
/// with /status comes and goes) and VmRSS.
async fn footprint(pid: u32, metrics: std::net::SocketAddr, churn: &Churn) -> Footprint {
    let _paused = churn.gate.lock().await;
    let cycles = wait_until(EVENTUALLY, "the server paused at its gate", || async move {
        let parked = churn.parked.load(Ordering::SeqCst);
        let accepts = churn.accepts.load(Ordering::SeqCst);
        parked
            .then_some(accepts)
            .ok_or(format!("{accepts} accepted, still accepting"))
    })
    .await;
    wait_until(
        EVENTUALLY,
        "the daemon done with every accepted connection and waiting on its next handshake",
        || async move {
            let status = status_of(metrics).await;
            let upstream = &status.upstreams[0];
            let ended: u64 = upstream.disconnects.values().sum();
            (upstream.state == "connecting" && ended >= cycles)
                .then_some(())
                .ok_or(format!("{cycles} accepted: {upstream:?}"))
        },
    )
    .await;
    let (mut fds, mut tasks) = (usize::MAX, u64::MAX);
    for _ in 0..5 {
        tasks = tasks.min(status_of(metrics).await.tasks);
        // Spacing the samples (the smallest is the measure), not a condition.
        tokio::time::sleep(Duration::from_millis(20)).await;
        fds = fds.min(open_fds(pid).expect("the daemon is running"));
    }
    Footprint {
        cycles,
        fds,
        tasks,
        rss_kib: rss_kib(pid),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a thousand cycles take minutes; tests/run.sh runs it"]
async fn a_thousand_reconnect_cycles_leak_no_fds_tasks_or_memory() {
    let _heavy = LOAD.write().await;
    // Accepts the handshake and hangs up at once: every other time with a Close frame, else
    // by dropping the TCP connection. Counts TCP accepts; `gate` pauses it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let churn = Arc::new(Churn::default());
    let server = {
        let churn = churn.clone();
        tokio::spawn(async move {
            loop {
                churn.parked.store(true, Ordering::SeqCst);
                let open = churn.gate.lock().await;
                churn.parked.store(false, Ordering::SeqCst);
                drop(open);
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let n = churn.accepts.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                        if n % 2 == 0 {
                            let _ = ws.close(None).await;
                        }
                    }
                });
            }
        })
    };
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        r#"
[metrics]
listen = "{metrics}"

[daemon]
shutdown_timeout = "1s"

[[upstream]]
name = "churn"
url = "{url}"
connect_timeout = "5s"
reconnect = {{ initial = "1ms", max = "2ms", jitter = 0.0 }}

[[sink]]
type = "stdout"
"#
    );
    let mut bridge = Bridge::start(&config).await;
    let pid = bridge.pid();

    let wait_cycles = |n: u64| {
        let churn = churn.clone();
        async move {
            wait_until(Duration::from_secs(60), &format!("{n} cycles"), || {
                let accepts = churn.accepts.load(Ordering::SeqCst);
                async move {
                    (accepts >= n)
                        .then_some(())
                        .ok_or(format!("{accepts} cycles"))
                }
            })
            .await
        }
    };
    wait_cycles(50).await;
    let early = footprint(pid, metrics, &churn).await;
    let resumed = Instant::now();
    wait_cycles(1000).await;
    let took = resumed.elapsed();
    let late = footprint(pid, metrics, &churn).await;
    let status = status_of(metrics).await;
    server.abort();

    let churn = &status.upstreams[0];
    eprintln!(
        "FIGURE leak: {} -> {} cycles ({:.1} s, {:.0} cycles/s): fds {} -> {}, tasks {} -> {}, \
         VmRSS {} -> {} KiB ({:+} KiB); connects {}, disconnects {:?}",
        early.cycles,
        late.cycles,
        took.as_secs_f64(),
        (late.cycles - early.cycles) as f64 / took.as_secs_f64(),
        early.fds,
        late.fds,
        early.tasks,
        late.tasks,
        early.rss_kib,
        late.rss_kib,
        late.rss_kib as i64 - early.rss_kib as i64,
        churn.connects,
        churn.disconnects
    );
    assert!(
        churn.connects >= 900,
        "the cycles should be full connections: {churn:?}"
    );
    assert!(
        late.fds <= early.fds + 2,
        "open fds grew from {} to {}: a socket leaks",
        early.fds,
        late.fds
    );
    assert!(
        late.tasks <= early.tasks + 2,
        "live tasks grew from {} to {}: a task leaks",
        early.tasks,
        late.tasks
    );
    assert!(
        late.rss_kib <= early.rss_kib + 4096,
        "VmRSS grew from {} to {} KiB over {} cycles",
        early.rss_kib,
        late.rss_kib,
        late.cycles - early.cycles
    );
    // Every cycle reached the sink: an open and an end record each.
    bridge
        .wait_count("open", 900, |r| r["type"] == "open")
        .await;
}

// ---------------------------------------------------------------------------------------
// 8. Reconnect storm: 200 upstreams, one server restarted.

const STORM: usize = 200;

/// Reconnection times of the storm, in ms relative to the server's restart.
struct Storm {
    down_ms: f64,
    relative: Vec<f64>,
    refused: usize,
}

impl Storm {
    fn pct(&self, q: f64) -> f64 {
        let i = ((self.relative.len() - 1) as f64 * q).round() as usize;
        self.relative[i]
    }

    fn span(&self) -> f64 {
        self.pct(0.9) - self.pct(0.1)
    }

    /// A percentile relative to the moment the server went down.
    fn since_stop(&self, q: f64) -> f64 {
        self.pct(q) + self.down_ms
    }

    fn describe(&self) -> String {
        format!(
            "server down {:.0} ms; reconnections relative to the restart: min {:.0}, p10 {:.0}, \
             p50 {:.0}, p90 {:.0}, max {:.0} ms; p10-p90 span {:.0} ms; first {:.0} ms after the stop; \
             attempts refused while down {}",
            self.down_ms,
            self.pct(0.0),
            self.pct(0.1),
            self.pct(0.5),
            self.pct(0.9),
            self.pct(1.0),
            self.span(),
            self.since_stop(0.0),
            self.refused
        )
    }
}

async fn storm(jitter: f64) -> Storm {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut config = format!(
        r#"
[daemon]
shutdown_timeout = "1s"

[defaults]
reconnect = {{ initial = "500ms", max = "5s", jitter = {jitter:?} }}
"#
    );
    for i in 0..STORM {
        config.push_str(&format!(
            "\n[[upstream]]\nname = \"u{i:03}\"\nurl = \"{}\"\n",
            server.url(&format!("/u{i:03}"))
        ));
    }
    config.push_str("\n[[sink]]\ntype = \"stdout\"\n");
    let mut bridge = Bridge::start(&config).await;
    let mut conns = Vec::with_capacity(STORM);
    for _ in 0..STORM {
        conns.push(server.accept().await);
    }
    bridge
        .wait_count("open", STORM, |r| r["type"] == "open")
        .await;

    // Kill the server: the listener goes, and every connection drops at once.
    let addr = server.stop();
    let stopped = Instant::now(); // before the first connection closes
    drop(conns);
    // The outage is the point, not a condition: the server stays down ~200 ms, well inside
    // the 500 ms delays whose spread is measured.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut server = TestServer::start_on(addr, ServerOptions::default()).await;
    let restarted = Instant::now();
    let mut times = Vec::with_capacity(STORM);
    for _ in 0..STORM {
        times.push(server.next_accept_time(SOON * 2).await);
    }
    bridge
        .wait_count("open after the restart", 2 * STORM, |r| r["type"] == "open")
        .await;
    let refused =
        bridge.count(|r| r["type"] == "error" && error_text(r).to_lowercase().contains("refused"));
    let mut relative: Vec<f64> = times.iter().map(|t| signed_ms(*t, restarted)).collect();
    relative.sort_by(f64::total_cmp);
    Storm {
        down_ms: millis(restarted - stopped),
        relative,
        refused,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_of_200_upstreams_is_spread_by_jitter() {
    let _heavy = LOAD.write().await;
    let jittered = storm(0.5).await;
    eprintln!("FIGURE storm jitter=0.5: {}", jittered.describe());
    let flat = storm(0.0).await;
    eprintln!("FIGURE storm jitter=0.0: {}", flat.describe());
    // Delays are 500 ms ± 50 % after the disconnect, the server is back after ~200 ms.
    assert!(
        jittered.span() >= 150.0,
        "with jitter 0.5 the reconnections should spread: {}",
        jittered.describe()
    );
    assert!(
        jittered.pct(1.0) - jittered.pct(0.0) >= 50.0,
        "all reconnections within 50 ms despite jitter: {}",
        jittered.describe()
    );
    assert!(
        jittered.since_stop(0.0) < 450.0,
        "with jitter 0.5 some upstreams should come back well before the nominal 500 ms: {}",
        jittered.describe()
    );
    // Without jitter nobody may come early (sleeps never end early): the contrast that holds
    // however loaded the machine is (the spread of `flat` is only CPU contention).
    assert!(
        flat.since_stop(0.0) >= 490.0,
        "with jitter 0.0 every delay is the nominal 500 ms: {}",
        flat.describe()
    );
}
