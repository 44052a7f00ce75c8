//! `before_connect` and `${file:…}`/`${credential:…}` against the real daemon: a program
//! that prints fresh credentials for every attempt, one that fails, and secrets from files.

use crate::common::*;

fn config(url: &str, extra: &str) -> String {
    let reconnect = r#"reconnect = { initial = "100ms", max = "300ms", jitter = 0.0 }"#;
    TestConfig::feed_to_stdout(url, &format!("{reconnect}\n{extra}"))
        .shutdown_timeout("2s")
        .to_string()
}

/// A shell script in `dir` (run as `/bin/sh <path>`: no exec bit needed on tmpfs mounts).
fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn every_attempt_gets_fresh_credentials_url_and_on_connect() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    // Prints a new token, a new path and a new subscription on each call.
    let body = format!(
        r#"n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}
printf '{{"url":"ws://{addr}/t%s?key=SECRET-KEY-%s","headers":{{"Authorization":"Bearer SECRET-TOKEN-%s"}},"cookies":{{"ticket":"t%s"}},"on_connect":["sub %s"]}}\n' $n $n $n $n $n
echo "issued for $WSBRIDGE_UPSTREAM" >&2
"#,
        c = counter.display(),
        addr = server.addr
    );
    let prog = script(dir.path(), "ticket.sh", &body);
    let extra = format!(
        r#"headers = {{ X-Static = "kept", Authorization = "Bearer configured" }}
before_connect = ["/bin/sh", "{prog}"]"#
    );
    let mut daemon = Daemon::start_in(dir, &config(&server.url("/configured"), &extra)).await;
    let mut seen = Vec::new();
    for n in 1..=3 {
        let mut conn = server.accept().await;
        assert_eq!(conn.path, format!("/t{n}?key=SECRET-KEY-{n}"));
        assert_eq!(conn.header("x-static"), Some("kept"));
        assert_eq!(conn.header("cookie"), Some(format!("ticket=t{n}").as_str()));
        seen.push(conn.header("authorization").unwrap().to_string());
        assert_eq!(conn.recv_text().await, format!("sub {n}"));
        let open = daemon.record_where("open", |r| r["type"] == "open").await;
        assert_eq!(
            open["url"],
            format!("ws://{}/t{n}?key=***", server.addr),
            "the overridden URL is shown redacted"
        );
        conn.send_close(1012, "restart").await;
    }
    assert_eq!(
        seen,
        [
            "Bearer SECRET-TOKEN-1",
            "Bearer SECRET-TOKEN-2",
            "Bearer SECRET-TOKEN-3"
        ]
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success());
    let log = daemon.stderr();
    assert!(log.contains("running before_connect"), "{log}");
    assert!(
        !log.contains("SECRET"),
        "the program's output reached the log:\n{log}"
    );
}

#[tokio::test]
async fn a_failing_program_is_an_error_record_with_its_stderr_then_backoff() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "broken.sh",
        "echo '{\"headers\":{\"Authorization\":\"SECRET\"}}'\necho 'starting' >&2\necho 'ticket service said 503' >&2\nexit 7\n",
    );
    let extra = format!(r#"before_connect = ["/bin/sh", "{prog}"]"#);
    let mut daemon = Daemon::start_in(dir, &config(&server.url("/"), &extra)).await;
    let mut retries = Vec::new();
    for _ in 0..3 {
        let error = daemon.record_where("error", |r| r["type"] == "error").await;
        let text = error["error"].as_str().unwrap();
        assert!(
            text.contains("before_connect program /bin/sh failed"),
            "{text}"
        );
        assert!(text.contains("exit status: 7"), "{text}");
        assert!(
            text.ends_with("its stderr: ticket service said 503"),
            "{text}"
        );
        assert!(!text.contains("SECRET"), "{text}");
        retries.push(error["retry_in_ms"].as_u64().expect("retry_in_ms"));
    }
    assert_eq!(retries, [100, 200, 300], "the normal backoff");
    // Never connected.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), server.accept_any())
            .await
            .is_err()
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success());
    assert!(!daemon.stderr().contains("SECRET"));
}

#[tokio::test]
async fn file_and_credential_secrets_reach_the_handshake_and_reload_rereads_them() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("api"), "cred-one\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "file-one\n").unwrap();
    let extra = format!(
        r#"headers = {{ X-Token = "${{file:{}}}", X-Api = "${{credential:api}}" }}"#,
        token.display()
    );
    let text = config(&server.url("/"), &extra);
    let env = [("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())];
    let mut daemon = Daemon::start_with_env(dir, &text, &env).await;
    let conn = server.accept().await;
    assert_eq!(conn.header("x-token"), Some("file-one"));
    assert_eq!(conn.header("x-api"), Some("cred-one"));
    std::fs::write(&token, "file-two\n").unwrap();
    std::fs::write(creds.join("api"), "cred-two").unwrap();
    daemon.signal(1);
    let conn = server.accept().await;
    assert_eq!(conn.header("x-token"), Some("file-two"));
    assert_eq!(conn.header("x-api"), Some("cred-two"));
    daemon.signal(15);
    assert!(daemon.wait().await.success());
    let log = daemon.stderr();
    assert!(
        !log.contains("file-one") && !log.contains("cred-two"),
        "{log}"
    );
}

#[test]
fn check_names_the_line_of_a_missing_secret_file_or_credential_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsbridge.toml");
    let text = r#"
[[upstream]]
name = "feed"
url = "ws://127.0.0.1:1/"
headers = { X-Token = "${file:/nonexistent/wsbridge-token}" }
cookies = { session = "${credential:session}" }
before_connect = ["/nonexistent/get-ticket"]

[[sink]]
type = "stdout"
"#;
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":5:")
            && err.contains(
                "upstream[0].headers.X-Token: ${file:/nonexistent/wsbridge-token}: cannot read"
            ),
        "{err}"
    );
    assert!(
        err.contains(":6:")
            && err.contains(
                "upstream[0].cookies.session: ${credential:session} needs $CREDENTIALS_DIRECTORY"
            ),
        "{err}"
    );
    assert!(
        err.contains(":7:")
            && err.contains("upstream[0].before_connect: cannot use /nonexistent/get-ticket"),
        "{err}"
    );
}

#[tokio::test]
async fn connect_takes_before_connect_as_a_quoted_command_line() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let program = r#"/bin/sh -c 'echo "{\"headers\":{\"Authorization\":\"Bearer from-prog\"}}"'"#;
    let child = tokio::process::Command::new(bin())
        .args([
            "connect",
            &server.url("/"),
            "-U",
            "--before-connect",
            program,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    assert_eq!(conn.header("authorization"), Some("Bearer from-prog"));
    conn.send_text("hello").await;
    conn.send_close(1000, "").await;
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

/// TLS follows the URL actually dialled: a program that switches `ws://` to `wss://` gets TLS
/// (system roots: here the test CA through `SSL_CERT_FILE`, as rustls-native-certs reads it),
/// and one that switches `wss://` to `ws://` gets none.
#[tokio::test]
async fn a_url_switched_to_wss_gets_tls_and_one_switched_to_ws_gets_none() {
    use crate::tls_client::{feed_arrives, Pki, WssServer};
    let pki = Pki::new();
    let mut wss = WssServer::start(&pki.issue(&["localhost"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let prog = script(
        dir.path(),
        "to-wss.sh",
        &format!("echo '{{\"url\":\"wss://localhost:{}/tls\"}}'\n", wss.port),
    );
    let extra = format!(r#"before_connect = ["/bin/sh", "{prog}"]"#);
    let text = config("ws://127.0.0.1:1/plain", &extra);
    let env = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let mut daemon = Daemon::start_with_env(dir, &text, &env).await;
    let (mut ws, sni) = wss.accept().await;
    assert_eq!(sni.as_deref(), Some("localhost"));
    let open = daemon.record_where("open", |r| r["type"] == "open").await;
    assert_eq!(open["url"], format!("wss://localhost:{}/tls", wss.port));
    feed_arrives(&mut daemon, &mut ws, "over tls").await;
    daemon.signal(15);
    assert!(daemon.wait().await.success());

    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let prog = script(
        dir.path(),
        "to-ws.sh",
        &format!("echo '{{\"url\":\"ws://{}/plain\"}}'\n", server.addr),
    );
    let extra = format!(
        "ca_file = \"{}\"\nbefore_connect = [\"/bin/sh\", \"{prog}\"]",
        ca.display()
    );
    let text = config(&format!("wss://localhost:{}/tls", wss.port), &extra);
    let mut daemon = Daemon::start_in(dir, &text).await;
    let mut conn = server.accept().await;
    assert_eq!(conn.path, "/plain");
    conn.send_text("in the clear").await;
    let record = daemon.record_where("data", is_data).await;
    assert_eq!(record["data"], "in the clear", "{record}");
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}
