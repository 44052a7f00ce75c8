//! TLS from the client's side against real tokio-rustls servers with certificates made here
//! (rcgen): mutual TLS (`client_cert`/`client_key` accepted, none refused), a key that does
//! not match its certificate refused by `check` at its line, `server_name` for a URL holding
//! an address, and `insecure` with its warning on every connect. The [`Pki`] and
//! [`WssServer`] fixtures serve `proxy.rs` too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A test certificate authority that issues server and client certificates.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// An issued certificate with its key, as DER (for the test server) and PEM (for wsbridge).
pub struct Issued {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsbridge test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// The CA's certificate, PEM: what `ca_file` names.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `names`, signed by the CA.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        Issued {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate into `dir` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca_pem()).unwrap();
        path
    }
}

impl Issued {
    /// Writes `<name>.pem` and `<name>.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

pub type TlsWs = tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;

/// A wss:// server on 127.0.0.1; each connection is reported as the WebSocket (with the name
/// the client sent as SNI) or the reason it failed.
pub struct WssServer {
    pub port: u16,
    conns: mpsc::UnboundedReceiver<Result<(TlsWs, Option<String>), String>>,
}

impl WssServer {
    /// Serves `identity`; with `client_ca`, only clients with a certificate it signed get in.
    pub async fn start(identity: &Issued, client_ca: Option<&Pki>) -> WssServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(pki) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki.ca.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = match acceptor.accept(stream).await {
                        Err(e) => Err(format!("TLS: {e}")),
                        Ok(tls) => {
                            let sni = tls.get_ref().1.server_name().map(str::to_owned);
                            tokio_tungstenite::accept_async(tls)
                                .await
                                .map(|ws| (ws, sni))
                                .map_err(|e| format!("WebSocket: {e}"))
                        }
                    };
                    let _ = tx.send(result);
                });
            }
        });
        WssServer { port, conns }
    }

    /// The next connection's outcome.
    pub async fn next(&mut self) -> Result<(TlsWs, Option<String>), String> {
        timeout(SOON * 2, self.conns.recv())
            .await
            .expect("a connection attempt in time")
            .expect("server running")
    }

    /// The next connection that got through, skipping failed attempts (for a while: a client
    /// that keeps failing must not keep the test waiting).
    pub async fn accept(&mut self) -> (TlsWs, Option<String>) {
        let deadline = tokio::time::Instant::now() + SOON * 2;
        loop {
            match self.next().await {
                Ok(conn) => return conn,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no connection got through in time; the last one failed with {e}"
                ),
            }
        }
    }
}

/// A config with one upstream (plus `extra` keys) and a stdout sink.
pub fn one_upstream(url: &str, extra: &str) -> String {
    let reconnect = r#"reconnect = { initial = "200ms", max = "1s" }"#;
    TestConfig::feed_to_stdout(url, &format!("{reconnect}\n{extra}"))
        .shutdown_timeout("1s")
        .to_string()
}

pub fn error_text(record: &Value) -> &str {
    record["error"].as_str().unwrap_or_default()
}

/// Sends `text` from the server and waits for its record.
pub async fn feed_arrives(daemon: &mut Daemon, ws: &mut TlsWs, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let record = daemon.record_where("data", is_data).await;
    assert_eq!(record["data"], text, "{record}");
}

#[tokio::test]
async fn mutual_tls_with_the_client_certificate_gets_the_feed_and_without_it_an_error() {
    let pki = Pki::new();
    let server_id = pki.issue(&["localhost"]);
    let mut server = WssServer::start(&server_id, Some(&pki)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let (cert, key) = pki.issue(&["wsbridge client"]).write(dir.path(), "client");
    let url = format!("wss://localhost:{}/", server.port);

    // Without a certificate the server refuses the handshake.
    let extra = format!("ca_file = \"{}\"", ca.display());
    let mut daemon = Daemon::start(&one_upstream(&url, &extra)).await;
    let refused = server.next().await;
    assert!(
        matches!(&refused, Err(e) if e.starts_with("TLS")),
        "server saw {:?}",
        refused.as_ref().err()
    );
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    assert!(
        error_text(&error).contains(&url) && error_text(&error).contains("client_cert"),
        "names the URL and says what to set: {error}"
    );
    drop(daemon);

    let extra = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        ca.display(),
        cert.display(),
        key.display()
    );
    let mut daemon = Daemon::start(&one_upstream(&url, &extra)).await;
    let (mut ws, _) = server.accept().await;
    let open = daemon.record_where("open", |r| r["type"] == "open").await;
    assert_eq!(open["url"], url);
    feed_arrives(&mut daemon, &mut ws, "hello, authenticated client").await;
}

#[tokio::test]
async fn check_refuses_a_key_of_another_certificate_at_client_keys_line() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = pki.issue(&["a"]).write(dir.path(), "a");
    let (_, other_key) = pki.issue(&["b"]).write(dir.path(), "b");
    let config = format!(
        "[[upstream]]\nname = \"feed\"\nurl = \"wss://localhost:1/\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\n[[sink]]\ntype = \"stdout\"\n",
        cert.display(),
        other_key.display()
    );
    let path = dir.path().join("wsbridge.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "{}:5:14: upstream[0].client_key: client key",
        path.display()
    );
    assert!(
        stderr.contains(&expected),
        "wanted {expected:?} in:\n{stderr}"
    );
    assert!(
        stderr.contains("does not belong to client certificate"),
        "{stderr}"
    );

    // The matching key passes, and the plan shows the pair.
    let (cert_c, key) = pki.issue(&["c"]).write(dir.path(), "c");
    let config = format!(
        "[[upstream]]\nname = \"feed\"\nurl = \"wss://localhost:1/\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        cert_c.display(),
        key.display()
    );
    std::fs::write(&path, config).unwrap();
    let out = run_ok(
        std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&path),
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains(&format!("client_cert    {}", cert_c.display())),
        "{plan}"
    );
}

#[tokio::test]
async fn server_name_verifies_a_certificate_for_another_name_than_the_urls_host() {
    let pki = Pki::new();
    let mut server = WssServer::start(&pki.issue(&["feed.internal"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let url = format!("wss://127.0.0.1:{}/", server.port);

    // The certificate does not name 127.0.0.1: refused, with a hint at server_name.
    let extra = format!("ca_file = \"{}\"", ca.display());
    let mut daemon = Daemon::start(&one_upstream(&url, &extra)).await;
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    assert!(error_text(&error).contains("server_name"), "{error}");
    drop(daemon);

    let extra = format!(
        "ca_file = \"{}\"\nserver_name = \"feed.internal\"",
        ca.display()
    );
    let mut daemon = Daemon::start(&one_upstream(&url, &extra)).await;
    let (mut ws, sni) = server.accept().await;
    assert_eq!(
        sni.as_deref(),
        Some("feed.internal"),
        "the name is sent as SNI too"
    );
    daemon.record_where("open", |r| r["type"] == "open").await;
    feed_arrives(&mut daemon, &mut ws, "verified as feed.internal").await;
}

#[tokio::test]
async fn insecure_connects_to_an_untrusted_server_and_warns_on_every_connect() {
    let pki = Pki::new();
    let mut server = WssServer::start(&pki.issue(&["somewhere.else"]), None).await;
    let url = format!("wss://127.0.0.1:{}/", server.port);
    let dir = tempfile::tempdir().unwrap();
    let config = one_upstream(&url, "insecure = true");
    std::fs::write(dir.path().join("plan.toml"), &config).unwrap();
    let out = run_ok(
        std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(dir.path().join("plan.toml")),
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("WARNING        insecure = true"), "{plan}");

    let mut daemon = Daemon::start_in(dir, &config).await;
    for n in 1..=2 {
        let (mut ws, _) = server.accept().await;
        daemon.record_where("open", |r| r["type"] == "open").await;
        feed_arrives(
            &mut daemon,
            &mut ws,
            &format!("untrusted but accepted #{n}"),
        )
        .await;
        let warnings = daemon.stderr().matches("insecure = true").count();
        assert_eq!(warnings, n, "one warning per connect:\n{}", daemon.stderr());
        // The server goes away; wsbridge reconnects, and warns again.
        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn connect_cert_and_key_reach_a_server_that_requires_them() {
    let pki = Pki::new();
    let mut server = WssServer::start(&pki.issue(&["localhost"]), Some(&pki)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let (cert, key) = pki.issue(&["client"]).write(dir.path(), "client");
    let url = format!("wss://localhost:{}/", server.port);
    let child = tokio::process::Command::new(bin())
        .args(["connect", &url, "-U", "--ca-file"])
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mut ws, _) = server.accept().await;
    ws.send(Message::text("to connect, with a certificate"))
        .await
        .unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let out = timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "to connect, with a certificate\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}
