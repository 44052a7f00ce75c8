//! The `postgres` sink against a real PostgreSQL server the test starts (as `nobody` when
//! the tests run as root: the server refuses to run as root): every record a row exactly
//! once, also across a `kill -9` of the whole server mid-feed and its restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::brokers::*;
use crate::common::*;

/// How long a feed may take to reach the table in a debug build.
const FEED_TIME: Duration = Duration::from_secs(120);

/// How long the server may take to start (or recover after a kill).
const START_TIME: Duration = Duration::from_secs(60);

/// A PostgreSQL server in a temp dir on a free port on 127.0.0.1, trust auth, user
/// `postgres`; its whole process group killed (SIGKILL) when dropped.
struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// The directory of the Debian package's `initdb` and `postgres`.
fn pg_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").unwrap_or_else(|_| {
        panic!("postgresql is not installed: apt-get install -y postgresql (tests/run.sh does)")
    });
    let mut bins: Vec<PathBuf> = versions
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    bins.sort();
    bins.pop()
        .expect("no /usr/lib/postgresql/*/bin/postgres: apt-get install -y postgresql")
}

fn is_root() -> bool {
    id("-u") == "0"
}

fn id(flag: &str) -> String {
    let out = std::process::Command::new("id").arg(flag).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `program` as a command run as `nobody` when we are root (postgres refuses root).
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let uid = std::process::Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap();
        let gid = std::process::Command::new("id")
            .args(["-g", "nobody"])
            .output()
            .unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!(
            "--reuid={}",
            String::from_utf8_lossy(&uid.stdout).trim()
        ))
        .arg(format!(
            "--regid={}",
            String::from_utf8_lossy(&gid.stdout).trim()
        ))
        .arg("--clear-groups")
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl PgServer {
    async fn start() -> PgServer {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let nobody = |flag| -> u32 {
                let out = std::process::Command::new("id")
                    .args([flag, "nobody"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            std::os::unix::fs::chown(dir.path(), Some(nobody("-u")), Some(nobody("-g"))).unwrap();
        }
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .current_dir(dir.path())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().await {
                return server;
            }
        }
        panic!(
            "postgres did not start on any of 5 free ports: {}",
            server.log()
        );
    }

    /// Starts the server on its port; false if it exited (the port was taken).
    async fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = as_server_user(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("run postgres");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIME;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if let Ok(client) = self.client().await {
                if client.simple_query("SELECT 1").await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "postgres did not start within {START_TIME:?}: {}",
            self.log()
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn client(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// `kill -9` of the postmaster and every backend (a crash), and waits until they are gone.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
            let _ = child.wait().await;
        }
        // The backends of the group exit with it; wait for the port to be free.
        let deadline = Instant::now() + START_TIME;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            assert!(
                Instant::now() < deadline,
                "postgres still listens after kill -9"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts it again on the same port with the same data (crash recovery).
    async fn restart(&mut self) {
        self.kill().await;
        let deadline = Instant::now() + START_TIME;
        while !self.spawn().await {
            assert!(
                Instant::now() < deadline,
                "postgres did not restart: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// [`feed`], paced (a pause of 10 ms every 200 messages) so that a kill lands mid-feed.
async fn paced_feed(server: &mut TestServer, count: u64) -> tokio::task::JoinHandle<()> {
    let conn = server.accept().await;
    tokio::spawn(async move {
        let (mut tx, mut rx) = conn.ws.split();
        tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        for n in 1..=count {
            let text = format!("{{\"n\":{n},\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}}");
            if tx.feed(Message::text(text)).await.is_err() {
                return;
            }
            if n % 200 == 0 {
                if tx.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let _ = tx.flush().await;
        std::future::pending::<()>().await;
    })
}

async fn start(server: &PgServer, events: bool) -> (TestServer, Daemon, std::net::SocketAddr) {
    let ws = TestServer::start(ServerOptions::default()).await;
    let (head, metrics) = daemon_head(&ws.url("/"));
    let sink = format!(
        "url = \"{}\"\ntable = \"wsbridge\"\nevents = {events}\non_slow = \"block\"",
        server.url()
    );
    let daemon = Daemon::start(&head.sink("postgres", &sink).to_string()).await;
    (ws, daemon, metrics)
}

/// Rows, distinct (upstream, run, seq), the seqs 1..=n all present, and the fed numbers in
/// `data` matching their seq.
async fn assert_once(server: &PgServer, n: i64) {
    let client = server.client().await.expect("connect to postgres");
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (upstream, run, seq)), count(DISTINCT run), \
             min(seq), max(seq), count(*) FILTER (WHERE (data->>'n')::bigint = seq AND type = 'text' AND upstream = 'feed') \
             FROM wsbridge",
            &[],
        )
        .await
        .unwrap();
    let (rows, distinct, runs, min, max, matching): (i64, i64, i64, i64, i64, i64) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    assert_eq!(rows, n, "rows");
    assert_eq!(distinct, n, "distinct (upstream, run, seq)");
    assert_eq!(runs, 1, "one run");
    assert_eq!((min, max), (1, n), "seqs 1..={n}");
    assert_eq!(matching, n, "data is the message's JSON, fed number = seq");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql: tests/run.sh installs it"]
async fn postgres_table_holds_every_record_once() {
    const N: u64 = 10_000;
    let server = PgServer::start().await;
    let (mut ws, _daemon, metrics) = start(&server, true).await;
    let _feed = feed(&mut ws, N).await;
    // N messages and the open event.
    let status = wait_status(metrics, FEED_TIME, "acknowledgement of every record", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged == N + 1)
    })
    .await;
    assert_eq!(status.records_dropped, 0);
    // The open event: a row with seq null and the whole record as data.
    let client = server.client().await.expect("connect to postgres");
    let open = client
        .query_one(
            "SELECT count(*), min(data->>'upstream') FROM wsbridge WHERE seq IS NULL AND type = 'open'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(open.get::<_, i64>(0), 1);
    assert_eq!(open.get::<_, Option<String>>(1).as_deref(), Some("feed"));
    client
        .batch_execute("DELETE FROM wsbridge WHERE seq IS NULL")
        .await
        .unwrap();
    assert_once(&server, N as i64).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql: tests/run.sh installs it"]
async fn postgres_kill_9_and_restart_loses_and_repeats_nothing() {
    const N: u64 = 10_000;
    let mut server = PgServer::start().await;
    let (mut ws, daemon, metrics) = start(&server, false).await;
    let _feed = paced_feed(&mut ws, N).await;
    wait_status(metrics, FEED_TIME, "progress", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged >= N / 4)
    })
    .await;
    server.kill().await;
    let at_kill = wait_status(metrics, SOON, "the sink noticing", |s| {
        s.broker.as_ref().is_some_and(|b| !b.connected)
    })
    .await;
    let acknowledged = at_kill.broker.as_ref().map_or(0, |b| b.acknowledged);
    assert!(acknowledged < N, "the feed was over before the kill");
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    let status = wait_status(metrics, FEED_TIME, "acknowledgement of every record", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged == N)
    })
    .await;
    assert_eq!(status.records_dropped, 0);
    eprintln!(
        "acknowledged {acknowledged} of {N} at the kill; broker {:?}",
        status.broker
    );
    let status = wait_status(metrics, SOON, "routed == written + dropped", |s| {
        s.records_routed == s.records_written + s.records_dropped
    })
    .await;
    assert_eq!(status.records_routed, N);
    assert_once(&server, N as i64).await;
    let stderr = daemon.stderr();
    assert!(stderr.contains("postgres://"), "{stderr}");
    assert!(!stderr.contains("password"), "{stderr}");
}
