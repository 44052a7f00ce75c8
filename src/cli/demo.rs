//! `wsbridge demo`: its options and how it runs ([`wsbridge::demo`] is the embedded server).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use wsbridge::config::LogFormat;

use super::process::{init_logging, runtime, signals};

#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// Stop after this many ticks (default: run until Ctrl-C).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Time between ticks, at least 1ms.
    #[arg(long, default_value = "250ms", value_parser = parse_interval)]
    interval: Duration,
    /// Where the embedded server listens (default: a free loopback port). With
    /// 127.0.0.1:8765, `wsbridge run -c config/demo.toml` connects to it too.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

/// A duration of at least [`wsbridge::demo::MIN_INTERVAL`].
fn parse_interval(s: &str) -> Result<Duration, String> {
    let interval = wsbridge::config::parse_duration(s)?;
    if interval < wsbridge::demo::MIN_INTERVAL {
        return Err("the time between ticks must be at least 1ms".into());
    }
    Ok(interval)
}

pub(super) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    init_logging("warn", LogFormat::Text);
    let runtime = runtime()?;
    runtime.block_on(async move {
        let controls = signals()?;
        let options = wsbridge::demo::DemoOptions {
            listen: args.listen,
            count: args.count,
            interval: args.interval,
        };
        wsbridge::demo::run(options, controls).await?;
        Ok(ExitCode::SUCCESS)
    })
}
