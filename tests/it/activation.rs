//! Socket activation: `systemd-socket-activate` (systemd's own code, from Debian's systemd
//! package) listens, then starts `wsbridge run` with the sockets as fd 3, 4, …; the tcp and
//! unix sinks use them instead of binding their own, and the unix socket file stays on exit.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::*;
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};

/// `systemd-socket-activate`, or a failure saying how to install it.
fn socket_activate() -> PathBuf {
    let path = PathBuf::from("/usr/bin/systemd-socket-activate");
    assert!(
        path.exists(),
        "these tests need systemd-socket-activate: apt-get install systemd (tests/run.sh does)"
    );
    path
}

/// `wsbridge run -c CONFIG` under `systemd-socket-activate` listening on `listen` (with
/// `fdnames`); returns the child once it listens. It execs wsbridge on the first connection.
async fn activate(
    dir: &Path,
    config: &str,
    listen: &[String],
    fdnames: Option<&str>,
) -> (Child, PathBuf) {
    let config_path = dir.join("wsbridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let stderr_path = dir.join("stderr.log");
    let mut command = Command::new(socket_activate());
    for l in listen {
        command.arg("-l").arg(l);
    }
    if let Some(names) = fdnames {
        command.arg(format!("--fdname={names}"));
    }
    let mut child = command
        .args(["-E", "RUST_LOG=wsbridge=debug", "--"])
        .arg(bin())
        .args(["run", "-c"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start systemd-socket-activate");
    let deadline = Instant::now() + SOON;
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    while stderr().matches("Listening on").count() < listen.len() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "systemd-socket-activate exited with {status}:\n{}",
                stderr()
            );
        }
        assert!(Instant::now() < deadline, "not listening:\n{}", stderr());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (child, stderr_path)
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

async fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    timeout(SOON * 2, child.wait())
        .await
        .expect("exit in time")
        .unwrap()
}

#[tokio::test]
#[ignore = "needs systemd (systemd-socket-activate): tests/run.sh installs and runs it"]
async fn passed_tcp_and_unix_sockets_are_used_and_the_socket_file_stays() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("feed.sock");
    let port = free_port();
    let config = format!(
        r#"
[[upstream]]
name = "feed"
url = "{url}"

[[sink]]
type = "tcp"
listen = "127.0.0.1:{port}"
events = false

[[sink]]
type = "unix"
path = "{sock}"
events = false
"#,
        url = server.url("/"),
        sock = sock.display()
    );
    let listen = [format!("127.0.0.1:{port}"), sock.display().to_string()];
    let (mut child, stderr) = activate(dir.path(), &config, &listen, None).await;
    // The first connection starts wsbridge, which accepts it on the passed socket.
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut tcp = RecordReader::new(connect_tcp(addr).await);
    let mut conn = server.accept().await;
    let mut unix = RecordReader::new(connect_unix(&sock).await);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let deadline = Instant::now() + SOON;
    while log().matches("using the socket systemd passed").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no sink took a passed socket:\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A record reaches the clients a sink has accepted, not those still in its backlog.
    clients_accepted(&stderr, 2).await;
    conn.send_text("hello").await;
    assert_eq!(tcp.next().await["data"], "hello");
    assert_eq!(unix.next().await["data"], "hello");

    let status = sigterm_and_wait(&mut child).await;
    assert!(status.success(), "{status}:\n{}", log());
    assert!(
        is_socket(&sock),
        "the passed socket's file must stay (systemd owns it):\n{}",
        log()
    );
    // wsbridge did not bind its own: it would have failed on the address in use, or on
    // the socket file that accepts connections.
    assert!(!log().contains("cannot listen"), "{}", log());
}

#[tokio::test]
#[ignore = "needs systemd (systemd-socket-activate): tests/run.sh installs and runs it"]
async fn fd_name_picks_the_passed_socket_whatever_its_address() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (port, other) = (free_port(), free_port());
    // `listen` names another port: the name decides.
    let config = format!(
        r#"
[[upstream]]
name = "feed"
url = "{url}"

[[sink]]
type = "tcp"
listen = "127.0.0.1:{other}"
fd_name = "trades"
events = false
"#,
        url = server.url("/"),
    );
    let listen = [format!("127.0.0.1:{port}")];
    let (mut child, stderr) = activate(dir.path(), &config, &listen, Some("trades")).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut tcp = RecordReader::new(connect_tcp(addr).await);
    let mut conn = server.accept().await;
    clients_accepted(&stderr, 1).await;
    conn.send_text("by name").await;
    assert_eq!(tcp.next().await["data"], "by name");
    assert!(sigterm_and_wait(&mut child).await.success());
}

/// Waits until the sinks have accepted `n` clients (wsbridge logs each at debug, which
/// [`activate`] turns on).
async fn clients_accepted(stderr: &Path, n: usize) {
    let log = || std::fs::read_to_string(stderr).unwrap_or_default();
    let deadline = Instant::now() + SOON;
    while log().matches("client connected").count() < n {
        assert!(
            Instant::now() < deadline,
            "the sinks did not accept {n} clients:\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_fd_name_that_systemd_did_not_pass_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:{}\"\nfd_name = \"trades\"\n",
        free_port()
    );
    let path = dir.path().join("wsbridge.toml");
    std::fs::write(&path, config).unwrap();
    let out = timeout(
        SOON,
        Command::new(bin())
            .args(["run", "-c"])
            .arg(&path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .output(),
    )
    .await
    .expect("exits in time")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("systemd passed no tcp socket named \"trades\"")
            && stderr.contains("FileDescriptorName=trades"),
        "{stderr}"
    );
}
