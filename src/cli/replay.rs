//! `wsbridge replay`: its options and how it runs ([`wsbridge::replay`] does the serving).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use wsbridge::config::LogFormat;
use wsbridge::supervisor::Control;

use super::process::{init_logging, runtime, signals};

pub(super) const EXAMPLES: &str =
    "Each upstream in the files is the path /<upstream>. A client gets that
upstream's text and binary messages with their recorded spacing (ts) divided
by --speed, then Close 1000 (with --loop: the files start over instead).
Other records (open, close, error) are skipped. The first line on stdout is
LISTENING <address>.

Examples:
  # record a feed, then play it back at its own pace
  wsbridge connect wss://h/ws --ndjson -U > feed.ndjson
  wsbridge replay feed.ndjson --listen 127.0.0.1:8765 &
  wsbridge connect ws://127.0.0.1:8765/connect -U

  # a day of rotated file-sink files, ten times as fast
  wsbridge replay trades.ndjson.*.gz trades.ndjson --speed 10

  # a load server for benchmarks: as fast as the client reads, for ever
  wsbridge replay feed.ndjson.gz --speed 0 --loop --listen 127.0.0.1:0";

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
    /// NDJSON files written by a file sink or `connect --ndjson` (plain, or gzip when the
    /// name ends in .gz), played in the order given.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: std::net::SocketAddr,
    /// Divide the recorded spacing by this: 2 plays twice as fast; 0 sends as fast as the
    /// client reads.
    #[arg(long, default_value = "1.0", value_parser = parse_speed)]
    speed: f64,
    /// Start over at the end of the files instead of closing.
    #[arg(long = "loop")]
    looping: bool,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed >= 0.0 => Ok(speed),
        _ => Err(format!(
            "{s:?} is not a speed; use a number such as 1, 2.5 or 0 (as fast as the client reads)"
        )),
    }
}

pub(super) fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    init_logging("info", LogFormat::Text);
    let runtime = runtime()?;
    runtime.block_on(async move {
        let mut controls = signals()?;
        let options = wsbridge::replay::ReplayOptions {
            files: args.files,
            listen: args.listen,
            speed: args.speed,
            looping: args.looping,
        };
        let server = wsbridge::replay::Server::bind(options).await?;
        let addr = server.addr()?;
        // For scripts and tests: where to connect, as the first line.
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "LISTENING {addr}")?;
            out.flush()?;
        }
        for (upstream, messages) in server.upstreams() {
            tracing::info!(messages, "replaying at ws://{addr}/{upstream}");
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            while let Some(control) = controls.recv().await {
                if control == Control::Shutdown {
                    stop.cancel();
                }
            }
        });
        server.run(shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}
