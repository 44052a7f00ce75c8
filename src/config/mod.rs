//! Configuration: the TOML file parsed into a serde mirror ([`raw`]), then validated into
//! the [`Config`] that the rest of the program runs on.
//!
//! Validation collects every problem it finds, each with the file, line, column and key,
//! so a user fixes the whole file in one pass. The validated types are what the
//! supervisor compares on reload: an upstream whose [`UpstreamConfig`] is equal keeps its
//! connection.
//!
//! - `raw`: what the user wrote; `types`: what the program runs on; `validate`: from one
//!   to the other; `errors`: located errors; `expand`: `${VAR}`, `${file:…}`, `${credential:…}`;
//!   `shaping`: before_connect, app_ping, decompress, reply; `redact`: secrets kept out of output;
//!   `values`: durations and the ranges of settings; [`plan`]: `check`'s output;
//!   [`cluster`]: `[cluster]`; [`proxy`]: the `proxy` setting and the environment's proxy.
//! - [`sink`]: what config knows of sink types: the traits a type's module implements and
//!   the catalog (the sink layer's registry, passed in by the caller) that `[[sink]]`
//!   tables are read through. No sink type is named here.

pub mod cluster;
mod errors;
mod expand;
pub mod feed;
mod parse;
pub mod plan;
pub mod proxy;
pub mod raw;
mod redact;
mod shaping;
pub mod sink;
mod types;
mod validate;
mod values;

use std::path::Path;

pub use errors::{ConfigError, ConfigErrors};
pub use expand::expand_env;
pub use feed::{FeedChecks, OnGap};
pub use raw::{Format, LogFormat, OnSlow, RawSize};
pub use redact::{redact_url, Secret};
pub use shaping::{AppPing, Decompress, DEFAULT_APP_PING_INTERVAL, DEFAULT_APP_PING_TIMEOUT};
pub use sink::{SinkCatalog, SinkSettings, SinkType};
pub use types::{
    ClientCert, Config, DaemonConfig, ListenerOptions, MetricsConfig, ProxySetting,
    ReconnectPolicy, SinkConfig, UpstreamConfig,
};
pub use validate::{socket_file_identity, SinkCheck};
pub use values::*;

use validate::Validator;

/// Where `run`, `check` and `status` look when neither `-c` nor `$WSBRIDGE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wsbridge/wsbridge.toml";

impl Config {
    /// Reads and validates a config file; `sinks` is the sink layer's registry.
    pub fn load(path: &Path, sinks: &dyn SinkCatalog) -> Result<Config, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path, sinks),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                position: None,
                key: None,
                message: format!(
                    "cannot read the config file: {e} (pass another with -c or $WSBRIDGE_CONFIG)"
                ),
            }])),
        }
    }

    /// Parses and validates config text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path, sinks: &dyn SinkCatalog) -> Result<Config, ConfigErrors> {
        Self::parse_with_env(text, file, &|name| std::env::var(name).ok(), sinks)
    }

    /// [`Config::parse`] with an explicit environment, for tests.
    pub fn parse_with_env(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        sinks: &dyn SinkCatalog,
    ) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            file,
            text,
            env,
            sinks,
            errors: Vec::new(),
        };
        let parsed = parse::parse(text, sinks);
        for p in parsed.problems {
            let key = (!p.key.is_empty()).then_some(p.key);
            v.error(p.span, key, p.message);
        }
        let read_errors = v.errors.len();
        let config = v.config(parsed.raw);
        let mut errors = v.errors;
        // A key removed because it was wrong is reported once, not again as missing.
        let mut index = 0;
        errors.retain(|e| {
            index += 1;
            index <= read_errors || !e.key.as_ref().is_some_and(|k| parsed.removed.contains(k))
        });
        if errors.is_empty() {
            return Ok(config);
        }
        // In file order, as an editor shows them; errors without a position last.
        errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, usize::MAX)));
        Err(ConfigErrors(errors))
    }

    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

#[cfg(test)]
mod tests;
