//! The command line: subcommands, their options, and what each one runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use wsbridge::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use wsbridge::supervisor::{Control, Supervisor};

mod connect;
mod demo;
mod process;
mod replay;
mod shaping;
mod top;
mod transport;

use connect::{connect, ConnectArgs};
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
