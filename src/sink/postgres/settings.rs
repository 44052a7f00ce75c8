//! `type = "postgres"`: its keys (the server's URL with `${VAR}` for the password, the table),
//! their validation, its `check` lines and its binding.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::config::sink::{Shared, SinkSettings, SinkType};
use crate::config::{redact_url, Format, SinkCheck, SinkConfig};
use crate::sink::broker::settings::{plan_buffer, BROKER};
use crate::sink::nats::settings::host;
use crate::sink::registry::SinkComponent;
use crate::sink::{run_broker, BoundSink, SinkError};

/// The postgres sink type.
pub struct Postgres;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_TABLE: &str = "wsbridge";

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresKeys {
    pub url: Option<Spanned<String>>,
    pub table: Option<Spanned<String>>,
}

/// A `type = "postgres"` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// The server (`postgres://user@host:5432/db`); may hold a password: print it with
    /// [`PostgresConfig::display_url`].
    pub url: Url,
    /// The table, `name` or `schema.name`, each part a plain identifier.
    pub table: String,
}

impl PostgresConfig {
    /// The URL without its password, for logs and `check`.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The table as SQL names it: each part quoted (the parts are plain identifiers).
    pub fn quoted_table(&self) -> String {
        self.table
            .split('.')
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl SinkSettings for PostgresConfig {
    fn name(&self) -> String {
        // The host, never the user or password.
        format!("postgres:{}@{}", self.table, host(&self.url))
    }

    fn plan(&self, _: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  url            {} (no TLS)", self.display_url())?;
        writeln!(
            f,
            "  table          {} (COPY, unique (upstream, run, seq); created when missing)",
            self.table
        )
    }

    fn plan_queue(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        plan_buffer(sink, f)
    }
}

/// Whether `name` is `table` or `schema.table`, each part a letter or `_` then letters,
/// digits or `_`, at most 63 bytes (PostgreSQL's limit).
fn plain_table_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|part| {
            let mut chars = part.chars();
            part.len() <= 63
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl SinkType for Postgres {
    const NAME: &'static str = "postgres";
    const SHARED: Shared = BROKER;
    type Keys = PostgresKeys;
    type Settings = PostgresConfig;

    /// A postgres sink's settings.
    fn validate(s: PostgresKeys, check: &mut SinkCheck<'_, '_>) -> Option<PostgresConfig> {
        let key = &check.sink_key().to_string();
        let before = check.error_count();
        let url = check.url(
            s.url.as_ref(),
            DEFAULT_POSTGRES_URL,
            &["postgres", "postgresql"],
        );
        let url_span = s.url.as_ref().map(Spanned::span);
        if let Some(url) = &url {
            let sslmode = url
                .query_pairs()
                .find(|(name, _)| name == "sslmode")
                .map(|(_, value)| value.into_owned());
            if let Some(mode) = sslmode.filter(|m| m != "disable") {
                check.error(
                    url_span.clone(),
                    Some(format!("{key}.url")),
                    format!("sslmode={mode}: the postgres sink connects without TLS; use sslmode=disable (or leave it out) and reach a remote server through a tunnel"),
                );
            } else if url.as_str().parse::<tokio_postgres::Config>().is_err() {
                // The client's message may repeat the URL's password: it is not shown.
                check.error(
                    url_span.clone(),
                    Some(format!("{key}.url")),
                    format!("not a connection URL the postgres client takes; write it like {DEFAULT_POSTGRES_URL}"),
                );
            }
        }
        if check.format() == Some(Format::Raw) {
            check.error(
                Some(check.type_span()),
                Some(format!("{key}.format")),
                "a postgres row has the columns upstream, run, seq, ts, type and data, so format = \"raw\" means nothing here; remove it".into(),
            );
        }
        let table = match &s.table {
            None => DEFAULT_TABLE.to_string(),
            Some(t) if plain_table_name(t.get_ref()) => t.get_ref().clone(),
            Some(t) => {
                check.error(
                    Some(t.span()),
                    Some(format!("{key}.table")),
                    "a postgres sink's table is a name such as \"wsbridge\" or \"feeds.wsbridge\" (letters, digits and _, not starting with a digit)".into(),
                );
                return None;
            }
        };
        let url = url?;
        // Two sinks writing the same table would take each other's rows for repeats.
        let span = s
            .table
            .as_ref()
            .map(Spanned::span)
            .or(url_span)
            .unwrap_or_else(|| check.type_span());
        let db = url.path().trim_start_matches('/').to_string();
        check.claim(
            format!(
                "postgres table {}:{}/{db}/{table}",
                host(&url),
                url.port().unwrap_or(5432)
            ),
            format!("postgres table {table} on {}", host(&url)),
            span,
        );
        if check.error_count() > before {
            return None;
        }
        Some(PostgresConfig { url, table })
    }
}

impl SinkComponent for Postgres {
    fn bind(_: &SinkConfig, postgres: &PostgresConfig) -> Result<BoundSink, SinkError> {
        let publisher = super::PostgresPublisher::new(Arc::new(postgres.clone()))?;
        Ok(BoundSink::new(move |ctx| run_broker(ctx, publisher)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::plan::Plan;
    use crate::config::Config;
    use crate::sink::registry::SINKS;

    const HEAD: &str = "[[upstream]]\nname = \"trades\"\nurl = \"ws://127.0.0.1:1/\"\n";

    fn parse(sinks: &str) -> Result<Config, String> {
        let env = |name: &str| (name == "SECRET").then(|| "hunter2".to_string());
        Config::parse_with_env(&format!("{HEAD}{sinks}"), Path::new("t.toml"), &env, &SINKS)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn check_shows_the_plan_without_the_password() {
        let config = parse(
            "[[sink]]\ntype = \"postgres\"\nurl = \"postgres://bob:${SECRET}@127.0.0.1:5432/db\"\ntable = \"feeds.ticks\"\n",
        )
        .unwrap();
        let plan = Plan(&config).to_string();
        assert!(!plan.contains("hunter2"), "{plan}");
        assert!(plan.contains("feeds.ticks"), "{plan}");
        assert!(plan.contains("no TLS"), "{plan}");
        assert!(plan.contains("on_slow block"), "{plan}");
    }

    #[test]
    fn the_defaults_are_valid() {
        parse("[[sink]]\ntype = \"postgres\"\n").unwrap();
        parse("[[sink]]\ntype = \"postgres\"\nurl = \"postgresql://u@db.example:6432/x?sslmode=disable\"\n").unwrap();
    }

    #[test]
    fn mistakes_are_named_at_their_key() {
        let cases = [
            ("type = \"postgres\"\nurl = \"http://h/\"", "sink[0].url"),
            (
                "type = \"postgres\"\nurl = \"postgres://u@h/db?sslmode=require\"",
                "sink[0].url",
            ),
            ("type = \"postgres\"\ntable = \"a b\"", "sink[0].table"),
            ("type = \"postgres\"\ntable = \"1x\"", "sink[0].table"),
            ("type = \"postgres\"\ntable = \"a.b.c\"", "sink[0].table"),
            ("type = \"postgres\"\nformat = \"raw\"", "sink[0].format"),
            ("type = \"postgres\"\nstream = \"x\"", "sink[0].stream"),
            (
                "type = \"postgres\"\non_slow = \"disconnect\"",
                "sink[0].on_slow",
            ),
        ];
        for (sink, key) in cases {
            let error = parse(&format!("[[sink]]\n{sink}\n")).expect_err(sink);
            assert!(error.contains(&format!("{key}:")), "{sink}: {error}");
        }
    }

    #[test]
    fn sslmode_error_says_there_is_no_tls() {
        let error = parse(
            "[[sink]]\ntype = \"postgres\"\nurl = \"postgres://u:${SECRET}@h/db?sslmode=require\"\n",
        )
        .unwrap_err();
        assert!(error.contains("without TLS"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn two_sinks_on_one_table_are_refused() {
        let one = "[[sink]]\ntype = \"postgres\"\nurl = \"postgres://u@h/db\"\n";
        let error = parse(&format!("{one}{one}")).unwrap_err();
        assert!(error.contains("sink[1]"), "{error}");
        let other =
            "[[sink]]\ntype = \"postgres\"\nurl = \"postgres://u@h/db\"\ntable = \"other\"\n";
        parse(&format!("{one}{other}")).unwrap();
    }
}
