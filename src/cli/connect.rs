//! `wsbridge connect`: its options (websocat's, where it has them) and how it runs.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::*;

#[derive(Debug, Args)]
pub(super) struct ConnectArgs {
    /// The ws:// or wss:// URL.
    #[arg(value_parser = parse_ws_url)]
    url: url::Url,
    /// Extra handshake header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Cookie name=value, sent in one Cookie header (repeatable).
    #[arg(long = "cookie", value_name = "NAME=VALUE")]
    cookies: Vec<String>,
    /// Offer this subprotocol (repeatable, in order of preference).
    #[arg(long = "protocol", value_name = "PROTOCOL")]
    protocols: Vec<String>,
    /// The Origin header.
    #[arg(long)]
    origin: Option<String>,
    /// Send a Ping after this long without any frame; 0s turns autoping off.
    #[arg(long, default_value = "20s", value_parser = wsbridge::config::parse_duration)]
    ping_interval: Duration,
    /// After our Ping, no frame for this long means the connection is dead.
    #[arg(long, default_value = "10s", value_parser = wsbridge::config::parse_duration)]
    ping_timeout: Duration,
    /// TCP + TLS + WebSocket handshake must finish within this.
    #[arg(long, default_value = "10s", value_parser = wsbridge::config::parse_duration)]
    connect_timeout: Duration,
    /// Largest message accepted (and stdin line sent), like 64KiB or 16MiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_size_arg)]
    max_message_size: usize,
    /// Keep reconnecting with backoff instead of exiting when the connection ends.
    #[arg(long)]
    reconnect: bool,
    /// A text message sent after every (re)connect, before stdin (repeatable).
    #[arg(long = "on-connect", value_name = "MESSAGE")]
    on_connect: Vec<String>,
    /// Text messages, one a stdin or stdout line: the default (websocat's -t, accepted so
    /// its command lines work).
    #[arg(short = 't', long, conflicts_with = "binary")]
    text: bool,
    /// Send stdin as binary messages (one per read chunk); write binary messages to stdout
    /// as raw bytes, without newlines.
    #[arg(short = 'b', long)]
    binary: bool,
    /// Write NDJSON records (with seq, ts, open/close/error events) instead of payload lines;
    /// read stdin lines as inbound records ({"type":"text"|"binary"|"json","data":…}).
    #[arg(long)]
    ndjson: bool,
    /// Exit after this many messages were received.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// An extra root certificate (PEM) for wss://; a certificate in it that is exactly the
    /// server's own (a self-signed one, even marked CA:TRUE) is trusted as it is.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[command(flatten)]
    shaping: shaping::ShapingArgs,
    #[command(flatten)]
    transport: transport::TransportArgs,
    /// Ignore stdin; stay connected until the peer closes (for cron, systemd, `< /dev/null`).
    #[arg(short = 'U', long, conflicts_with = "send_only")]
    recv_only: bool,
    /// Send stdin; print nothing.
    #[arg(short = 'u', long)]
    send_only: bool,
    /// Send no Close at stdin EOF: keep reading (and printing) until the peer closes, as -U
    /// does after EOF.
    #[arg(short = 'n', long)]
    no_close: bool,
    /// Send "Authorization: Basic" with these credentials (never logged).
    #[arg(long, value_name = "USER:PASS")]
    basic_auth: Option<String>,
    /// After stdin EOF, keep reading until the peer is done, then send Close (1000): it
    /// answered a Ping sent behind our last line and then went quiet (a few round trips, at
    /// least 50ms), or it sent nothing for this long (the longest quiet wait). Servers such as
    /// Python `websockets` answer a Close at once and drop the replies they had not sent, so
    /// closing right at EOF loses them; a peer that never goes quiet (a live feed) keeps
    /// connect running until it closes or Ctrl-C. 0s: close at EOF.
    #[arg(long, default_value = "1s", value_parser = wsbridge::config::parse_duration)]
    linger: Duration,
    /// How long to wait for the peer's Close after ours. After Ctrl-C or SIGTERM, a reader of
    /// stdout that stopped reading is waited for at most twice this long.
    #[arg(long, default_value = "5s", value_parser = wsbridge::config::parse_duration)]
    shutdown_timeout: Duration,
    /// Only errors on stderr.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// More log on stderr (-v connection events, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn parse_ws_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "ws" | "wss" if url.host().is_some() => Ok(url),
        _ => Err("use a ws:// or wss:// URL with a host".into()),
    }
}

fn parse_size_arg(s: &str) -> Result<usize, String> {
    parse_size::parse_size(s)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size; write it like 64KiB or 16MiB"))
}

impl ConnectArgs {
    /// Turns the flags into the upstream settings the daemon would use.
    fn resolve(self) -> Result<wsbridge::connect::ConnectOptions, String> {
        use wsbridge::config::{Secret, UpstreamConfig};
        let mut upstream = UpstreamConfig::new("connect", self.url);
        for header in &self.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("header {header:?} must be written \"Name: value\""))?;
            upstream
                .headers
                .push((name.trim().to_string(), Secret::new(value.trim())));
        }
        for cookie in &self.cookies {
            let (name, value) = cookie
                .split_once('=')
                .ok_or_else(|| format!("cookie {cookie:?} must be written name=value"))?;
            upstream
                .cookies
                .push((name.trim().to_string(), Secret::new(value)));
        }
        if let Some(credentials) = &self.basic_auth {
            upstream
                .headers
                .push(basic_auth(credentials, &upstream.headers)?);
        }
        upstream.subprotocols = self.protocols;
        upstream.origin = self.origin;
        upstream.on_connect = self.on_connect;
        upstream.ping_interval = Some(self.ping_interval).filter(|d| !d.is_zero());
        upstream.ping_timeout = self.ping_timeout;
        upstream.connect_timeout = self.connect_timeout;
        upstream.max_message_size = self.max_message_size;
        if let Some(ca) = &self.ca_file {
            wsbridge::upstream::tls::read_ca_file(ca).map_err(|e| e.to_string())?;
        }
        upstream.ca_file = self.ca_file;
        self.shaping.apply(&mut upstream)?;
        self.transport.apply(&mut upstream)?;
        // Catch a bad header name or value now, as a usage error, not at connect time.
        wsbridge::upstream::connect::request(&upstream).map_err(|e| e.to_string())?;
        Ok(wsbridge::connect::ConnectOptions {
            upstream,
            reconnect: self.reconnect,
            binary: self.binary,
            ndjson: self.ndjson,
            max_messages: self.max_messages,
            recv_only: self.recv_only,
            send_only: self.send_only,
            close_at_eof: !self.no_close,
            close_timeout: self.shutdown_timeout,
            linger: self.linger,
        })
    }
}

/// `--basic-auth USER:PASS` as the header it sends; refused beside an Authorization header
/// of `-H`, which would send two.
fn basic_auth(
    credentials: &str,
    headers: &[(String, wsbridge::config::Secret)],
) -> Result<(String, wsbridge::config::Secret), String> {
    use base64::Engine as _;
    if !credentials.contains(':') {
        return Err("--basic-auth takes USER:PASS (a colon between them)".into());
    }
    if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        return Err(
            "--basic-auth and an Authorization header (-H) both set Authorization; give one".into(),
        );
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    Ok((
        "Authorization".into(),
        wsbridge::config::Secret::new(format!("Basic {encoded}")),
    ))
}

pub(super) fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    init_logging(level, LogFormat::Text);
    let options = match args.resolve() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("wsbridge: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    // One connection: a single-threaded runtime avoids cross-thread wakeups per batch.
    let runtime = current_thread_runtime()?;
    let code = runtime.block_on(async move {
        let interrupt = tokio_util::sync::CancellationToken::new();
        let mut controls = signals()?;
        let on_signal = interrupt.clone();
        tokio::spawn(async move {
            // Ctrl-C or SIGTERM closes the connection (1000) and exits; SIGHUP is ignored.
            while let Some(control) = controls.recv().await {
                if control == Control::Shutdown {
                    on_signal.cancel();
                }
            }
        });
        anyhow::Ok(match wsbridge::connect::run(options, interrupt).await {
            wsbridge::connect::Outcome::Clean => ExitCode::SUCCESS,
            wsbridge::connect::Outcome::Failed(reason) => {
                eprintln!("wsbridge: {reason}");
                ExitCode::from(1)
            }
        })
    })?;
    // A read of stdin may still be blocked in the runtime's thread pool: do not wait for it.
    runtime.shutdown_background();
    Ok(code)
}
