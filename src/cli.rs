//! The command line: subcommands, their options, and what each one runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use wsbridge::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use wsbridge::supervisor::{Control, Supervisor};

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
    /// Start an embedded WebSocket server with sample ticks and bridge it to stdout.
    #[command(
        after_help = "Example:\n  wsbridge demo | jq -c 'select(.type==\"text\") | .data | fromjson'"
    )]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, env = "WSBRIDGE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Stop after this many ticks (default: run until Ctrl-C).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Time between ticks.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    interval: Duration,
}

impl Cli {
    /// Runs the chosen command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Check(args) => Ok(check(&args.config)),
            Command::Run(args) => run(&args.config),
            Command::Demo(args) => demo(args),
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
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
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("wsbridge: refusing to run with an invalid config; `wsbridge check -c {}` lists the problems", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&config.daemon.log_level, config.daemon.log_format);
    let runtime = runtime()?;
    let path = path.to_path_buf();
    runtime.block_on(async move {
        let controls = signals()?;
        let supervisor = Supervisor::start(config).await?;
        supervisor.run(controls, || Config::load(&path)).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    init_logging("warn", LogFormat::Text);
    let runtime = runtime()?;
    runtime.block_on(async move {
        let controls = signals()?;
        let options = wsbridge::demo::DemoOptions {
            count: args.count,
            interval: args.interval,
        };
        wsbridge::demo::run(options, controls).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wsbridge")
        .build()
        .context("cannot start the async runtime")
}

/// SIGTERM/SIGINT → Shutdown, SIGHUP → Reload, as a channel the supervisor selects on.
fn signals() -> anyhow::Result<mpsc::Receiver<Control>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            let control = if signal == SIGHUP {
                Control::Reload
            } else {
                Control::Shutdown
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Logs go to stderr (stdout carries data only); `RUST_LOG` overrides the config's level.
fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only for a person at a terminal, never into the journal or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
