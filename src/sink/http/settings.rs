//! `type = "http"`: its keys (`url`, `headers` with `${VAR}`, `max_batch`, `linger`,
//! `timeout`), their validation, its `check` lines and its binding.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::config::sink::{Shared, SinkSettings, SinkType};
use crate::config::{redact_url, Format, SinkCheck, SinkConfig};
use crate::sink::broker::settings::{plan_buffer, BROKER};
use crate::sink::registry::SinkComponent;
use crate::sink::{BoundSink, SinkError};

/// The http sink type.
pub struct Http;

/// Records per request when `max_batch` is not given.
pub const DEFAULT_MAX_BATCH: usize = 1000;
/// The most `max_batch` may be.
pub const MAX_BATCH: usize = 100_000;
/// How long a batch may wait to fill when `linger` is not given.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);
/// How long one request may take when `timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpKeys {
    pub url: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub max_batch: Option<Spanned<i64>>,
    pub linger: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

/// A header value that may be a secret: never shown by `Debug`, logs or `check`.
#[derive(Clone, PartialEq)]
pub struct Secret(pub HeaderValue);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"(hidden)\"")
    }
}

/// A `type = "http"` sink.
#[derive(Clone, PartialEq)]
pub struct HttpSettings {
    /// Where batches are POSTed (`http://`); may hold secrets in its query: print it with
    /// [`HttpSettings::display_url`].
    pub url: Url,
    /// Headers sent with every request (values expanded, hidden when shown).
    pub headers: Vec<(HeaderName, Secret)>,
    /// Records per request, at most.
    pub max_batch: usize,
    /// How long a batch waits to fill before it is sent.
    pub linger: Duration,
    /// How long one request may take before it is abandoned and sent again.
    pub timeout: Duration,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("url", &self.display_url())
            .field("headers", &self.headers)
            .field("max_batch", &self.max_batch)
            .field("linger", &self.linger)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpSettings {
    /// The URL without its password or query values, for logs and `check`.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl SinkSettings for HttpSettings {
    fn name(&self) -> String {
        let host = self.url.host_str().unwrap_or("");
        match self.url.port() {
            Some(port) => format!("http:{host}:{port}{}", self.url.path()),
            None => format!("http:{host}{}", self.url.path()),
        }
    }

    fn plan(&self, _: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  url            POST {}", self.display_url())?;
        if !self.headers.is_empty() {
            let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
            writeln!(f, "  headers        {} (values hidden)", names.join(", "))?;
        }
        writeln!(
            f,
            "  batches        up to {} records, linger {}, timeout {}",
            self.max_batch,
            humantime::format_duration(self.linger),
            humantime::format_duration(self.timeout)
        )
    }

    fn plan_queue(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        plan_buffer(sink, f)
    }
}

impl SinkType for Http {
    const NAME: &'static str = "http";
    const SHARED: Shared = BROKER;
    type Keys = HttpKeys;
    type Settings = HttpSettings;

    fn validate(s: HttpKeys, check: &mut SinkCheck<'_, '_>) -> Option<HttpSettings> {
        let key = check.sink_key().to_string();
        let before = check.error_count();
        let url = match &s.url {
            Some(u) => check.url(Some(u), "http://127.0.0.1:8080/ingest", &["http", "https"]),
            None => {
                check.error(
                    Some(check.type_span()),
                    Some(format!("{key}.url")),
                    "an http sink needs `url`, such as \"http://127.0.0.1:8080/ingest\"".into(),
                );
                None
            }
        };
        if let (Some(url), Some(u)) = (&url, &s.url) {
            if url.scheme() == "https" {
                check.error(
                    Some(u.span()),
                    Some(format!("{key}.url")),
                    "https:// is not supported yet by the http sink; use an http:// URL (a local collector, or a TLS-terminating proxy such as nginx or stunnel in front of the server)".into(),
                );
            } else if !url.username().is_empty() || url.password().is_some() {
                check.error(
                    Some(u.span()),
                    Some(format!("{key}.url")),
                    "credentials in the URL are not sent; remove them and use headers = { Authorization = \"Bearer ${TOKEN}\" }".into(),
                );
            }
        }
        if check.format() == Some(Format::Raw) {
            check.error(
                Some(check.type_span()),
                Some(format!("{key}.format")),
                "an http sink POSTs NDJSON (application/x-ndjson), one record a line, so format = \"raw\" means nothing here; remove it".into(),
            );
        }
        let mut headers = Vec::new();
        if let Some(table) = &s.headers {
            for (name, value) in table.get_ref() {
                let hkey = format!("{key}.headers.{name}");
                let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                    check.error(
                        Some(table.span()),
                        Some(hkey),
                        format!("{name:?} is not a valid HTTP header name"),
                    );
                    continue;
                };
                if header == hyper::header::CONTENT_TYPE
                    || header == hyper::header::CONTENT_LENGTH
                    || header == hyper::header::HOST
                    || header == hyper::header::TRANSFER_ENCODING
                {
                    check.error(
                        Some(table.span()),
                        Some(hkey),
                        format!("{name} is set by the sink itself; remove it"),
                    );
                    continue;
                }
                let Some(text) = check.expanded(value, &hkey) else {
                    continue;
                };
                match HeaderValue::from_str(&text) {
                    Ok(mut v) => {
                        v.set_sensitive(true);
                        headers.push((header, Secret(v)));
                    }
                    // The value may be a secret: it is not repeated.
                    Err(_) => check.error(
                        Some(value.span()),
                        Some(hkey),
                        "the value (after expansion) holds characters a header cannot: control characters or a line break".into(),
                    ),
                }
            }
        }
        let max_batch = match &s.max_batch {
            Some(n) => check.count(n, &format!("{key}.max_batch"), MAX_BATCH),
            None => Some(DEFAULT_MAX_BATCH),
        };
        let linger = match &s.linger {
            Some(d) => check.duration(d, &format!("{key}.linger")),
            None => Some(DEFAULT_LINGER),
        };
        let timeout = match &s.timeout {
            Some(d) => check.nonzero_duration(d, &format!("{key}.timeout")),
            None => Some(DEFAULT_TIMEOUT),
        };
        if check.error_count() > before {
            return None;
        }
        Some(HttpSettings {
            url: url?,
            headers,
            max_batch: max_batch?,
            linger: linger?,
            timeout: timeout?,
        })
    }
}

impl SinkComponent for Http {
    fn bind(_: &SinkConfig, http: &HttpSettings) -> Result<BoundSink, SinkError> {
        let settings = http.clone();
        Ok(BoundSink::new(move |ctx| super::run(ctx, settings)))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::plan::Plan;

    use super::HttpSettings;

    use crate::sink::registry::parse_one_sink as parse;

    #[test]
    fn defaults_and_secrets() {
        let config = parse(
            "type = \"http\"\nurl = \"http://127.0.0.1:9/in?key=${SECRET}\"\nheaders = { Authorization = \"Bearer ${SECRET}\" }",
        )
        .unwrap();
        let sink = &config.sinks[0];
        let http = sink.settings.get::<HttpSettings>().unwrap();
        assert_eq!(http.max_batch, 1000);
        assert_eq!(http.linger, std::time::Duration::from_millis(100));
        assert_eq!(http.timeout, std::time::Duration::from_secs(10));
        assert_eq!(http.headers[0].1 .0, "Bearer hunter2");
        assert_eq!(http.url.query(), Some("key=hunter2"));
        let plan = Plan(&config).to_string();
        assert!(!plan.contains("hunter2"), "{plan}");
        assert!(plan.contains("authorization (values hidden)"), "{plan}");
        assert!(plan.contains("on_slow block"), "{plan}");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(sink.name(), "http:127.0.0.1:9/in");
    }

    #[test]
    fn mistakes_are_named_at_their_key() {
        let cases = [
            ("type = \"http\"", "sink[0].url"),
            (
                "type = \"http\"\nurl = \"https://example.com/\"",
                "sink[0].url",
            ),
            (
                "type = \"http\"\nurl = \"ftp://example.com/\"",
                "sink[0].url",
            ),
            ("type = \"http\"\nurl = \"http://u:p@h/\"", "sink[0].url"),
            (
                "type = \"http\"\nurl = \"http://h/\"\nmax_batch = 0",
                "sink[0].max_batch",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\nlinger = \"soon\"",
                "sink[0].linger",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\ntimeout = \"0s\"",
                "sink[0].timeout",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\nheaders = { \"a b\" = \"x\" }",
                "sink[0].headers.a b",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\nheaders = { X = \"${NOPE}\" }",
                "sink[0].headers.X",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\nheaders = { Content-Type = \"text/plain\" }",
                "sink[0].headers.Content-Type",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\non_slow = \"disconnect\"",
                "sink[0].on_slow",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\nformat = \"raw\"",
                "sink[0].format",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\nsubject = \"x\"",
                "sink[0].subject",
            ),
        ];
        for (sink, key) in cases {
            let error = parse(sink).expect_err(sink);
            assert!(error.contains(&format!("{key}:")), "{sink}: {error}");
        }
    }
}
