//! The [`Validator`]: turns the serde mirror into a [`Config`], collecting every error
//! instead of stopping at the first. Upstreams and sinks have a module each.

mod check;
mod cluster;
mod feed;
mod jq;
mod shaping;
mod sink;
mod transport;
mod upstream;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

pub use check::SinkCheck;
pub use sink::socket_file_identity;

use super::errors::{line_column, ConfigError};
use super::raw::{RawConfig, RawConnectionSettings, RawSize};
use super::sink::SinkCatalog;
use super::{parse_duration, plan, Config, DaemonConfig, MetricsConfig};

/// Turns a [`RawConfig`] into a [`Config`], collecting errors instead of stopping at the first.
pub(super) struct Validator<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// The sink types: the sink layer's registry.
    pub(super) sinks: &'a dyn SinkCatalog,
    pub(super) errors: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(super) fn error(
        &mut self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) {
        let position = span.map(|s| line_column(self.text, s.start));
        // A `[defaults]` value is checked again for each upstream that inherits it: say it once.
        if self
            .errors
            .iter()
            .any(|e| e.position.is_some() && e.position == position && e.message == message)
        {
            return;
        }
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            position,
            key,
            message,
        });
    }

    pub(super) fn config(&mut self, mut raw: RawConfig) -> Config {
        let daemon = self.daemon(&raw);
        let metrics = raw.metrics.as_ref().and_then(|m| {
            let listen = m.listen.as_ref().map_or_else(
                || Some(SocketAddr::from(([127, 0, 0, 1], 9187))),
                |l| self.socket_addr(l, "metrics.listen"),
            )?;
            if !listen.ip().is_loopback() && !m.allow_remote.unwrap_or(false) {
                let span = m.listen.as_ref().map(|l| l.span());
                self.error(
                    span,
                    Some("metrics.listen".into()),
                    format!("{listen} is not a loopback address; set allow_remote = true to expose metrics to the network"),
                );
            }
            Some(MetricsConfig { listen })
        });

        let defaults = self.settings(&RawConnectionSettings::default(), &raw.defaults, "defaults");
        // Names first, from every table, so sinks can be checked against all of them even
        // when an upstream has other errors.
        let mut names: HashSet<String> = raw.unread_upstream_names.iter().cloned().collect();
        for (i, u) in read(&raw.upstream) {
            let name = u.name.get_ref();
            if !names.insert(name.clone()) {
                self.error(
                    Some(u.name.span()),
                    Some(format!("upstream[{i}].name")),
                    format!("upstream name {name:?} is used twice; names must be unique"),
                );
            }
        }
        let mut upstreams = Vec::new();
        for (i, u) in read(&raw.upstream) {
            let key = format!("upstream[{i}]");
            if let Some(upstream) = self.upstream(u, &raw.defaults, &key, defaults.is_some()) {
                upstreams.push(upstream);
            }
        }

        // Before the sinks: `{instance}` in their keys names `[cluster] instance`.
        let cluster = raw.cluster.as_ref().and_then(|c| self.cluster(c));
        let context = check::SinkContext {
            instance: match (&raw.cluster, &cluster) {
                (None, _) => check::Instance::Absent,
                (Some(_), None) => check::Instance::Unknown,
                (Some(_), Some(c)) => check::Instance::Named(c.instance.clone()),
            },
            replicas: upstreams
                .iter()
                .map(|u| (u.name.clone(), u.replicas))
                .collect(),
        };
        let mut sinks = Vec::new();
        // Each resource's first sink, and where that sink names it.
        let mut claimed: BTreeMap<String, (String, Range<usize>, String)> = BTreeMap::new();
        let sinks_read = std::mem::take(&mut raw.sink);
        for (i, s) in sinks_read.into_iter().enumerate() {
            let Some(s) = s else { continue };
            let key = format!("sink[{i}]");
            let Some((sink, claims)) = self.sink(s, &key, &names, self.sinks, &context) else {
                continue;
            };
            // Two sinks on one resource would fight over it: catch it before binding.
            for claim in claims {
                let (resource, shown, span) = (claim.resource, claim.shown, claim.span);
                if let Some((first, _, first_shown)) = claimed.get(&resource) {
                    // One sink may name a place twice (two upstreams into one key).
                    if *first == key {
                        continue;
                    }
                    match claim.one_writer {
                        Some((at, why)) => self.error(
                            Some(span),
                            Some(at),
                            format!("{shown} is already written by {first}; {why}"),
                        ),
                        None => {
                            let same = if *first_shown == shown {
                                String::new()
                            } else {
                                format!(" (the same file as its {first_shown})")
                            };
                            self.error(
                                Some(span),
                                Some(key.clone()),
                                format!("{shown} is already used by {first}{same}; give each sink its own"),
                            );
                        }
                    }
                } else {
                    claimed.insert(resource, (key.clone(), span, shown));
                }
            }
            sinks.push(sink);
        }
        if let (Some(m), Some(metrics)) = (&raw.metrics, &metrics) {
            let resource = format!("address {}", metrics.listen);
            if let Some((first, first_span, _)) = claimed.get(&resource) {
                // A defaulted `listen` has no place in the file: point at the sink's instead.
                let (span, message) = match &m.listen {
                    Some(listen) => (
                        listen.span(),
                        format!("{resource} is already used by {first}; give metrics.listen another address"),
                    ),
                    None => (
                        first_span.clone(),
                        format!(
                            "{resource} (the default) is already used by {first}; set metrics.listen to another address"
                        ),
                    ),
                };
                self.error(Some(span), Some("metrics.listen".into()), message);
            }
        }

        Config {
            daemon,
            metrics,
            upstreams,
            sinks,
            cluster,
        }
    }

    fn daemon(&mut self, raw: &RawConfig) -> DaemonConfig {
        let mut daemon = DaemonConfig::default();
        if let Some(level) = &raw.daemon.log_level {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(level.get_ref()) {
                self.error(
                    Some(level.span()),
                    Some("daemon.log_level".into()),
                    format!("not a valid log filter ({e}); use a level such as \"info\" or \"wsbridge=debug\""),
                );
            }
            daemon.log_level = level.get_ref().clone();
        }
        if let Some(format) = raw.daemon.log_format {
            daemon.log_format = format;
        }
        if let Some(t) = &raw.daemon.shutdown_timeout {
            if let Some(d) = self.duration(t, "daemon.shutdown_timeout") {
                daemon.shutdown_timeout = d;
            }
        }
        daemon
    }

    fn duration(&mut self, s: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(s.get_ref()) {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(Some(s.span()), Some(key.into()), message);
                None
            }
        }
    }

    fn nonzero_duration(&mut self, s: &Spanned<String>, key: &str) -> Option<Duration> {
        let d = self.duration(s, key)?;
        if d.is_zero() {
            self.error(
                Some(s.span()),
                Some(key.into()),
                "must be longer than zero".into(),
            );
            return None;
        }
        Some(d)
    }

    fn size(&mut self, s: &Spanned<String>, key: &str) -> Option<usize> {
        match parse_size::parse_size(s.get_ref().trim()).map(usize::try_from) {
            Ok(Ok(n)) if n > 0 => Some(n),
            _ => {
                self.error(
                    Some(s.span()),
                    Some(key.into()),
                    format!(
                        "{:?} is not a size; write it like \"64KiB\" or \"16MiB\"",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A count from 1 to `max`: queues and limits are sized from it, so an absurd one must
    /// stop at `check` rather than panic or exhaust memory at `run`.
    fn count(&mut self, n: &Spanned<i64>, key: &str, max: usize) -> Option<usize> {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if v > 0 && v <= max => Some(v),
            _ => {
                self.error(
                    Some(n.span()),
                    Some(key.into()),
                    format!("must be a whole number from 1 to {max}"),
                );
                None
            }
        }
    }

    /// A size written as "16MiB" or as a number of bytes, from 1 byte to `max`.
    fn byte_size(&mut self, s: &Spanned<RawSize>, key: &str, max: usize) -> Option<usize> {
        let bytes = match s.get_ref() {
            RawSize::Bytes(n) => u64::try_from(*n).ok(),
            RawSize::Text(t) => parse_size::parse_size(t.trim()).ok(),
        };
        match bytes.and_then(|b| usize::try_from(b).ok()) {
            Some(n) if n > 0 && n <= max => Some(n),
            Some(_) => {
                self.error(
                    Some(s.span()),
                    Some(key.into()),
                    format!("must be from 1 byte to {}", plan::size(max)),
                );
                None
            }
            None => {
                self.error(
                    Some(s.span()),
                    Some(key.into()),
                    "not a size; write it like \"16MiB\" or as a number of bytes".into(),
                );
                None
            }
        }
    }

    fn socket_addr(&mut self, s: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(Some(s.span()), Some(key.into()), format!("{:?} is not an IP address and port; write it like \"127.0.0.1:7001\" or \"[::1]:7001\"", s.get_ref()));
                None
            }
        }
    }
}

/// The tables that could be read, with their index in the file.
fn read<T>(tables: &[Option<T>]) -> impl Iterator<Item = (usize, &T)> {
    tables
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.as_ref().map(|t| (i, t)))
}
