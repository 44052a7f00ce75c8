//! Process setup shared by the commands: the tokio runtimes, signals as [`Control`]s, and
//! logging to stderr.

use anyhow::Context as _;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use wsbridge::config::LogFormat;
use wsbridge::supervisor::Control;

pub(super) fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wsbridge")
        .build()
        .context("cannot start the async runtime")
}

/// SIGTERM/SIGINT → Shutdown, SIGHUP → Reload, SIGUSR1 → Report, as a channel the
/// supervisor selects on.
pub(super) fn signals() -> anyhow::Result<mpsc::Receiver<Control>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            let control = match signal {
                SIGHUP => Control::Reload,
                SIGUSR1 => Control::Report,
                _ => Control::Shutdown,
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Logs go to stderr (stdout carries data only); `RUST_LOG` overrides the config's level.
pub(super) fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // tungstenite traces the whole handshake request, Authorization and Cookie included:
    // whatever the user asked for, those crates log at debug at most, so secrets never reach
    // a log line.
    let filter = if filter.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE) {
        ["tungstenite=debug", "tokio_tungstenite=debug"]
            .iter()
            .filter_map(|d| d.parse().ok())
            .fold(filter, |f, d| f.add_directive(d))
    } else {
        filter
    };
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
