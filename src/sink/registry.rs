//! The sink types, one line each: the catalog `config` reads `[[sink]]` tables through, and
//! how each type is bound. Adding a type is its module and a line in [`SINKS`].

use super::{BoundSink, SinkError};
use crate::config::sink::{SinkCatalog, SinkEntry, SinkType};
use crate::config::SinkConfig;

/// A sink type as the sink layer runs it: its config side ([`SinkType`]) and its binding.
pub trait SinkComponent: SinkType {
    /// Binds what must be bound before the daemon reports ready (a port in use stops it
    /// then); the returned sink runs as one task.
    fn bind(config: &SinkConfig, settings: &Self::Settings) -> Result<BoundSink, SinkError>;
}

/// One registered type.
pub struct Entry {
    config: SinkEntry,
    bind: fn(&SinkConfig) -> Result<BoundSink, SinkError>,
}

impl Entry {
    /// The entry of type `T`.
    pub const fn of<T: SinkComponent>() -> Entry {
        Entry {
            config: SinkEntry::of::<T>(),
            bind: bind_as::<T>,
        }
    }
}

fn bind_as<T: SinkComponent>(config: &SinkConfig) -> Result<BoundSink, SinkError> {
    match config.settings.get::<T::Settings>() {
        Some(settings) => T::bind(config, settings),
        None => Err(SinkError::Type {
            sink: config.name(),
        }),
    }
}

/// The registered sink types.
pub struct Registry(&'static [Entry]);

/// Every sink type, in the order errors list them.
pub static SINKS: Registry = Registry(&[
    Entry::of::<super::stdout::settings::Stdout>(),
    Entry::of::<super::unix::settings::Unix>(),
    Entry::of::<super::tcp::settings::Tcp>(),
    Entry::of::<super::nats::settings::Nats>(),
    Entry::of::<super::redis::settings::Redis>(),
    Entry::of::<super::postgres::settings::Postgres>(),
    Entry::of::<super::file::settings::File>(),
    Entry::of::<super::exec::settings::Exec>(),
    Entry::of::<super::udp::settings::Udp>(),
    Entry::of::<super::http::settings::Http>(),
]);

impl SinkCatalog for Registry {
    fn entries(&self) -> Vec<&SinkEntry> {
        self.0.iter().map(|e| &e.config).collect()
    }
}

/// Binds the sink through its type's entry.
pub fn bind(config: &SinkConfig) -> Result<BoundSink, SinkError> {
    match SINKS.0.iter().find(|e| e.config.name == config.sink_type) {
        Some(entry) => (entry.bind)(config),
        None => Err(SinkError::Type {
            sink: config.name(),
        }),
    }
}

/// A config of one upstream `trades` and the sink table `sink`, with `${SECRET}` set to
/// `hunter2`: what the sink modules' validation tests parse.
#[cfg(test)]
pub(crate) fn parse_one_sink(sink: &str) -> Result<crate::config::Config, String> {
    const HEAD: &str = "[[upstream]]\nname = \"trades\"\nurl = \"ws://127.0.0.1:1/\"\n";
    let env = |name: &str| (name == "SECRET").then(|| "hunter2".to_string());
    crate::config::Config::parse_with_env(
        &format!("{HEAD}[[sink]]\n{sink}"),
        std::path::Path::new("t.toml"),
        &env,
        &SINKS,
    )
    .map_err(|e| e.to_string())
}
