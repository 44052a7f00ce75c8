//! The validated configuration the program runs on. The supervisor compares these types on
//! reload: an upstream or sink whose config is equal keeps running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::cluster::ClusterConfig;
pub use super::proxy::ProxySetting;
use super::redact::{redact_url, Secret};
use super::sink::{Settings, Shared};
use super::{AppPing, Decompress, FeedChecks, Format, LogFormat, OnSlow};
use crate::jq::Program;

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
    /// `[cluster]`: when set, this instance runs only the upstreams whose lease it holds.
    pub cluster: Option<ClusterConfig>,
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

impl Config {
    /// What a reload from `self` to `new` changes but cannot apply while running, as warnings
    /// for the log: logging is set up once, and the metrics listener is bound once. Other
    /// `[daemon]` keys (`shutdown_timeout`) take effect at once, so they do not count.
    pub fn restart_warnings(&self, new: &Config) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        let (old_d, new_d) = (&self.daemon, &new.daemon);
        if (&old_d.log_level, old_d.log_format) != (&new_d.log_level, new_d.log_format) {
            warnings
                .push("[daemon] log_level and log_format changes take effect at the next restart");
        }
        if self.metrics != new.metrics {
            warnings.push("[metrics] changes take effect at the next restart");
        }
        if self.cluster != new.cluster {
            warnings.push("[cluster] changes take effect at the next restart");
        }
        warnings
    }
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
    /// A connection counts as stable, and resets the backoff, once it has stayed open this
    /// long: a server that sends one message and closes must not be reconnected at once.
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
    /// `ws://` or `wss://` URL (may hold credentials and query tokens: print it with [`redact_url`]).
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
    /// How the host is reached: as the environment says, directly, or through a proxy.
    pub proxy: ProxySetting,
    /// The certificate (and key) presented for mutual TLS.
    pub client_cert: Option<ClientCert>,
    /// The TLS name verified and sent as SNI, instead of the URL's host.
    pub server_name: Option<String>,
    /// Accept any server certificate (testing only; every connect logs a warning).
    pub insecure: bool,
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
    /// A program (argv, no shell) run before every attempt; its JSON output overrides `url`,
    /// `headers`, `cookies` and `on_connect` for that attempt.
    pub before_connect: Option<Vec<String>>,
    /// Application-level keepalive, off when `None`.
    pub app_ping: Option<AppPing>,
    /// How binary messages are inflated before the sinks.
    pub decompress: Decompress,
    /// With `[cluster]`: how many instances connect to this upstream at once.
    pub replicas: usize,
    /// A jq program run on every text message holding JSON; its outputs are sent back
    /// upstream and a message that produced any is not forwarded. Off when `None`.
    pub reply: Option<Program>,
    /// `sequence`, `on_gap` and `event_time`: what is checked of the feed's own messages.
    pub feed: FeedChecks,
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
            proxy: ProxySetting::Environment,
            client_cert: None,
            server_name: None,
            insecure: false,
            required: false,
            connect_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(10),
            receive_timeout: None,
            reconnect: ReconnectPolicy::default(),
            max_message_size: 16 << 20,
            send_queue: 1024,
            before_connect: None,
            app_ping: None,
            decompress: Decompress::None,
            replicas: 1,
            reply: None,
            feed: FeedChecks::default(),
        }
    }

    /// The URL with its password and query values hidden, for logs, records and `check`.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `client_cert` and `client_key`: a PEM certificate chain and its private key, checked to
/// belong together when the config is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    /// The certificate, then any intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, RSA or EC).
    pub key: PathBuf,
}

/// One `[[sink]]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// `type`: the name of its entry in the sink registry.
    pub sink_type: &'static str,
    /// The shared keys its type takes (`check` shows only what applies).
    pub takes: Shared,
    /// What only its type has: where it writes and how (the type's own struct).
    pub settings: Settings,
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
    /// Bytes queued per client: the bound that holds when records are large.
    pub buffer_bytes: usize,
    /// What happens when a client's queue is full.
    pub on_slow: OnSlow,
    /// `on_slow = "block"`: how long a destination may take nothing before the sink stops
    /// holding its upstreams and drops (counted) until it takes records again; `None` (`"0s"`)
    /// waits for ever.
    pub max_block: Option<std::time::Duration>,
    /// Whether client lines (an exec sink: the program's stdout lines) are sent upstream.
    pub inbound: bool,
    /// A jq program every record goes through (`filter`).
    pub filter: Option<Program>,
    /// What only listener sinks (unix, tcp) take: client bounds, history and socket activation.
    pub listener: ListenerOptions,
}

/// The keys of a listener sink (unix, tcp) beyond its address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerOptions {
    /// `max_clients`: connections beyond this are refused with an error record.
    pub max_clients: usize,
    /// `replay`: data records of each routed upstream a new client gets first; 0 = none.
    pub replay: usize,
    /// `fd_name`: take the socket systemd passed under this name (`FileDescriptorName=`)
    /// instead of the one matching the address or path.
    pub fd_name: Option<String>,
}

impl SinkConfig {
    /// A short name for logs: `stdout`, `unix:/run/x.sock`, `tcp:127.0.0.1:7001`,
    /// `file:/var/lib/x.ndjson`, `exec:prog arg`.
    pub fn name(&self) -> String {
        self.settings.0.name()
    }

    /// Whether records of `upstream` go to this sink.
    pub fn routes(&self, upstream: &str) -> bool {
        match &self.upstreams {
            None => true,
            Some(names) => names.iter().any(|n| n == upstream),
        }
    }
}
