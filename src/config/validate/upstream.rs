//! Validation of `[defaults]` and each `[[upstream]]`: settings layered over the defaults,
//! the URL, handshake headers with `${VAR}` expanded, and the reconnect policy.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::Validator;
use crate::config::expand::expand_env;
use crate::config::raw::{RawConnectionSettings, RawReconnect, RawUpstream};
use crate::config::{ReconnectPolicy, Secret, UpstreamConfig, MAX_QUEUE};

/// The connection settings after layering.
pub(super) struct ResolvedSettings {
    connect_timeout: Duration,
    ping_interval: Option<Duration>,
    ping_timeout: Duration,
    receive_timeout: Option<Duration>,
    reconnect: ReconnectPolicy,
    max_message_size: usize,
    send_queue: usize,
}

impl Validator<'_> {
    /// Layers `over` on top of `base` and resolves the result; `None` if anything was invalid.
    pub(super) fn settings(
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
            Some(n) => self.count(n, &format!("{key}.send_queue"), MAX_QUEUE),
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
        if let Some(s) = over.reset_after.as_ref().or(base.reset_after.as_ref()) {
            match self.duration(s, &format!("{key}.reconnect.reset_after")) {
                Some(d) => policy.reset_after = d,
                None => ok = false,
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
                    crate::duration::human(policy.max),
                    crate::duration::human(policy.initial)
                ),
            );
            ok = false;
        }
        ok.then_some(policy)
    }

    pub(super) fn upstream(
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
        let plain = url.as_ref().is_some_and(|url| url.scheme() == "ws");
        if let (Some(ca), true) = (&u.ca_file, plain) {
            self.error(
                Some(ca.span()),
                Some(format!("{key}.ca_file")),
                "only a wss:// URL uses TLS, so ca_file would mean nothing here; remove it or use wss://".into(),
            );
        } else if let Some(ca) = &u.ca_file {
            if let Err(e) = crate::pem::read_ca_file(ca.get_ref()) {
                self.error(
                    Some(ca.span()),
                    Some(format!("{key}.ca_file")),
                    e.to_string(),
                );
            }
        }
        let settings = self.settings(defaults, &u.overrides(), key);
        let shaping = self.shaping(defaults, &u.overrides(), key);
        let transport = self.transport(defaults, &u.overrides(), key, url.as_ref());
        let replicas = self.replicas(u.replicas.as_ref(), key);
        let feed = self.feed_checks(defaults, &u.overrides(), key);
        if self.errors.len() > before || !defaults_ok {
            return None;
        }
        let (s, t) = (settings?, transport?);
        let shaping = shaping?;
        Some(UpstreamConfig {
            name,
            url: url?,
            headers,
            cookies,
            subprotocols: u.subprotocols.iter().map(|p| p.get_ref().clone()).collect(),
            origin: u.origin.as_ref().map(|o| o.get_ref().clone()),
            on_connect: u.on_connect.clone(),
            ca_file: u.ca_file.as_ref().map(|c| c.get_ref().clone()),
            proxy: t.proxy,
            client_cert: t.client_cert,
            server_name: t.server_name,
            insecure: t.insecure,
            required: u.required,
            connect_timeout: s.connect_timeout,
            ping_interval: s.ping_interval,
            ping_timeout: s.ping_timeout,
            receive_timeout: s.receive_timeout,
            reconnect: s.reconnect,
            max_message_size: s.max_message_size,
            send_queue: s.send_queue,
            before_connect: shaping.before_connect,
            app_ping: shaping.app_ping,
            decompress: shaping.decompress,
            replicas: replicas?,
            reply: shaping.reply,
            feed: feed?,
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
}
