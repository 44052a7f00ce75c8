//! Upstreams behind real proxies: tinyproxy (HTTP CONNECT, with and without Basic auth) and
//! microsocks (SOCKS5 with a password, `socks5` and `socks5h`), to `ws://` and `wss://` test
//! servers; the proxy variables of the environment; `connect --proxy`. Each test starts its
//! own proxy on a free port in a temp dir and kills it at the end.
//!
//! The proxies are Debian packages (`apt-get install -y tinyproxy microsocks`; tests/run.sh
//! installs them), so these tests are ignored by plain `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};

use crate::common::*;
use crate::tls_client::{error_text, Pki, WssServer};

/// The path of a program the test needs, or a failure saying how to install it.
fn require(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("this test needs {program}: apt-get install -y {program} (tests/run.sh installs it)")
        })
}

/// A proxy process on a free loopback port, its output in a log file; killed when dropped.
struct ProxyProcess {
    _child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `command(port, dir)` on free ports until one is listening: these proxies cannot
    /// bind port 0, so another process may take the port between our check and their bind.
    async fn start(program: &str, args: impl Fn(u16, &Path) -> Vec<String>) -> ProxyProcess {
        let path = require(program);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{program}.log"));
        for _ in 0..10 {
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(&path)
                .args(args(port, dir.path()))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
            let deadline = Instant::now() + SOON;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("{program} on port {port} exited ({status}); trying another port");
                    break;
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return ProxyProcess {
                        _child: child,
                        port,
                        log,
                        _dir: dir,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "{program} never listened on {port}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "{program} did not start in 10 tries; its last output:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// tinyproxy allowing CONNECT to `ports`, with Basic auth when `auth` is given.
    async fn tinyproxy(ports: &[u16], auth: Option<(&str, &str)>) -> ProxyProcess {
        let ports = ports.to_vec();
        let auth = auth.map(|(u, p)| format!("BasicAuth {u} {p}\n"));
        Self::start("tinyproxy", move |port, dir| {
            let mut config = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Info\nMaxClients 50\nAllow 127.0.0.1\n"
            );
            for p in &ports {
                config.push_str(&format!("ConnectPort {p}\n"));
            }
            config.push_str(auth.as_deref().unwrap_or(""));
            let path = dir.join("tinyproxy.conf");
            std::fs::write(&path, config).unwrap();
            vec!["-d".into(), "-c".into(), path.display().to_string()]
        })
        .await
    }

    /// microsocks, with a user and password when `auth` is given.
    async fn microsocks(auth: Option<(&str, &str)>) -> ProxyProcess {
        let auth: Vec<String> = match auth {
            Some((u, p)) => vec!["-u".into(), u.into(), "-P".into(), p.into()],
            None => Vec::new(),
        };
        Self::start("microsocks", move |port, _| {
            let mut args = vec![
                "-i".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ];
            args.extend(auth.iter().cloned());
            args
        })
        .await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the proxy's log holds `needle`.
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + SOON;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the proxy never logged {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A config with named upstreams (`[name, url, extra keys]`) and a stdout sink.
fn upstreams(list: &[(&str, &str, &str)]) -> String {
    let reconnect = r#"reconnect = { initial = "200ms", max = "1s" }"#;
    let mut config = TestConfig::new().shutdown_timeout("1s");
    for (name, url, extra) in list {
        config = config.upstream(name, url, &format!("{reconnect}\n{extra}"));
    }
    config.stdout_sink().to_string()
}

fn of(upstream: &'static str, kind: &'static str) -> impl Fn(&Value) -> bool {
    move |r| r["upstream"] == upstream && r["type"] == kind
}

/// A ws:// server that answers each connection with one message naming it and keeps it open.
async fn plain_server() -> (TestServer, u16) {
    let server = TestServer::start(ServerOptions::default()).await;
    let port = server.addr.port();
    (server, port)
}

/// A wss:// server for localhost, and the `ca_file` line that trusts it.
async fn tls_server(dir: &Path) -> (WssServer, String) {
    let pki = Pki::new();
    let server = WssServer::start(&pki.issue(&["localhost"]), None).await;
    let ca = pki.write_ca(dir);
    (server, format!("ca_file = \"{}\"", ca.display()))
}

#[tokio::test]
#[ignore = "needs tinyproxy: tests/run.sh installs and runs it"]
async fn tinyproxy_with_basic_auth_carries_ws_and_wss() {
    let dir = tempfile::tempdir().unwrap();
    let (mut plain, plain_port) = plain_server().await;
    let (mut secure, ca) = tls_server(dir.path()).await;
    let proxy =
        ProxyProcess::tinyproxy(&[plain_port, secure.port], Some(("feeder", "s3cret"))).await;
    // User info is percent-decoded before it is sent (%65 is "e").
    let setting = format!(
        "proxy = \"http://feeder:s3cr%65t@127.0.0.1:{}\"",
        proxy.port
    );
    let plain_url = format!("ws://127.0.0.1:{plain_port}/plain");
    let secure_url = format!("wss://localhost:{}/secure", secure.port);
    let config = upstreams(&[
        ("plain", &plain_url, &setting),
        ("secure", &secure_url, &format!("{setting}\n{ca}")),
    ]);
    let mut daemon = Daemon::start_in(dir, &config).await;

    let mut conn = plain.accept().await;
    assert_eq!(conn.path, "/plain");
    conn.send_text("through tinyproxy").await;
    let record = daemon.record_where("plain data", of("plain", "text")).await;
    assert_eq!(record["data"], "through tinyproxy");

    let (mut ws, sni) = secure.accept().await;
    assert_eq!(
        sni.as_deref(),
        Some("localhost"),
        "TLS inside the tunnel names the upstream"
    );
    ws_send(&mut ws, "through tinyproxy, encrypted").await;
    let record = daemon
        .record_where("secure data", of("secure", "text"))
        .await;
    assert_eq!(record["data"], "through tinyproxy, encrypted");

    proxy
        .wait_for_log(&format!("CONNECT 127.0.0.1:{plain_port}"))
        .await;
    proxy
        .wait_for_log(&format!("CONNECT localhost:{}", secure.port))
        .await;
    assert!(!daemon.stderr().contains("s3cr"), "{}", daemon.stderr());
}

async fn ws_send(ws: &mut crate::tls_client::TlsWs, text: &str) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
}

/// tinyproxy answers a CONNECT without credentials with 407 and one with a wrong password
/// with 401: either way the record names the proxy (password hidden) and its answer.
#[tokio::test]
#[ignore = "needs tinyproxy: tests/run.sh installs and runs it"]
async fn a_proxy_refusing_the_credentials_is_an_error_record_naming_it_and_its_answer() {
    let (_server, port) = plain_server().await;
    let proxy = ProxyProcess::tinyproxy(&[port], Some(("feeder", "right"))).await;
    let wrong = format!("http://feeder:hunter2@127.0.0.1:{}", proxy.port);
    let none = format!("http://127.0.0.1:{}", proxy.port);
    let url = format!("ws://127.0.0.1:{port}/");
    let config = upstreams(&[
        ("wrong", &url, &format!("proxy = \"{wrong}\"")),
        ("none", &url, &format!("proxy = \"{none}\"")),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("check.toml"), &config).unwrap();
    let out = run_ok(
        std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(dir.path().join("check.toml")),
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    let shown = format!("http://feeder:***@127.0.0.1:{}", proxy.port);
    assert!(plan.contains(&format!("proxy          {shown}")), "{plan}");
    assert!(!plan.contains("hunter2"), "{plan}");

    let mut daemon = Daemon::start_in(dir, &config).await;
    for _ in 0..2 {
        let error = daemon.record_where("error", of("wrong", "error")).await;
        let text = error_text(&error);
        assert!(
            text.contains(&shown) && text.contains("HTTP 401"),
            "{error}"
        );
        assert!(!text.contains("hunter2"), "{error}");
        assert!(
            error["retry_in_ms"].is_u64(),
            "retried like any failure: {error}"
        );
    }
    let error = daemon.record_where("error", of("none", "error")).await;
    let text = error_text(&error);
    assert!(
        text.contains(&none) && text.contains("HTTP 407 Proxy Authentication Required"),
        "{error}"
    );
    assert!(!daemon.stderr().contains("hunter2"), "{}", daemon.stderr());
}

#[tokio::test]
#[ignore = "needs microsocks: tests/run.sh installs and runs it"]
async fn microsocks_with_a_password_carries_socks5_and_socks5h() {
    let dir = tempfile::tempdir().unwrap();
    let (mut plain, plain_port) = plain_server().await;
    let (mut secure, ca) = tls_server(dir.path()).await;
    let proxy = ProxyProcess::microsocks(Some(("feeder", "s3cret"))).await;
    let local_dns = format!(
        "proxy = \"socks5://feeder:s3cret@127.0.0.1:{}\"",
        proxy.port
    );
    let proxy_dns = format!(
        "proxy = \"socks5h://feeder:s3cret@127.0.0.1:{}\"",
        proxy.port
    );
    let plain_url = format!("ws://localhost:{plain_port}/");
    let secure_url = format!("wss://localhost:{}/", secure.port);
    let config = upstreams(&[
        ("local-dns", &plain_url, &local_dns),
        ("proxy-dns", &secure_url, &format!("{proxy_dns}\n{ca}")),
    ]);
    let mut daemon = Daemon::start_in(dir, &config).await;

    let mut conn = plain.accept().await;
    conn.send_text("socks5").await;
    let record = daemon
        .record_where("socks5 data", of("local-dns", "text"))
        .await;
    assert_eq!(record["data"], "socks5");
    let (mut ws, _) = secure.accept().await;
    ws_send(&mut ws, "socks5h").await;
    let record = daemon
        .record_where("socks5h data", of("proxy-dns", "text"))
        .await;
    assert_eq!(record["data"], "socks5h");

    // microsocks logs the destination as the client sent it: an address resolved here for
    // socks5, the name for socks5h.
    proxy
        .wait_for_log(&format!("connected to 127.0.0.1:{plain_port}"))
        .await;
    proxy
        .wait_for_log(&format!("connected to localhost:{}", secure.port))
        .await;
}

#[tokio::test]
#[ignore = "needs microsocks: tests/run.sh installs and runs it"]
async fn a_wrong_socks_password_is_an_error_record_naming_the_proxy() {
    let (_server, port) = plain_server().await;
    let proxy = ProxyProcess::microsocks(Some(("feeder", "right"))).await;
    let setting = format!(
        "proxy = \"socks5h://feeder:wrong@127.0.0.1:{}\"",
        proxy.port
    );
    let url = format!("ws://127.0.0.1:{port}/");
    let mut daemon = Daemon::start(&upstreams(&[("feed", &url, &setting)])).await;
    let error = daemon.record_where("error", of("feed", "error")).await;
    let text = error_text(&error);
    let shown = format!("socks5h://feeder:***@127.0.0.1:{}", proxy.port);
    assert!(text.contains(&shown), "{error}");
    assert!(text.contains("authentication failed"), "{error}");
    assert!(!text.contains("wrong"), "{error}");
}

/// `https_proxy` carries wss://, `http_proxy` ws://, and `no_proxy` sends a listed host
/// directly. `http_proxy` points at a dead port: an upstream that connects anyway did not use it.
#[tokio::test]
#[ignore = "needs tinyproxy: tests/run.sh installs and runs it"]
async fn the_environments_proxy_variables_decide_as_in_curl() {
    let dir = tempfile::tempdir().unwrap();
    let (mut plain, plain_port) = plain_server().await;
    let (mut secure, ca) = tls_server(dir.path()).await;
    let proxy = ProxyProcess::tinyproxy(&[plain_port, secure.port], None).await;
    let dead = free_port();
    let https_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let http_proxy = format!("http://127.0.0.1:{dead}");
    let secure_url = format!("wss://localhost:{}/", secure.port);
    let direct_url = format!("ws://127.0.0.1:{plain_port}/");
    let blocked_url = format!("ws://localhost:{plain_port}/");
    let config = upstreams(&[
        ("secure", &secure_url, &ca),
        ("direct", &direct_url, ""),
        ("blocked", &blocked_url, ""),
    ]);
    let env = [
        ("https_proxy", https_proxy.as_str()),
        ("http_proxy", http_proxy.as_str()),
        ("no_proxy", "127.0.0.1"),
    ];
    let mut daemon = Daemon::start_with_env(dir, &config, &env).await;

    let (mut ws, _) = secure.accept().await;
    ws_send(&mut ws, "via https_proxy").await;
    let record = daemon
        .record_where("secure data", of("secure", "text"))
        .await;
    assert_eq!(record["data"], "via https_proxy");
    proxy
        .wait_for_log(&format!("CONNECT localhost:{}", secure.port))
        .await;

    let mut conn = plain.accept().await;
    conn.send_text("direct, as no_proxy says").await;
    let record = daemon
        .record_where("direct data", of("direct", "text"))
        .await;
    assert_eq!(record["data"], "direct, as no_proxy says");

    let error = daemon
        .record_where("blocked error", of("blocked", "error"))
        .await;
    assert!(
        error_text(&error).contains(&format!("cannot reach proxy {http_proxy}")),
        "{error}"
    );
    assert!(
        !proxy
            .log()
            .contains(&format!("CONNECT 127.0.0.1:{plain_port}")),
        "no_proxy's host went through the proxy:\n{}",
        proxy.log()
    );
}

#[tokio::test]
#[ignore = "needs tinyproxy: tests/run.sh installs and runs it"]
async fn connect_proxy_reaches_the_server_once() {
    let (mut server, port) = plain_server().await;
    let proxy = ProxyProcess::tinyproxy(&[port], None).await;
    let child = Command::new(bin())
        .args([
            "connect",
            &format!("ws://127.0.0.1:{port}/"),
            "-U",
            "--proxy",
        ])
        .arg(format!("http://127.0.0.1:{}", proxy.port))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    conn.send_text("to connect, through the proxy").await;
    conn.send_close(1000, "done").await;
    let out = timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "to connect, through the proxy\n",
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    proxy
        .wait_for_log(&format!("CONNECT 127.0.0.1:{port}"))
        .await;
}
