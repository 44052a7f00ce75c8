//! `wsbridge check` on files a user might write: every error at once with its line and key,
//! values that must be refused by `check` rather than panic or fail at `run`, URL secrets
//! kept out of what is printed, and what a reload says about restarts.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs `wsbridge check` on `text` written to `dir/wsbridge.toml`; returns the exit code,
/// stdout and stderr.
fn check_in(dir: &Path, text: &str) -> (Option<i32>, String, String) {
    let path = dir.join("wsbridge.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check` must refuse `text`; returns its error lines with the file name taken off.
fn refused(dir: &Path, text: &str) -> Vec<String> {
    let (code, _, stderr) = check_in(dir, text);
    assert_eq!(code, Some(1), "check accepted it:\n{text}\n{stderr}");
    let prefix = format!("{}:", dir.join("wsbridge.toml").display());
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn assert_has(errors: &[String], needle: &str) {
    assert!(
        errors.iter().any(|e| e.starts_with(needle)),
        "no error starting {needle:?} in:\n{}",
        errors.join("\n")
    );
}

const UPSTREAM: &str = "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n";

#[test]
fn check_reports_every_tables_errors_in_file_order_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let errors = refused(
        dir.path(),
        "[defaults]\nreconnect = { max_attempts = \"many\" }\n\n\
         [[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\nping_intervall = \"1s\"\n\n\
         [[sink]]\ntype = \"stdoot\"\n\n\
         [[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:7001\"\nbufer = 1\n",
    );
    let located: Vec<_> = errors
        .iter()
        .map(|e| e.split(": ").take(2).collect::<Vec<_>>().join(": "))
        .collect();
    assert_eq!(
        located,
        [
            "2:30: defaults.reconnect.max_attempts",
            "7:1: upstream[0].ping_intervall",
            "10:8: sink[0].type",
            "15:1: sink[1].bufer",
        ],
        "{errors:#?}"
    );
    assert!(errors[0].ends_with("expected a whole number"), "{errors:?}");
}

#[test]
fn check_refuses_queue_sizes_that_would_panic_at_run() {
    let dir = tempfile::tempdir().unwrap();
    let errors = refused(
        dir.path(),
        &format!(
            "{UPSTREAM}send_queue = 2305843009213693952\n\
             [[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:7001\"\nbuffer = 2305843009213693952\n\
             max_clients = 2305843009213693952\nbuffer_bytes = \"1TiB\"\n"
        ),
    );
    assert_has(
        &errors,
        "4:14: upstream[0].send_queue: must be a whole number from 1 to",
    );
    assert_has(
        &errors,
        "8:10: sink[0].buffer: must be a whole number from 1 to",
    );
    assert_has(
        &errors,
        "9:15: sink[0].max_clients: must be a whole number from 1 to",
    );
    assert_has(
        &errors,
        "10:16: sink[0].buffer_bytes: must be from 1 byte to 1 GiB",
    );
}

#[test]
fn check_refuses_a_unix_path_longer_than_sun_path() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("/tmp/{}.sock", "x".repeat(100));
    let errors = refused(
        dir.path(),
        &format!("{UPSTREAM}[[sink]]\ntype = \"unix\"\npath = \"{long}\"\n"),
    );
    assert_has(
        &errors,
        "6:8: sink[0].path: is 110 bytes long; a unix socket path holds at most 107",
    );
    // 107 bytes is accepted.
    let fits = format!("/tmp/{}.sock", "x".repeat(97));
    let (code, _, stderr) = check_in(
        dir.path(),
        &format!("{UPSTREAM}[[sink]]\ntype = \"unix\"\npath = \"{fits}\"\n"),
    );
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn check_refuses_two_sinks_on_one_socket_file_however_it_is_spelt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
    let errors = refused(
        dir.path(),
        &format!(
            "{UPSTREAM}[[sink]]\ntype = \"unix\"\npath = \"{d}/d.sock\"\n\
             [[sink]]\ntype = \"unix\"\npath = \"{d}/./d.sock\"\n\
             [[sink]]\ntype = \"unix\"\npath = \"{d}/gone/../d.sock\"\n\
             [[sink]]\ntype = \"unix\"\npath = \"{d}/link/d.sock\"\n"
        ),
    );
    for (line, sink) in [(9, 1), (12, 2), (15, 3)] {
        assert_has(
            &errors,
            &format!("{line}:8: sink[{sink}]: socket path {d}/"),
        );
    }
    assert!(
        errors.iter().all(|e| !e.contains("sink[0]:")),
        "the first sink keeps its path: {errors:?}"
    );
    assert!(
        errors[0].contains(&format!(
            "is already used by sink[0] (the same file as its socket path {d}/d.sock)"
        )),
        "{errors:?}"
    );
}

#[test]
fn check_refuses_ca_file_on_a_plain_ws_url() {
    let dir = tempfile::tempdir().unwrap();
    let errors = refused(
        dir.path(),
        &format!("{UPSTREAM}ca_file = \"/etc/ssl/certs/ca-certificates.crt\"\n"),
    );
    assert_has(
        &errors,
        "4:11: upstream[0].ca_file: only a wss:// URL uses TLS",
    );
}

#[tokio::test]
async fn query_values_never_reach_check_records_or_logs() {
    let secret = "qs-7b1e9d";
    let mut server = TestServer::start(ServerOptions::default()).await;
    let config = format!(
        "[[upstream]]\nname = \"q\"\nurl = \"ws://operator:pw-1a2b@{}/feed?token={secret}&x=1\"\n\
         reconnect = {{ initial = \"50ms\", max = \"100ms\" }}\n\n[[sink]]\ntype = \"stdout\"\n",
        server.addr
    );
    let shown = format!("ws://operator:***@{}/feed?token=***&x=***", server.addr);

    let dir = tempfile::tempdir().unwrap();
    let (code, plan, stderr) = check_in(dir.path(), &config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(plan.contains(&format!("url            {shown}")), "{plan}");

    let mut daemon = Daemon::start(&config).await;
    let conn = server.accept().await;
    let open = daemon.record_where("open", |r| r["type"] == "open").await;
    assert_eq!(open["url"], shown.as_str(), "{open}");
    // A lost connection is logged with its URL.
    drop(conn);
    daemon.wait_for_log("lost").await;
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    daemon.signal(15);
    daemon.wait().await;
    let everything = format!("{plan}\n{open}\n{error}\n{}", daemon.stderr());
    assert!(everything.contains(&shown), "{everything}");
    for leaked in [secret, "pw-1a2b", "x=1"] {
        assert!(
            !everything.contains(leaked),
            "{leaked} leaked:\n{everything}"
        );
    }
}

#[tokio::test]
async fn a_reload_warns_about_a_restart_only_for_what_it_cannot_apply() {
    let config = |timeout: &str, level: &str| {
        format!(
            "[daemon]\nlog_level = \"{level}\"\nshutdown_timeout = \"{timeout}\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n{UPSTREAM}[[sink]]\ntype = \"stdout\"\n"
        )
    };
    let mut daemon = Daemon::start(&config("5s", "info")).await;
    daemon.wait_for_log("started").await;
    // The same [daemon] logging and [metrics]; shutdown_timeout applies at once.
    daemon.write_config(&config("3s", "info"));
    daemon.signal(1);
    daemon.wait_for_log("upstreams open").await;
    assert!(
        !daemon.stderr().contains("next restart"),
        "{}",
        daemon.stderr()
    );
    // A log level does need a restart, and says so.
    daemon.write_config(&config("3s", "debug"));
    daemon.signal(1);
    daemon
        .wait_for_log("log_level and log_format changes take effect at the next restart")
        .await;
    daemon.signal(15);
    daemon.wait().await;
}

#[test]
fn check_prints_the_log_settings_as_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (code, plan, stderr) = check_in(
        dir.path(),
        &format!("{UPSTREAM}[daemon]\nlog_format = \"json\"\n"),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(plan.contains("  log            info, json\n"), "{plan}");
}

/// The README's first command after installing: the shipped example config passes `check` as
/// it is, with none of its variables exported, and `check` prints no secret either way.
#[test]
fn the_shipped_example_config_passes_check_without_its_variables() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wsbridge.toml");
    let run = |token: Option<&str>| {
        let mut command = Command::new(bin());
        command.args(["check", "-c"]).arg(&config);
        match token {
            Some(token) => command.env("TRADES_TOKEN", token),
            None => command.env_remove("TRADES_TOKEN"),
        };
        let out = command.output().unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), printed)
    };
    let (code, printed) = run(None);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("valid"), "{printed}");
    let secret = "s3cret-token-value";
    let (code, printed) = run(Some(secret));
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        !printed.contains(secret),
        "check printed the token:\n{printed}"
    );
}

/// `sequence`, `on_gap` and `event_time` (issue 27): `check` reports a program that does not
/// compile, a word that is not a choice and a value of the wrong type at its line, column
/// and key, in `[defaults]` and in an upstream alike; a good one is shown as it will run.
#[test]
fn check_reports_feed_check_mistakes_at_their_place_and_shows_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let errors = refused(
        dir.path(),
        &format!(
            "[defaults]\non_gap = \"bogus\"\nevent_time = true\n\n\
             {UPSTREAM}sequence = '.u |'\non_gap = 2\nevent_time = '.E | todate('\n\
             [[sink]]\ntype = \"stdout\"\n"
        ),
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert_has(
        &errors,
        "2:10: defaults.on_gap: unknown variant `bogus`, expected `record` or `reconnect`",
    );
    assert_has(
        &errors,
        "3:14: defaults.event_time: invalid type: boolean `true`, expected a string",
    );
    assert_has(
        &errors,
        "8:17: upstream[0].sequence: the jq program does not compile: expected term",
    );
    assert_has(
        &errors,
        "9:10: upstream[0].on_gap: invalid type: integer, expected `record` or `reconnect`",
    );
    assert_has(
        &errors,
        "10:27: upstream[0].event_time: the jq program does not compile: expected closing parenthesis",
    );

    let (code, stdout, stderr) = check_in(
        dir.path(),
        &format!(
            "[defaults]\nevent_time = '.E'\n\n{UPSTREAM}sequence = '.u'\non_gap = \"reconnect\"\n\
             [[sink]]\ntype = \"stdout\"\n"
        ),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("  sequence       .u (checked per connection; on_gap = \"reconnect\")"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  event_time     .E (lag_ms on each data record)"),
        "{stdout}"
    );
}
