//! Configuration: the TOML file parsed into a serde mirror ([`raw`]), then validated into
//! the [`Config`] that the rest of the program runs on.
//!
//! Validation collects every problem it finds, each with the file, line, column and key,
//! so a user fixes the whole file in one pass. The validated types are what the
//! supervisor compares on reload: an upstream whose [`UpstreamConfig`] is equal keeps its
//! connection.

pub mod plan;
pub mod raw;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use url::Url;

pub use raw::{Format, LogFormat, OnSlow, SinkType};
use raw::{RawConfig, RawConnectionSettings, RawReconnect, RawSink, RawUpstream};

/// Where `run`, `check` and `status` look when neither `-c` nor `$WSBRIDGE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wsbridge/wsbridge.toml";

/// The longest duration a setting takes: far beyond any sensible timeout or interval, and
/// short enough that no deadline computed from it (`now + 2 × timeout`) can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Parses a duration setting ("500ms", "20s", "5m"), at most [`MAX_DURATION`]; the config
/// file and the command line share it, so both say the same about a bad one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write it like \"500ms\", \"20s\" or \"5m\"")
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than wsbridge takes (at most 365 days); use a shorter duration"
        ));
    }
    Ok(duration)
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Process-wide settings.
    pub daemon: DaemonConfig,
    /// The optional metrics endpoint.
    pub metrics: Option<MetricsConfig>,
    /// Every upstream, in file order.
    pub upstreams: Vec<UpstreamConfig>,
    /// Every sink, in file order.
    pub sinks: Vec<SinkConfig>,
}

/// `[daemon]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// A `tracing` filter directive; `RUST_LOG` overrides it.
    pub log_level: String,
    /// Text or JSON log lines on stderr.
    pub log_format: LogFormat,
    /// How long shutdown may take to send Close frames and flush sinks.
    pub shutdown_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// `[metrics]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// The HTTP listen address.
    pub listen: SocketAddr,
}

/// A value that must never reach a log line or `check` output (header and cookie values).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself, for the one place that sends it: the handshake request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Capped exponential backoff with jitter between reconnect attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// The first delay, and the delay after a connection that stayed up.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// Growth factor per failed attempt (≥ 1).
    pub multiplier: f64,
    /// Relative spread: 0.2 means each delay is drawn from ±20 % of the nominal one.
    pub jitter: f64,
    /// Give up after this many attempts in a row without a stable connection; 0 = never.
    pub max_attempts: u32,
    /// A connection that stayed open this long is stable: the backoff starts over from
    /// `initial`. Shorter ones count as failed attempts, whatever they delivered.
    pub reset_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 0,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// One `[[upstream]]`, with `[defaults]` applied and `${VAR}` expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name: the `upstream` field of every record.
    pub name: String,
    /// `ws://` or `wss://` URL (may hold credentials: print it with [`redact_url`]).
    pub url: Url,
    /// Extra handshake headers, in name order.
    pub headers: Vec<(String, Secret)>,
    /// Cookies, sent as one `Cookie` header.
    pub cookies: Vec<(String, Secret)>,
    /// `Sec-WebSocket-Protocol` values, in order of preference.
    pub subprotocols: Vec<String>,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// Text messages sent after every (re)connect, before queued inbound messages.
    pub on_connect: Vec<String>,
    /// An extra PEM root certificate for `wss://`.
    pub ca_file: Option<PathBuf>,
    /// Whether `/healthz` needs this upstream open.
    pub required: bool,
    /// TCP + TLS + WebSocket handshake must finish within this.
    pub connect_timeout: Duration,
    /// Send a Ping after this long without any frame; `None` = autoping off.
    pub ping_interval: Option<Duration>,
    /// After our Ping, no frame at all for this long means the connection is dead.
    pub ping_timeout: Duration,
    /// No data message for this long (Pongs do not count) means the feed is stale.
    pub receive_timeout: Option<Duration>,
    /// Backoff between attempts.
    pub reconnect: ReconnectPolicy,
    /// Largest message (and frame) accepted from the peer, in bytes.
    pub max_message_size: usize,
    /// Messages from sink clients waiting to be sent, at most (they wait while reconnecting).
    pub send_queue: usize,
}

impl UpstreamConfig {
    /// A config with every default, for `connect`, the demo and tests.
    pub fn new(name: impl Into<String>, url: Url) -> Self {
        UpstreamConfig {
            name: name.into(),
            url,
            headers: Vec::new(),
            cookies: Vec::new(),
            subprotocols: Vec::new(),
            origin: None,
            on_connect: Vec::new(),
            ca_file: None,
            required: false,
            connect_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(10),
            receive_timeout: None,
            reconnect: ReconnectPolicy::default(),
            max_message_size: 16 << 20,
            send_queue: 1024,
        }
    }

    /// The URL without credentials, for logs and records.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// A URL with its user name and password replaced, safe for logs.
pub fn redact_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    let _ = shown.set_username("redacted");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// One `[[sink]]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Where the sink writes.
    pub kind: SinkKind,
    /// The upstreams routed to this sink; `None` = all.
    pub upstreams: Option<Vec<String>>,
    /// Envelope or payload only.
    pub format: Format,
    /// Whether open/close/error records are written (ndjson only).
    pub events: bool,
    /// Whether text holding valid JSON is embedded as a `json` record.
    pub parse_json: bool,
    /// Records queued per client.
    pub buffer: usize,
    /// What happens when a client's queue is full.
    pub on_slow: OnSlow,
    /// Whether client lines are sent upstream.
    pub inbound: bool,
}

impl SinkConfig {
    /// A short name for logs: `stdout`, `unix:/run/x.sock`, `tcp:127.0.0.1:7001`.
    pub fn name(&self) -> String {
        self.kind.to_string()
    }

    /// Whether records of `upstream` go to this sink.
    pub fn routes(&self, upstream: &str) -> bool {
        match &self.upstreams {
            None => true,
            Some(names) => names.iter().any(|n| n == upstream),
        }
    }
}

/// Where a sink writes, with the settings only that type has.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// The process's standard output.
    Stdout,
    /// A Unix stream socket listener.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A TCP listener.
    Tcp {
        /// The listen address.
        listen: SocketAddr,
        /// Connections beyond this are refused with an error record.
        max_clients: usize,
    },
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkKind::Stdout => f.write_str("stdout"),
            SinkKind::Unix { path, .. } => write!(f, "unix:{}", path.display()),
            SinkKind::Tcp { listen, .. } => write!(f, "tcp:{listen}"),
        }
    }
}

/// One problem in a config file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The key, as a dotted path (`upstream[2].url`), when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
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
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        Self::parse_with_env(text, file, &|name| std::env::var(name).ok())
    }

    /// [`Config::parse`] with an explicit environment, for tests.
    pub fn parse_with_env(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            file,
            text,
            env,
            errors: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let message = e.message().trim_end().to_string();
                let table = e.span().and_then(|span| table_at(text, span.start));
                v.error(e.span(), table, message);
                return Err(ConfigErrors(v.errors));
            }
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(v.errors))
        }
    }

    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// Turns a [`RawConfig`] into a [`Config`], collecting errors instead of stopping at the first.
struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, span: Option<Range<usize>>, key: Option<String>, message: String) {
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

    fn config(&mut self, raw: RawConfig) -> Config {
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
        let mut names = HashSet::new();
        for (i, u) in raw.upstream.iter().enumerate() {
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
        for (i, u) in raw.upstream.iter().enumerate() {
            let key = format!("upstream[{i}]");
            if let Some(upstream) = self.upstream(u, &raw.defaults, &key, defaults.is_some()) {
                upstreams.push(upstream);
            }
        }

        let mut sinks = Vec::new();
        // Each resource's first sink, and where that sink names it.
        let mut claimed: BTreeMap<String, (String, Range<usize>)> = BTreeMap::new();
        for (i, s) in raw.sink.iter().enumerate() {
            let key = format!("sink[{i}]");
            if let Some(sink) = self.sink(s, &key, &names) {
                // Two sinks on one resource would fight over it: catch it before binding.
                let resource = match &sink.kind {
                    SinkKind::Stdout => "stdout".to_string(),
                    SinkKind::Unix { path, .. } => format!("socket path {}", path.display()),
                    SinkKind::Tcp { listen, .. } => format!("address {listen}"),
                };
                let span = s
                    .path
                    .as_ref()
                    .map(|p| p.span())
                    .or_else(|| s.listen.as_ref().map(|l| l.span()))
                    .unwrap_or(s.kind.span());
                if let Some((first, _)) = claimed.get(&resource) {
                    self.error(
                        Some(span),
                        Some(key.clone()),
                        format!("{resource} is already used by {first}; give each sink its own"),
                    );
                } else {
                    claimed.insert(resource, (key.clone(), span));
                }
                sinks.push(sink);
            }
        }
        if let (Some(m), Some(metrics)) = (&raw.metrics, &metrics) {
            let resource = format!("address {}", metrics.listen);
            if let Some((first, first_span)) = claimed.get(&resource) {
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

    /// Layers `over` on top of `base` and resolves the result; `None` if anything was invalid.
    fn settings(
        &mut self,
        base: &RawConnectionSettings,
        over: &RawConnectionSettings,
        key: &str,
    ) -> Option<ResolvedSettings> {
        let before = self.errors.len();
        let defaults = UpstreamConfig::new("", Url::parse("ws://localhost/").ok()?);
        let pick = |a: &Option<Spanned<String>>, b: &Option<Spanned<String>>| {
            b.clone().or_else(|| a.clone())
        };

        let connect_timeout = match pick(&base.connect_timeout, &over.connect_timeout) {
            Some(s) => self.nonzero_duration(&s, &format!("{key}.connect_timeout")),
            None => Some(defaults.connect_timeout),
        };
        let ping_interval = match pick(&base.ping_interval, &over.ping_interval) {
            Some(s) => self
                .duration(&s, &format!("{key}.ping_interval"))
                .map(|d| Some(d).filter(|d| !d.is_zero())),
            None => Some(defaults.ping_interval),
        };
        let ping_timeout = match pick(&base.ping_timeout, &over.ping_timeout) {
            Some(s) => self.nonzero_duration(&s, &format!("{key}.ping_timeout")),
            None => Some(defaults.ping_timeout),
        };
        let receive_timeout = match pick(&base.receive_timeout, &over.receive_timeout) {
            Some(s) => self
                .duration(&s, &format!("{key}.receive_timeout"))
                .map(|d| Some(d).filter(|d| !d.is_zero())),
            None => Some(defaults.receive_timeout),
        };
        let max_message_size = match pick(&base.max_message_size, &over.max_message_size) {
            Some(s) => self.size(&s, &format!("{key}.max_message_size")),
            None => Some(defaults.max_message_size),
        };
        let send_queue = match over.send_queue.as_ref().or(base.send_queue.as_ref()) {
            Some(n) => self.count(n, &format!("{key}.send_queue")),
            None => Some(defaults.send_queue),
        };
        let reconnect = self.reconnect(base.reconnect.as_ref(), over.reconnect.as_ref(), key);

        if self.errors.len() > before {
            return None;
        }
        Some(ResolvedSettings {
            connect_timeout: connect_timeout?,
            ping_interval: ping_interval?,
            ping_timeout: ping_timeout?,
            receive_timeout: receive_timeout?,
            reconnect: reconnect?,
            max_message_size: max_message_size?,
            send_queue: send_queue?,
        })
    }

    fn reconnect(
        &mut self,
        base: Option<&RawReconnect>,
        over: Option<&RawReconnect>,
        key: &str,
    ) -> Option<ReconnectPolicy> {
        let empty = RawReconnect::default();
        let (base, over) = (base.unwrap_or(&empty), over.unwrap_or(&empty));
        let mut policy = ReconnectPolicy::default();
        let mut ok = true;
        if let Some(s) = over.initial.as_ref().or(base.initial.as_ref()) {
            match self.nonzero_duration(s, &format!("{key}.reconnect.initial")) {
                Some(d) => policy.initial = d,
                None => ok = false,
            }
        }
        if let Some(s) = over.max.as_ref().or(base.max.as_ref()) {
            match self.nonzero_duration(s, &format!("{key}.reconnect.max")) {
                Some(d) => policy.max = d,
                None => ok = false,
            }
        }
        if let Some(m) = over.multiplier.as_ref().or(base.multiplier.as_ref()) {
            if *m.get_ref() >= 1.0 && m.get_ref().is_finite() {
                policy.multiplier = *m.get_ref();
            } else {
                ok = false;
                self.error(
                    Some(m.span()),
                    Some(format!("{key}.reconnect.multiplier")),
                    "must be a number of at least 1.0 (1.0 = constant delay)".into(),
                );
            }
        }
        if let Some(j) = over.jitter.as_ref().or(base.jitter.as_ref()) {
            if (0.0..=1.0).contains(j.get_ref()) {
                policy.jitter = *j.get_ref();
            } else {
                ok = false;
                self.error(
                    Some(j.span()),
                    Some(format!("{key}.reconnect.jitter")),
                    "must be between 0.0 and 1.0 (0.2 = ±20 %)".into(),
                );
            }
        }
        if let Some(n) = over.max_attempts.as_ref().or(base.max_attempts.as_ref()) {
            match u32::try_from(*n.get_ref()) {
                Ok(v) => policy.max_attempts = v,
                Err(_) => {
                    ok = false;
                    self.error(
                        Some(n.span()),
                        Some(format!("{key}.reconnect.max_attempts")),
                        "must be 0 (retry forever) or a positive count".into(),
                    );
                }
            }
        }
        if let Some(s) = over.reset_after.as_ref().or(base.reset_after.as_ref()) {
            match self.duration(s, &format!("{key}.reconnect.reset_after")) {
                Some(d) => policy.reset_after = d,
                None => ok = false,
            }
        }
        if ok && policy.max < policy.initial {
            // Point at `max` if the user wrote it, else at the `initial` that exceeds the default.
            let span = over
                .max
                .as_ref()
                .or(base.max.as_ref())
                .or(over.initial.as_ref())
                .or(base.initial.as_ref())
                .map(|s| s.span());
            self.error(
                span,
                Some(format!("{key}.reconnect.max")),
                format!(
                    "the cap ({}) is below initial ({}); raise max or lower initial",
                    humantime::format_duration(policy.max),
                    humantime::format_duration(policy.initial)
                ),
            );
            ok = false;
        }
        ok.then_some(policy)
    }

    fn upstream(
        &mut self,
        u: &RawUpstream,
        defaults: &RawConnectionSettings,
        key: &str,
        defaults_ok: bool,
    ) -> Option<UpstreamConfig> {
        let before = self.errors.len();
        let name = u.name.get_ref().clone();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_name {
            self.error(
                Some(u.name.span()),
                Some(format!("{key}.name")),
                format!("{name:?} is not a valid name; use letters, digits, '_', '.' and '-'"),
            );
        }
        let url = match Url::parse(u.url.get_ref()) {
            Ok(url) if matches!(url.scheme(), "ws" | "wss") && url.host().is_some() => Some(url),
            Ok(url) => {
                self.error(
                    Some(u.url.span()),
                    Some(format!("{key}.url")),
                    format!(
                        "scheme {:?} is not supported; use a ws:// or wss:// URL with a host",
                        url.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    Some(u.url.span()),
                    Some(format!("{key}.url")),
                    format!("not a valid URL ({e}); write it as ws://host:port/path or wss://…"),
                );
                None
            }
        };
        let headers = self.header_map(&u.headers, &format!("{key}.headers"), true);
        let cookies = self.header_map(&u.cookies, &format!("{key}.cookies"), false);
        for p in &u.subprotocols {
            let token = p.get_ref();
            if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic() && c != ',') {
                self.error(
                    Some(p.span()),
                    Some(format!("{key}.subprotocols")),
                    format!("{token:?} is not a valid subprotocol token; use printable characters other than ','"),
                );
            }
        }
        if let Some(origin) = &u.origin {
            if tokio_tungstenite::tungstenite::http::HeaderValue::from_str(origin.get_ref())
                .is_err()
            {
                self.error(
                    Some(origin.span()),
                    Some(format!("{key}.origin")),
                    "contains characters not allowed in an HTTP header".into(),
                );
            }
        }
        if let Some(ca) = &u.ca_file {
            if let Err(e) = crate::upstream::tls::read_ca_file(ca.get_ref()) {
                self.error(
                    Some(ca.span()),
                    Some(format!("{key}.ca_file")),
                    e.to_string(),
                );
            }
        }
        let settings = self.settings(defaults, &u.overrides(), key);
        if self.errors.len() > before || !defaults_ok {
            return None;
        }
        let s = settings?;
        Some(UpstreamConfig {
            name,
            url: url?,
            headers,
            cookies,
            subprotocols: u.subprotocols.iter().map(|p| p.get_ref().clone()).collect(),
            origin: u.origin.as_ref().map(|o| o.get_ref().clone()),
            on_connect: u.on_connect.clone(),
            ca_file: u.ca_file.as_ref().map(|c| c.get_ref().clone()),
            required: u.required,
            connect_timeout: s.connect_timeout,
            ping_interval: s.ping_interval,
            ping_timeout: s.ping_timeout,
            receive_timeout: s.receive_timeout,
            reconnect: s.reconnect,
            max_message_size: s.max_message_size,
            send_queue: s.send_queue,
        })
    }

    /// Expands `${VAR}` in every value and checks that names and values are valid in HTTP.
    fn header_map(
        &mut self,
        map: &BTreeMap<String, Spanned<String>>,
        key: &str,
        check_name: bool,
    ) -> Vec<(String, Secret)> {
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut out = Vec::new();
        for (name, value) in map {
            let entry_key = format!("{key}.{name}");
            if check_name && HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.error(
                    Some(value.span()),
                    Some(entry_key.clone()),
                    format!("{name:?} is not a valid HTTP header name"),
                );
            }
            if !check_name && (name.is_empty() || name.contains([';', '=', ' '])) {
                self.error(
                    Some(value.span()),
                    Some(entry_key.clone()),
                    format!("{name:?} is not a valid cookie name"),
                );
            }
            match expand_env(value.get_ref(), self.env) {
                Ok(expanded) => {
                    if HeaderValue::from_str(&expanded).is_err() {
                        // Do not echo the value: it is probably a secret.
                        self.error(Some(value.span()), Some(entry_key), "the value (after ${VAR} expansion) contains characters not allowed in an HTTP header".into());
                    } else {
                        out.push((name.clone(), Secret::new(expanded)));
                    }
                }
                Err(message) => self.error(Some(value.span()), Some(entry_key), message),
            }
        }
        out
    }

    fn sink(
        &mut self,
        s: &RawSink,
        key: &str,
        upstream_names: &HashSet<String>,
    ) -> Option<SinkConfig> {
        let before = self.errors.len();
        let kind = *s.kind.get_ref();
        // Keys that only some types use: name the ones that do not belong.
        let misplaced: [KeyRule<'_>; 6] = [
            (
                "path",
                s.path.as_ref().map(Spanned::span),
                &[SinkType::Unix],
            ),
            (
                "mode",
                s.mode.as_ref().map(Spanned::span),
                &[SinkType::Unix],
            ),
            (
                "listen",
                s.listen.as_ref().map(Spanned::span),
                &[SinkType::Tcp],
            ),
            (
                "max_clients",
                s.max_clients.as_ref().map(Spanned::span),
                &[SinkType::Tcp],
            ),
            (
                "allow_remote",
                s.allow_remote.as_ref().map(Spanned::span),
                &[SinkType::Tcp],
            ),
            (
                "on_slow",
                s.on_slow.as_ref().map(Spanned::span),
                &[SinkType::Unix, SinkType::Tcp],
            ),
        ];
        for (name, span, types) in misplaced {
            if span.is_some() && !types.contains(&kind) {
                self.error(
                    span,
                    Some(format!("{key}.{name}")),
                    format!(
                        "a {} sink has no `{name}` key; remove it or change `type`",
                        type_name(kind)
                    ),
                );
            }
        }
        if kind == SinkType::Stdout {
            if let Some(inbound) = &s.inbound {
                if *inbound.get_ref() {
                    self.error(Some(inbound.span()), Some(format!("{key}.inbound")), "stdout has no clients to read lines from; use a unix or tcp sink for inbound".into());
                }
            }
        }
        let upstreams = s.upstreams.as_ref().map(|list| {
            let mut names = Vec::new();
            for n in list.get_ref() {
                if !upstream_names.contains(n.get_ref()) {
                    self.error(
                        Some(n.span()),
                        Some(format!("{key}.upstreams")),
                        format!(
                            "no upstream is named {:?}; the names are: {}",
                            n.get_ref(),
                            join_sorted(upstream_names)
                        ),
                    );
                }
                names.push(n.get_ref().clone());
            }
            names
        });
        let buffer = match &s.buffer {
            Some(b) => self.count(b, &format!("{key}.buffer")),
            None => Some(4096),
        };
        let sink_kind = match kind {
            SinkType::Stdout => Some(SinkKind::Stdout),
            SinkType::Unix => {
                let mode = match &s.mode {
                    Some(m) => match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
                        Ok(mode) if mode <= 0o777 => Some(mode),
                        _ => {
                            self.error(
                                Some(m.span()),
                                Some(format!("{key}.mode")),
                                format!(
                                    "{:?} is not an octal file mode; write it like \"0660\"",
                                    m.get_ref()
                                ),
                            );
                            None
                        }
                    },
                    None => Some(0o660),
                };
                match &s.path {
                    Some(p) if !p.get_ref().as_os_str().is_empty() => {
                        mode.map(|mode| SinkKind::Unix {
                            path: p.get_ref().clone(),
                            mode,
                        })
                    }
                    _ => {
                        self.error(
                            Some(s.kind.span()),
                            Some(format!("{key}.path")),
                            "a unix sink needs `path`, the socket file to create".into(),
                        );
                        None
                    }
                }
            }
            SinkType::Tcp => {
                let max_clients = match &s.max_clients {
                    Some(n) => self.count(n, &format!("{key}.max_clients")),
                    None => Some(64),
                };
                let listen = match &s.listen {
                    Some(l) => self.socket_addr(l, &format!("{key}.listen")),
                    None => {
                        self.error(
                            Some(s.kind.span()),
                            Some(format!("{key}.listen")),
                            "a tcp sink needs `listen`, such as \"127.0.0.1:7001\"".into(),
                        );
                        None
                    }
                };
                if let (Some(addr), Some(l)) = (listen, &s.listen) {
                    let allowed = s.allow_remote.as_ref().is_some_and(|a| *a.get_ref());
                    if !addr.ip().is_loopback() && !allowed {
                        self.error(Some(l.span()), Some(format!("{key}.listen")), format!("{addr} is not a loopback address: anyone who can reach it could read the feed and write upstream; set allow_remote = true if that is intended"));
                    }
                }
                match (listen, max_clients) {
                    (Some(listen), Some(max_clients)) => Some(SinkKind::Tcp {
                        listen,
                        max_clients,
                    }),
                    _ => None,
                }
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(SinkConfig {
            kind: sink_kind?,
            upstreams,
            format: s.format.unwrap_or_default(),
            events: s.events.unwrap_or(true),
            parse_json: s.parse_json.unwrap_or(false),
            buffer: buffer?,
            // stdout has one reader, the pipe: it is always backpressure.
            on_slow: if kind == SinkType::Stdout {
                OnSlow::Block
            } else {
                s.on_slow.as_ref().map(|o| *o.get_ref()).unwrap_or_default()
            },
            inbound: kind != SinkType::Stdout && s.inbound.as_ref().is_none_or(|i| *i.get_ref()),
        })
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

    fn count(&mut self, n: &Spanned<i64>, key: &str) -> Option<usize> {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                self.error(
                    Some(n.span()),
                    Some(key.into()),
                    "must be a positive whole number".into(),
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

/// A type-specific sink key: its name, where it was written (if it was) and the types that use it.
type KeyRule<'a> = (&'a str, Option<Range<usize>>, &'a [SinkType]);

/// The connection settings after layering.
struct ResolvedSettings {
    connect_timeout: Duration,
    ping_interval: Option<Duration>,
    ping_timeout: Duration,
    receive_timeout: Option<Duration>,
    reconnect: ReconnectPolicy,
    max_message_size: usize,
    send_queue: usize,
}

fn type_name(kind: SinkType) -> &'static str {
    match kind {
        SinkType::Stdout => "stdout",
        SinkType::Unix => "unix",
        SinkType::Tcp => "tcp",
    }
}

fn join_sorted(names: &HashSet<String>) -> String {
    let mut v: Vec<_> = names.iter().map(String::as_str).collect();
    v.sort_unstable();
    if v.is_empty() {
        "(none defined)".into()
    } else {
        v.join(", ")
    }
}

/// Replaces each `${NAME}` with the environment variable; `$${` stays a literal `${`.
pub fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(escaped) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed ${…}; write ${NAME} (or $${ for a literal)".to_string())?;
            let name = &body[..end];
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set; export it (under systemd: Environment= or EnvironmentFile=)")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The table that holds a byte offset, as `upstream[1]` or `daemon`, from the headers before it.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut current = None;
    let mut position = 0;
    for line in text.split_inclusive('\n') {
        if position > offset {
            break;
        }
        position += line.len();
        let header = line.trim();
        if let Some(name) = header.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            let name = name.trim();
            let n = counts.entry(name).or_insert(0);
            current = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = header.strip_prefix('[').and_then(|h| h.split(']').next()) {
            current = Some(name.trim().to_string());
        }
    }
    current
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut index: usize) -> usize {
        while index > 0 && !self.is_char_boundary(index) {
            index -= 1;
        }
        index
    }
}

#[cfg(test)]
mod tests;
