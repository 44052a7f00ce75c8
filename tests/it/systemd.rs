//! The daemon under systemd's notify protocol (sd_notify(3)), seen from the manager's side:
//! the test binds the `NOTIFY_SOCKET` datagram socket itself and reads what `wsbridge run`
//! sends. READY=1 must mean "every sink accepts connections", RELOADING=1 carries
//! MONOTONIC_USEC in the same datagram and is followed by READY=1, STOPPING=1 comes on
//! SIGTERM, WATCHDOG=1 comes at half of WATCHDOG_USEC. Without NOTIFY_SOCKET nothing is sent
//! (every other test file runs the daemon that way).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use tokio::net::{TcpStream, UnixDatagram, UnixStream};
use tokio::time::{timeout, Instant};

/// One notification datagram, split into its `KEY=value` lines.
#[derive(Debug, Clone)]
struct Datagram {
    lines: Vec<String>,
    at: Instant,
}

impl Datagram {
    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// The manager's end of `NOTIFY_SOCKET`; keeps every datagram it has read.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<Datagram>,
}

impl Manager {
    /// Binds `notify.sock` in `dir`; returns the manager and the value for `NOTIFY_SOCKET`.
    fn bind(dir: &Path) -> (Manager, String) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let value = path.to_str().expect("a UTF-8 temp path").to_string();
        (Manager::from(socket), value)
    }

    fn from(socket: UnixDatagram) -> Manager {
        Manager {
            socket,
            seen: Vec::new(),
        }
    }

    /// The next datagram within `within`, or `None`.
    async fn next_within(&mut self, within: Duration) -> Option<Datagram> {
        let mut buf = vec![0u8; 4096];
        let n = timeout(within, self.socket.recv(&mut buf)).await.ok()?;
        let n = n.expect("recv on the notify socket");
        let text = std::str::from_utf8(&buf[..n]).expect("notifications are UTF-8");
        assert!(
            text.ends_with('\n'),
            "every field ends with a newline: {text:?}"
        );
        let datagram = Datagram {
            lines: text.lines().map(str::to_string).collect(),
            at: Instant::now(),
        };
        self.seen.push(datagram.clone());
        Some(datagram)
    }

    /// Reads datagrams until one has the line `line` (e.g. `READY=1`).
    async fn wait_for(&mut self, line: &str, daemon: &Daemon) -> Datagram {
        let deadline = Instant::now() + SOON * 2;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Some(d) if d.has(line) => return d,
                Some(_) => {}
                None => panic!(
                    "no {line} within {:?}; got {:?}; stderr:\n{}",
                    SOON * 2,
                    self.seen,
                    daemon.stderr()
                ),
            }
        }
    }

    /// Every datagram that arrives within `span`.
    async fn collect_for(&mut self, span: Duration) -> Vec<Datagram> {
        let end = Instant::now() + span;
        let mut out = Vec::new();
        while let Some(d) = self
            .next_within(end.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(d);
        }
        out
    }

    /// READY/RELOADING/STOPPING lines in the order they arrived.
    fn states(&self) -> Vec<&'static str> {
        let mut states = Vec::new();
        for d in &self.seen {
            for state in ["RELOADING=1", "READY=1", "STOPPING=1"] {
                if d.has(state) {
                    states.push(state);
                }
            }
        }
        states
    }

    fn watchdog_pings(&self) -> usize {
        self.seen.iter().filter(|d| d.has("WATCHDOG=1")).count()
    }
}

/// An upstream and tcp sinks on `ports`, plus a unix sink at `unix` if given.
fn config(upstream: &str, ports: &[u16], unix: Option<&Path>) -> String {
    let mut config = TestConfig::new()
        .shutdown_timeout("2s")
        .upstream("feed", upstream, "");
    for port in ports {
        config = config.sink("tcp", &format!("listen = \"127.0.0.1:{port}\""));
    }
    if let Some(path) = unix {
        config = config.sink("unix", &format!("path = \"{}\"", path.display()));
    }
    config.to_string()
}

/// One connection attempt, no retry: after READY=1 the listener must already be there.
async fn connect_once(port: u16) -> TcpStream {
    timeout(SOON, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("tcp sink on port {port} not listening after READY=1: {e}"))
}

fn monotonic_usec() -> i128 {
    match sd_notify::NotifyState::monotonic_usec_now().expect("CLOCK_MONOTONIC") {
        sd_notify::NotifyState::MonotonicUsec(usec) => usec,
        other => unreachable!("{other:?}"),
    }
}

#[tokio::test]
async fn ready_reloading_ready_stopping_in_order_with_sinks_listening() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, notify_socket) = Manager::bind(dir.path());
    let unix: PathBuf = dir.path().join("feed.sock");
    let first = free_port();
    let mut daemon = Daemon::start_with_env(
        dir,
        &config(&server.url("/"), &[first], Some(&unix)),
        &[("NOTIFY_SOCKET", &notify_socket)],
    )
    .await;

    // READY=1 comes with a one-line STATUS, and by then every sink accepts connections.
    let ready = manager.wait_for("READY=1", &daemon).await;
    let status = ready.value("STATUS").expect("STATUS= with READY=1");
    assert!(status.contains("upstreams"), "status: {status:?}");
    let tcp = connect_once(first).await;
    UnixStream::connect(&unix)
        .await
        .expect("unix sink listening after READY=1");

    // ... and those connections are served: a message from the upstream reaches the client.
    let mut upstream = server.accept().await;
    let mut reader = RecordReader::new(tcp);
    // The client may have connected before the upstream opened: skip the open event.
    upstream.send_text("after ready").await;
    let record = reader.record_where(is_data).await;
    assert_eq!(record["data"], "after ready");

    // SIGHUP with a new sink: RELOADING=1 with MONOTONIC_USEC in the same datagram, the
    // time of the reload; then READY=1, by which the new sink listens.
    let second = free_port();
    daemon.write_config(&config(&server.url("/"), &[first, second], Some(&unix)));
    let before = monotonic_usec();
    daemon.signal(1);
    let reloading = manager.wait_for("RELOADING=1", &daemon).await;
    let after = monotonic_usec();
    let stamp: i128 = reloading
        .value("MONOTONIC_USEC")
        .expect("MONOTONIC_USEC= in the RELOADING=1 datagram")
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        before <= stamp && stamp <= after,
        "MONOTONIC_USEC={stamp} is not CLOCK_MONOTONIC between {before} and {after}"
    );
    let ready_again = manager.wait_for("READY=1", &daemon).await;
    assert!(ready_again.value("STATUS").is_some());
    connect_once(second).await;
    connect_once(first).await;

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal(15);
    manager.wait_for("STOPPING=1", &daemon).await;
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
    manager.collect_for(Duration::from_millis(200)).await;

    assert_eq!(
        manager.states(),
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "{:?}",
        manager.seen
    );
    assert_eq!(
        manager.watchdog_pings(),
        0,
        "no WATCHDOG_USEC, no pings: {:?}",
        manager.seen
    );
}

#[tokio::test]
async fn an_invalid_reload_still_ends_with_ready_and_keeps_running() {
    let server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, notify_socket) = Manager::bind(dir.path());
    let port = free_port();
    let mut daemon = Daemon::start_with_env(
        dir,
        &config(&server.url("/"), &[port], None),
        &[("NOTIFY_SOCKET", &notify_socket)],
    )
    .await;
    manager.wait_for("READY=1", &daemon).await;

    daemon.write_config("[[upstream]]\nname = \"feed\"\nurl = \"not a url\"\n");
    daemon.signal(1);
    manager.wait_for("RELOADING=1", &daemon).await;
    manager.wait_for("READY=1", &daemon).await;
    daemon
        .wait_for_log("the new config is invalid; keeping the running one")
        .await;
    connect_once(port).await;

    daemon.signal(15);
    manager.wait_for("STOPPING=1", &daemon).await;
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
    assert_eq!(
        manager.states(),
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    );
}

/// Starts a daemon with `WATCHDOG_USEC=200000` (and `extra` env) and returns the pings seen
/// in the 2 s after READY=1, then stops it and checks none came after STOPPING=1.
async fn watchdog_pings(extra: &[(&str, &str)]) -> Vec<Datagram> {
    let server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, notify_socket) = Manager::bind(dir.path());
    let mut env = vec![
        ("NOTIFY_SOCKET", notify_socket.as_str()),
        ("WATCHDOG_USEC", "200000"),
    ];
    env.extend_from_slice(extra);
    let mut daemon =
        Daemon::start_with_env(dir, &config(&server.url("/"), &[free_port()], None), &env).await;
    manager.wait_for("READY=1", &daemon).await;
    let pings: Vec<Datagram> = manager
        .collect_for(Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|d| d.has("WATCHDOG=1"))
        .collect();
    for ping in &pings {
        assert_eq!(
            ping.lines,
            ["WATCHDOG=1"],
            "a ping is a datagram of its own"
        );
    }

    daemon.signal(15);
    manager.wait_for("STOPPING=1", &daemon).await;
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
    manager.collect_for(Duration::from_millis(300)).await;
    let stopping = manager
        .seen
        .iter()
        .position(|d| d.has("STOPPING=1"))
        .expect("STOPPING=1 seen");
    assert!(
        !manager.seen[stopping..].iter().any(|d| d.has("WATCHDOG=1")),
        "no pings after STOPPING=1: {:?}",
        manager.seen
    );
    pings
}

/// ~100 ms apart for WATCHDOG_USEC=200000, with room for a loaded machine.
fn assert_half_timeout_pings(pings: &[Datagram]) {
    assert!(
        (5..=40).contains(&pings.len()),
        "expected about 20 pings in 2 s at WATCHDOG_USEC=200000, got {}",
        pings.len()
    );
    let longest = pings
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_secs(1),
        "pings {longest:?} apart; the watchdog (200 ms) would have fired"
    );
}

#[tokio::test]
async fn watchdog_pings_at_half_of_watchdog_usec() {
    // systemd sets WATCHDOG_PID too, but sd_watchdog_enabled(3) does not require it.
    let pings = watchdog_pings(&[]).await;
    assert_half_timeout_pings(&pings);
}

#[tokio::test]
async fn watchdog_meant_for_another_process_is_left_alone() {
    let pings = watchdog_pings(&[("WATCHDOG_PID", "1")]).await;
    assert!(pings.is_empty(), "WATCHDOG_PID=1 is not us: {pings:?}");
}

#[tokio::test]
async fn watchdog_pings_when_watchdog_pid_is_ours() {
    // As systemd starts it: WATCHDOG_PID is the daemon's own pid. A shell knows its pid
    // ($$) and keeps it across exec.
    let server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, notify_socket) = Manager::bind(dir.path());
    let config_path = dir.path().join("wsbridge.toml");
    std::fs::write(&config_path, config(&server.url("/"), &[free_port()], None)).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run -c \"$1\""])
        .arg(bin())
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &notify_socket)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start wsbridge through sh");
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    let ready = timeout(SOON * 2, async {
        loop {
            if let Some(d) = manager.next_within(SOON).await {
                if d.has("READY=1") {
                    return;
                }
            }
        }
    });
    ready
        .await
        .unwrap_or_else(|_| panic!("no READY=1; stderr:\n{}", stderr()));
    let pings: Vec<Datagram> = manager
        .collect_for(Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|d| d.has("WATCHDOG=1"))
        .collect();
    assert_half_timeout_pings(&pings);

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-15", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = timeout(SOON * 2, child.wait())
        .await
        .expect("exit in time")
        .unwrap();
    assert!(status.success(), "{}", stderr());
}

#[tokio::test]
async fn status_is_refreshed_every_five_seconds() {
    let server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, notify_socket) = Manager::bind(dir.path());
    let mut daemon = Daemon::start_with_env(
        dir,
        &config(&server.url("/"), &[free_port()], None),
        &[("NOTIFY_SOCKET", &notify_socket)],
    )
    .await;
    manager.wait_for("READY=1", &daemon).await;
    // The first refresh may come at once (the timer's first tick); the next one 5 s later.
    let mut refreshes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5) + SOON * 2;
    while refreshes.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = manager
            .next_within(left)
            .await
            .unwrap_or_else(|| panic!("STATUS= refreshes: {:?}", manager.seen));
        if d.lines.len() == 1 && d.value("STATUS").is_some() {
            refreshes.push(d);
        }
    }
    let summary = refreshes[1].value("STATUS").unwrap();
    assert!(
        summary.contains("upstreams") && summary.contains("sinks"),
        "{summary:?}"
    );
    let gap = refreshes[1].at - refreshes[0].at;
    assert!(
        gap >= Duration::from_secs(4),
        "refreshes {gap:?} apart, expected 5 s"
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}

#[tokio::test]
async fn an_abstract_notify_socket_is_reached() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "wsbridge-test-notify-{}-{}",
        std::process::id(),
        free_port()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let mut manager = Manager::from(UnixDatagram::from_std(std_socket).unwrap());
    let server = TestServer::start(ServerOptions::default()).await;
    let notify_socket = format!("@{name}");
    let mut daemon = Daemon::start_with_env(
        tempfile::tempdir().unwrap(),
        &config(&server.url("/"), &[free_port()], None),
        &[("NOTIFY_SOCKET", &notify_socket)],
    )
    .await;
    manager.wait_for("READY=1", &daemon).await;
    daemon.signal(15);
    manager.wait_for("STOPPING=1", &daemon).await;
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}

#[tokio::test]
async fn a_notify_socket_nobody_listens_on_breaks_nothing() {
    let server = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-manager-here.sock");
    let missing = missing.to_str().unwrap().to_string();
    let port = free_port();
    let mut daemon = Daemon::start_with_env(
        dir,
        &config(&server.url("/"), &[port], None),
        &[("NOTIFY_SOCKET", &missing)],
    )
    .await;
    daemon.wait_for_log("cannot notify systemd").await;
    connect_tcp(([127, 0, 0, 1], port).into()).await;
    daemon.signal(1);
    daemon.wait_for_log("reloading the config").await;
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}

#[tokio::test]
async fn watchdog_keeps_being_petted_while_a_reload_waits_for_a_slow_close() {
    // A changed upstream is closed before it reconnects; a peer that never answers our Close
    // holds the reload for close_timeout (shutdown_timeout / 2 = 2 s), longer than the
    // watchdog's 1 s. A reload that waits within its deadlines is busy, not hung.
    let mut server = TestServer::start(ServerOptions::default()).await;
    let base = server.url("");
    let port = free_port();
    let config = |path: &str| {
        format!(
            "[daemon]\nshutdown_timeout = \"4s\"\n\n[[upstream]]\nname = \"slow\"\nurl = \"{base}{path}\"\n\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, notify_socket) = Manager::bind(dir.path());
    let mut daemon = Daemon::start_with_env(
        dir,
        &config("/before"),
        &[
            ("NOTIFY_SOCKET", &notify_socket),
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .await;
    manager.wait_for("READY=1", &daemon).await;
    // Hold the connection without reading it: our Close is never answered.
    let _silent = server.accept().await;
    manager.collect_for(Duration::from_millis(1200)).await;

    daemon.write_config(&config("/after"));
    daemon.signal(1);
    manager.wait_for("RELOADING=1", &daemon).await;
    manager.wait_for("READY=1", &daemon).await;
    manager.collect_for(Duration::from_millis(1200)).await;

    let pings: Vec<Instant> = manager
        .seen
        .iter()
        .filter(|d| d.has("WATCHDOG=1"))
        .map(|d| d.at)
        .collect();
    let longest = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_secs(1),
        "no WATCHDOG=1 for {longest:?} around the reload; systemd (WatchdogSec=1s) would have killed the daemon"
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success(), "{}", daemon.stderr());
}
