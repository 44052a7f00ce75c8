//! `before_connect`: a program run before every connection attempt whose JSON output
//! overrides the configured `url`, `headers`, `cookies` and `on_connect` for that attempt,
//! so that short-lived tokens, signed URLs and listen keys are fresh on every reconnect.
//!
//! The program runs without a shell, with stdin closed and `WSBRIDGE_UPSTREAM` set, and
//! must finish within `connect_timeout` (it is killed and reaped otherwise). Its output is a
//! secret: no error message, log line or record ever contains it; only its stderr's last
//! line is reported, as the program's own diagnostic.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::config::{Secret, UpstreamConfig};

/// The most output a program may print: a few tokens, not a download.
const MAX_OUTPUT: u64 = 1 << 20;
/// How much of the program's stderr is kept, from its end.
const STDERR_TAIL: usize = 8 << 10;
/// How long a reported stderr line may be.
const MAX_LINE: usize = 300;

/// Why the program did not give an attempt its settings. Never holds its stdout.
#[derive(Debug, thiserror::Error)]
pub enum BeforeConnectError {
    /// It could not be started.
    #[error("before_connect program {program} could not be started: {error}; check its path and permissions")]
    Spawn {
        /// argv[0].
        program: String,
        /// What the system said.
        error: String,
    },
    /// It ran longer than `connect_timeout` and was killed.
    #[error("before_connect program {program} did not finish within connect_timeout ({limit}) and was killed{stderr}")]
    Timeout {
        /// argv[0].
        program: String,
        /// The limit, formatted.
        limit: String,
        /// `; its stderr: <last line>`, or empty.
        stderr: String,
    },
    /// It exited unsuccessfully.
    #[error("before_connect program {program} failed ({status}){stderr}")]
    Failed {
        /// argv[0].
        program: String,
        /// Its exit status.
        status: String,
        /// `; its stderr: <last line>`, or empty.
        stderr: String,
    },
    /// Its output is not what it must print.
    #[error("before_connect program {program} printed {problem}; it must print one JSON object with any of url (string), headers and cookies (objects of strings), on_connect (list of strings){stderr}")]
    BadOutput {
        /// argv[0].
        program: String,
        /// What is wrong, without quoting the output.
        problem: String,
        /// `; its stderr: <last line>`, or empty.
        stderr: String,
    },
}

/// What the program may print.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    cookies: Option<BTreeMap<String, String>>,
    on_connect: Option<Vec<String>>,
}

/// Runs `argv` and returns `config` with the program's overrides applied: `url` and
/// `on_connect` replace the configured ones; each header and cookie it prints replaces the
/// configured one of that name (headers case-insensitively) and the others are kept.
pub async fn prepare(
    config: &UpstreamConfig,
    argv: &[String],
) -> Result<UpstreamConfig, BeforeConnectError> {
    let program = argv.first().cloned().unwrap_or_default();
    let (stdout, stderr) = run(&program, argv, &config.name, config.connect_timeout).await?;
    let bad = |problem: String| BeforeConnectError::BadOutput {
        program: program.clone(),
        problem,
        stderr: stderr.clone(),
    };
    let output: Output = serde_json::from_slice(&stdout).map_err(|e| {
        use serde_json::error::Category;
        bad(match e.classify() {
            Category::Eof if stdout.iter().all(u8::is_ascii_whitespace) => "nothing".into(),
            Category::Eof => "incomplete JSON".into(),
            Category::Syntax | Category::Io => {
                format!("invalid JSON (line {}, column {})", e.line(), e.column())
            }
            Category::Data => format!(
                "JSON of another shape (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    })?;
    let mut config = config.clone();
    if let Some(url) = output.url {
        match url::Url::parse(&url) {
            Ok(url) if matches!(url.scheme(), "ws" | "wss") && url.host().is_some() => {
                config.url = url
            }
            _ => {
                return Err(bad(
                    "a url that is not a ws:// or wss:// URL with a host".into()
                ))
            }
        }
    }
    for (name, value) in output.headers.unwrap_or_default() {
        if HeaderName::from_bytes(name.as_bytes()).is_err()
            || HeaderValue::from_str(&value).is_err()
        {
            return Err(bad(format!("a header {name:?} that is not valid in HTTP")));
        }
        config
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        config.headers.push((name, Secret::new(value)));
    }
    for (name, value) in output.cookies.unwrap_or_default() {
        if name.is_empty() || name.contains([';', '=', ' ']) || value.contains([';', '\r', '\n']) {
            return Err(bad(format!("a cookie {name:?} that is not valid in HTTP")));
        }
        config.cookies.retain(|(n, _)| *n != name);
        config.cookies.push((name, Secret::new(value)));
    }
    if let Some(on_connect) = output.on_connect {
        config.on_connect = on_connect;
    }
    Ok(config)
}

/// Runs the program to its end within `limit`; its stdout and `; its stderr: <last line>`.
async fn run(
    program: &str,
    argv: &[String],
    upstream: &str,
    limit: Duration,
) -> Result<(Vec<u8>, String), BeforeConnectError> {
    let mut child = Command::new(program)
        .args(argv.iter().skip(1))
        .env("WSBRIDGE_UPSTREAM", upstream)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Cancelled mid-run (shutdown, reload): the program must not outlive the attempt.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BeforeConnectError::Spawn {
            program: program.to_string(),
            error: e.to_string(),
        })?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let out = child.stdout.take();
    let err = child.stderr.take();
    let finished = tokio::time::timeout(limit, async {
        let (out, _) = tokio::join!(read_bounded(out, &mut stdout), read_tail(err, &mut stderr));
        (out, child.wait().await)
    })
    .await;
    let stderr_line = last_line(&stderr);
    match finished {
        Err(_) => {
            // SIGKILL, then wait: the program is reaped here, never left a zombie.
            let _ = child.kill().await;
            Err(BeforeConnectError::Timeout {
                program: program.to_string(),
                limit: crate::duration::human(limit).to_string(),
                stderr: stderr_line,
            })
        }
        Ok((_, Err(e))) => Err(BeforeConnectError::Spawn {
            program: program.to_string(),
            error: e.to_string(),
        }),
        Ok((_, Ok(status))) if !status.success() => Err(BeforeConnectError::Failed {
            program: program.to_string(),
            status: status.to_string(),
            stderr: stderr_line,
        }),
        Ok((too_long, Ok(_))) if too_long => Err(BeforeConnectError::BadOutput {
            program: program.to_string(),
            problem: "more than 1 MiB".into(),
            stderr: stderr_line,
        }),
        Ok(_) => Ok((stdout, stderr_line)),
    }
}

/// Reads `from` to its end into `into`, at most [`MAX_OUTPUT`] bytes; true if there was more.
async fn read_bounded(from: Option<impl AsyncRead + Unpin>, into: &mut Vec<u8>) -> bool {
    let Some(from) = from else { return false };
    let mut limited = from.take(MAX_OUTPUT + 1);
    let _ = limited.read_to_end(into).await;
    into.len() as u64 > MAX_OUTPUT
}

/// Reads `from` to its end, keeping its last [`STDERR_TAIL`] bytes in `into` (which the
/// caller still holds when the read is cut short by the time limit).
async fn read_tail(from: Option<impl AsyncRead + Unpin>, into: &mut Vec<u8>) {
    let Some(mut from) = from else { return };
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut chunk).await {
        into.extend_from_slice(&chunk[..n]);
        if into.len() > STDERR_TAIL {
            into.drain(..into.len() - STDERR_TAIL);
        }
    }
}

/// `; its stderr: <the last non-empty line>`, or empty.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    match text.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(line) => format!(
            "; its stderr: {}",
            line.chars().take(MAX_LINE).collect::<String>()
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> UpstreamConfig {
        let mut c = UpstreamConfig::new("feed", url::Url::parse("ws://h/ws").unwrap());
        c.headers.push(("X-Keep".into(), Secret::new("k")));
        c.headers.push(("Authorization".into(), Secret::new("old")));
        c.cookies.push(("session".into(), Secret::new("old")));
        c.on_connect = vec!["old".into()];
        c.connect_timeout = Duration::from_secs(5);
        c
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn output_overrides_the_attempt() {
        let out = r#"{"url":"wss://x.example/ws?key=1","headers":{"authorization":"Bearer new"},"cookies":{"session":"new"},"on_connect":["{\"op\":\"auth\"}"]}"#;
        let c = prepare(&config(), &sh(&format!("echo '{out}'")))
            .await
            .unwrap();
        assert_eq!(c.url.as_str(), "wss://x.example/ws?key=1");
        let headers: Vec<_> = c
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("X-Keep", "k"), ("authorization", "Bearer new")]);
        assert_eq!(c.cookies[0].1.expose(), "new");
        assert_eq!(c.on_connect, [r#"{"op":"auth"}"#]);
    }

    #[tokio::test]
    async fn failures_name_the_program_and_its_stderr_but_never_its_output() {
        let e = prepare(
            &config(),
            &sh("echo SECRET-TOKEN; echo first >&2; echo 'no ticket' >&2; exit 3"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/bin/sh failed") && e.contains("its stderr: no ticket"),
            "{e}"
        );
        assert!(!e.contains("SECRET"), "{e}");
        for (script, problem) in [
            ("echo '{\"url\": \"SECRET\"'", "incomplete JSON"),
            ("echo 'SECRET'", "invalid JSON"),
            ("echo '{\"token\": \"SECRET\"}'", "JSON of another shape"),
            (
                "echo '{\"url\": \"http://SECRET/\"}'",
                "not a ws:// or wss:// URL",
            ),
            ("true", "printed nothing"),
        ] {
            let e = prepare(&config(), &sh(script))
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(problem), "{script}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
        let e = prepare(&config(), &["/nonexistent/prog".to_string()])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/prog could not be started"), "{e}");
    }

    #[tokio::test]
    async fn a_program_over_time_is_killed_and_reaped() {
        let mut c = config();
        c.connect_timeout = Duration::from_millis(300);
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo $$ > {}; echo waiting >&2; exec sleep 30",
            pid_file.display()
        );
        let e = prepare(&c, &sh(&script)).await.unwrap_err().to_string();
        assert!(
            e.contains("within connect_timeout (300ms) and was killed"),
            "{e}"
        );
        assert!(e.contains("its stderr: waiting"), "{e}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        // Reaped: no process (not even a zombie) is left with that id.
        assert!(!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists());
    }
}
