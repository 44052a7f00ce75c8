//! The command line: subcommands, their options, and what each one runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use wsbridge::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use wsbridge::supervisor::{Control, Supervisor};

mod demo;
mod process;
mod replay;
mod shaping;
mod top;
mod transport;

use process::{current_thread_runtime, init_logging, runtime, signals};

/// Bridge WebSocket connections to stdout, Unix sockets and local TCP listeners as NDJSON.
#[derive(Debug, Parser)]
#[command(name = "wsbridge", version, propagate_version = true)]
#[command(
    after_help = "Config path: -c/--config, else $WSBRIDGE_CONFIG, else /etc/wsbridge/wsbridge.toml.\n\
Exit codes: 0 success, clean close or broken stdout pipe; 1 runtime failure or invalid config (check); 2 usage error or invalid config (run)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: bridge every upstream to every sink until SIGTERM/SIGINT; SIGHUP reloads.
    Run(ConfigArg),
    /// Validate a config and print what it would run (exit 0 valid, 1 invalid).
    Check(ConfigArg),
    /// Ask the running daemon (the config's [metrics] address) for one row per upstream and sink.
    Status(ConfigArg),
    /// A live view of the running daemon (the config's [metrics] address): upstreams and
    /// sinks, refreshed every second; q quits. Plain rows when stdout is not a terminal.
    Top(ConfigArg),
    /// Pipe: stdin lines become messages, messages become stdout lines (like websocat).
    #[command(after_help = CONNECT_EXAMPLES)]
    Connect(Box<ConnectArgs>),
    /// Start an embedded WebSocket server with sample ticks and bridge it to stdout.
    #[command(
        after_help = "Example:\n  wsbridge demo | jq -c 'select(.type==\"text\") | .data | fromjson'"
    )]
    Demo(demo::DemoArgs),
    /// Serve recorded NDJSON files as a WebSocket server, one path per upstream.
    #[command(after_help = replay::EXAMPLES)]
    Replay(replay::ReplayArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, env = "WSBRIDGE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

// Each comment has a line of its own, and no line is wider than 80 columns: clap wraps
// long lines, and a comment wrapped onto the next line would read as a command.
const CONNECT_EXAMPLES: &str = "Examples:
  # receive only, one compact JSON value per line
  wsbridge connect wss://stream.example.com/ws -U | jq -c .

  # send one line, print the replies until the peer closes
  echo '{\"op\":\"subscribe\"}' | wsbridge connect ws://127.0.0.1:8765/

  # subscribe after every (re)connect, append the feed to a file
  wsbridge connect ws://h/ --on-connect '{\"op\":\"sub\"}' --reconnect -U >>feed.log

  # NDJSON records with seq, ts and open/close/error events
  wsbridge connect ws://h/ws --ndjson -U | jq 'select(.type==\"text\") | .seq'

  # a binary round trip, byte for byte
  wsbridge connect ws://h/bin --binary < frame.bin > reply.bin

  # a fresh token from a program before every (re)connect
  wsbridge connect wss://h/ws --before-connect 'get-ticket trades' --reconnect

  # gzip-compressed binary messages printed as text
  wsbridge connect wss://h/ws --decompress auto -U

  # the JSON keepalive some servers want; their answers are not printed
  wsbridge connect wss://h/ws --app-ping '{\"op\":\"ping\"}' --app-ping-expect pong

  # answer the server's own {\"ping\":N} with {\"pong\":N}; pings not printed
  wsbridge connect wss://h/ws --reply 'select(.ping?) | {pong: .ping}' -U

  # through a corporate proxy (the password from the environment)
  wsbridge connect wss://h/ws --proxy \"http://me:$PASS@proxy:3128\" -U

  # mutual TLS: present a client certificate
  wsbridge connect wss://h/ws --cert me.pem --key me.key -U

  # the URL holds an address, the certificate the name feed.internal
  wsbridge connect wss://10.0.0.5/ws --server-name feed.internal -U

At stdin EOF, replies are read until the peer is done: it answered a Ping
sent behind the last line and then went quiet, or it sent nothing for
--linger (1s); then Close (1000) goes out and connect exits 0 after the
peer's Close.
A peer Close with 1000/1001 exits 0, any other code exits 1; connection
failures exit 1 with a one-line reason.";

#[derive(Debug, Args)]
struct ConnectArgs {
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

impl Cli {
    /// Runs the chosen command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Check(args) => Ok(check(&args.config)),
            Command::Run(args) => run(&args.config),
            Command::Demo(args) => demo::run(args),
            Command::Connect(args) => connect(*args),
            Command::Status(args) => status(&args.config),
            Command::Top(args) => match metrics_addr(&args.config)? {
                Ok(addr) => top::run(addr),
                Err(code) => Ok(code),
            },
            Command::Replay(args) => replay::run(args),
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path, &wsbridge::sink::registry::SINKS) {
        Ok(config) => {
            println!("{}: valid", path.display());
            print!("{}", wsbridge::config::plan::Plan(&config));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "wsbridge: {}: {} error(s); fix them and run `wsbridge check` again",
                path.display(),
                errors.0.len()
            );
            ExitCode::from(1)
        }
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path, &wsbridge::sink::registry::SINKS) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("wsbridge: refusing to run with an invalid config; `wsbridge check -c {}` lists the problems", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&config.daemon.log_level, config.daemon.log_format);
    // Before the runtime's threads exist: it takes LISTEN_FDS and friends out of the environment.
    wsbridge::sink::activation::take_from_env();
    let runtime = runtime()?;
    let path = path.to_path_buf();
    runtime.block_on(async move {
        let controls = signals()?;
        let supervisor = Supervisor::start(config).await?;
        supervisor
            .run(controls, || {
                Config::load(&path, &wsbridge::sink::registry::SINKS)
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn status(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let addr = match metrics_addr(path)? {
        Ok(addr) => addr,
        Err(code) => return Ok(code),
    };
    let status = runtime()?.block_on(wsbridge::status_client::fetch_status(addr))?;
    print!("{}", wsbridge::status_client::render_table(&status));
    Ok(ExitCode::SUCCESS)
}

/// The `[metrics]` address of the daemon running `path`, or the exit code after saying why
/// there is none.
fn metrics_addr(path: &std::path::Path) -> anyhow::Result<Result<std::net::SocketAddr, ExitCode>> {
    // Only [metrics] matters here: an operator need not hold the daemon's secrets, so unset
    // ${VAR}s expand to nothing instead of failing.
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => anyhow::bail!(
            "cannot read {}: {e}; pass the daemon's config with -c",
            path.display()
        ),
    };
    let env = |name: &str| Some(std::env::var(name).unwrap_or_default());
    let config = match Config::parse_with_env(&text, path, &env, &wsbridge::sink::registry::SINKS) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(Err(ExitCode::from(2)));
        }
    };
    let Some(metrics) = config.metrics else {
        eprintln!(
            "wsbridge: {} has no [metrics] section, so the daemon has no status endpoint; add [metrics] listen = \"127.0.0.1:9187\" and restart it",
            path.display()
        );
        return Ok(Err(ExitCode::from(1)));
    };
    Ok(Ok(metrics.listen))
}

fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
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
