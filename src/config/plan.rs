//! The resolved plan that `wsbridge check` prints: every upstream, sink and route after
//! defaults and `${VAR}` expansion, with secrets redacted.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::{Config, Format, LogFormat, OnSlow, ProxySetting, UpstreamConfig};

/// Formats a [`Config`] for people.
pub struct Plan<'a>(pub &'a Config);

/// A duration for people, as `check` shows them.
pub fn dur(d: Duration) -> String {
    crate::duration::human(d).to_string()
}

/// A byte count in the largest binary unit that divides it (`16 MiB`, `1500 B`).
pub fn size(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 && (value / 1024.0).fract() == 0.0 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
}

/// [`size`] of a `u64`.
pub fn size_u64(bytes: u64) -> String {
    usize::try_from(bytes).map_or_else(|_| format!("{bytes} B"), size)
}

/// The name of an on_slow policy, as the config spells it.
pub fn on_slow(policy: OnSlow) -> &'static str {
    match policy {
        OnSlow::Disconnect => "disconnect",
        OnSlow::Drop => "drop",
        OnSlow::Block => "block",
    }
}

/// The `proxy` line: the setting, or what this process's environment decides for the URL
/// (the daemon's environment may differ, e.g. under systemd).
fn proxy_line(u: &UpstreamConfig) -> String {
    match &u.proxy {
        ProxySetting::Direct => "direct".into(),
        ProxySetting::Via(proxy) => proxy.to_string(),
        ProxySetting::Environment => {
            let env = |name: &str| std::env::var(name).ok();
            match super::proxy::env::lookup(&u.url, &env) {
                Ok(None) => "direct (no proxy variable of this environment applies)".into(),
                Ok(Some((proxy, var))) => format!("{proxy} (from {var} in this environment)"),
                Err(e) => format!("from the environment, which is unusable here: {e}"),
            }
        }
    }
}

impl fmt::Display for Plan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.0;
        let d = &config.daemon;
        writeln!(f, "daemon")?;
        let format = match d.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(f, "  log            {}, {format}", d.log_level)?;
        writeln!(f, "  shutdown       within {}", dur(d.shutdown_timeout))?;
        if let Some(m) = &config.metrics {
            writeln!(f, "metrics")?;
            writeln!(
                f,
                "  listen         http://{}/metrics, /status, /healthz",
                m.listen
            )?;
        }
        if let Some(c) = &config.cluster {
            writeln!(f, "cluster")?;
            writeln!(f, "  instance       {}", c.instance)?;
            writeln!(
                f,
                "  leases         bucket {} at {} ({} replica{}), lease_ttl {}",
                c.bucket,
                c.display_nats(),
                c.bucket_replicas,
                if c.bucket_replicas == 1 { "" } else { "s" },
                dur(c.lease_ttl)
            )?;
        }
        for u in &config.upstreams {
            writeln!(f, "upstream {}", u.name)?;
            writeln!(f, "  url            {}", u.display_url())?;
            if !u.headers.is_empty() {
                let names: Vec<_> = u
                    .headers
                    .iter()
                    .map(|(k, _)| format!("{k}: <redacted>"))
                    .collect();
                writeln!(f, "  headers        {}", names.join(", "))?;
            }
            if !u.cookies.is_empty() {
                let names: Vec<_> = u
                    .cookies
                    .iter()
                    .map(|(k, _)| format!("{k}=<redacted>"))
                    .collect();
                writeln!(f, "  cookies        {}", names.join("; "))?;
            }
            if !u.subprotocols.is_empty() {
                writeln!(f, "  subprotocols   {}", u.subprotocols.join(", "))?;
            }
            if let Some(origin) = &u.origin {
                writeln!(f, "  origin         {origin}")?;
            }
            if !u.on_connect.is_empty() {
                writeln!(
                    f,
                    "  on_connect     {} message(s) after every connect",
                    u.on_connect.len()
                )?;
            }
            if let Some(ca) = &u.ca_file {
                writeln!(f, "  ca_file        {}", ca.display())?;
            }
            writeln!(f, "  proxy          {}", proxy_line(u))?;
            if let Some(c) = &u.client_cert {
                writeln!(
                    f,
                    "  client_cert    {} (key {})",
                    c.cert.display(),
                    c.key.display()
                )?;
            }
            if let Some(name) = &u.server_name {
                writeln!(f, "  server_name    {name} (verified and sent as SNI)")?;
            }
            if u.insecure {
                writeln!(f, "  WARNING        insecure = true: the server's certificate is not verified; anyone on the path can read and change this feed (testing only)")?;
            }
            if let Some(argv) = &u.before_connect {
                // The arguments are the config's own; the program's output is the secret.
                writeln!(
                    f,
                    "  before_connect {} (before every attempt, within connect_timeout)",
                    argv.join(" ")
                )?;
            }
            if let Some(p) = &u.app_ping {
                writeln!(
                    f,
                    "  app_ping       {:?} after {} without data, answer containing {:?} within {}",
                    p.message,
                    dur(p.interval),
                    p.expect,
                    dur(p.timeout)
                )?;
            }
            if let Some(reply) = &u.reply {
                writeln!(
                    f,
                    "  reply          {} (outputs sent upstream; answered messages not forwarded)",
                    reply.source()
                )?;
            }
            if let Some(sequence) = &u.feed.sequence {
                writeln!(
                    f,
                    "  sequence       {} (checked per connection; on_gap = {:?})",
                    sequence.source(),
                    u.feed.on_gap.as_str()
                )?;
            }
            if let Some(event_time) = &u.feed.event_time {
                writeln!(
                    f,
                    "  event_time     {} (lag_ms on each data record)",
                    event_time.source()
                )?;
            }
            if u.decompress != super::Decompress::None {
                writeln!(
                    f,
                    "  decompress     {} binary messages, up to max_message_size inflated",
                    u.decompress.as_str()
                )?;
            }
            let ping = match u.ping_interval {
                Some(i) => format!(
                    "Ping after {} of silence, dead {} after it",
                    dur(i),
                    dur(u.ping_timeout)
                ),
                None => "autoping off".into(),
            };
            let receive = u.receive_timeout.map_or("off".to_string(), dur);
            writeln!(f, "  keepalive      {ping}; receive_timeout {receive}")?;
            let r = &u.reconnect;
            let attempts = if r.max_attempts == 0 {
                "forever".to_string()
            } else {
                format!("at most {} attempts", r.max_attempts)
            };
            writeln!(
                f,
                "  reconnect      {} ×{} up to {}, jitter ±{:.0} %, {attempts}, reset after {} open",
                dur(r.initial),
                r.multiplier,
                dur(r.max),
                r.jitter * 100.0,
                dur(r.reset_after)
            )?;
            writeln!(f, "  connect        timeout {}", dur(u.connect_timeout))?;
            writeln!(
                f,
                "  limits         max_message_size {}, send_queue {}",
                size(u.max_message_size),
                u.send_queue
            )?;
            if config.cluster.is_some() {
                writeln!(f, "  replicas       {} instance(s) at once", u.replicas)?;
            }
            if u.required {
                writeln!(f, "  required       yes (/healthz)")?;
            }
        }
        for s in &config.sinks {
            writeln!(f, "sink {}", s.name())?;
            s.settings.0.plan(s, f)?;
            if let Some(filter) = &s.filter {
                writeln!(f, "  filter         {}", filter.source())?;
            }
            if s.listener.replay > 0 {
                writeln!(
                    f,
                    "  replay         last {} data records of each upstream to a new client",
                    s.listener.replay
                )?;
            }
            if let Some(name) = &s.listener.fd_name {
                writeln!(f, "  fd_name        {name} (the socket systemd passes)")?;
            }
            let format = match s.format {
                Format::Ndjson => {
                    let mut x = "ndjson".to_string();
                    if s.events {
                        x.push_str(", with open/close/error events");
                    }
                    if s.parse_json {
                        x.push_str(", JSON text embedded");
                    }
                    x
                }
                Format::Raw => "raw payload lines".into(),
            };
            writeln!(f, "  format         {format}")?;
            s.settings.0.plan_queue(s, f)?;
            if s.on_slow == OnSlow::Block && s.takes.max_block {
                match s.max_block {
                    Some(d) => writeln!(f, "  max_block      {}", crate::duration::human(d))?,
                    None => writeln!(f, "  max_block      none (blocks for ever)")?,
                }
            }
        }
        writeln!(f, "routes")?;
        for u in &config.upstreams {
            let mut targets = String::new();
            for s in config.sinks.iter().filter(|s| s.routes(&u.name)) {
                if !targets.is_empty() {
                    targets.push_str(", ");
                }
                let _ = write!(targets, "{}", s.name());
            }
            if targets.is_empty() {
                targets.push_str("(no sink: messages are received and discarded)");
            }
            writeln!(f, "  {} -> {targets}", u.name)?;
        }
        Ok(())
    }
}
