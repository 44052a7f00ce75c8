//! [`SinkCheck`]: what a sink type's validation is given (in its module under `sink`): where
//! to report, what it may refer to beyond its own table (`[cluster] instance`, the upstreams'
//! `replicas`), the places it claims, and the helpers every type's keys need.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::Validator;
use crate::config::cluster::INSTANCE_PLACEHOLDER;
use crate::config::expand::expand_env;
use crate::config::raw::RawSize;
use crate::config::sink::Claim;
use crate::config::Format;
use crate::jq::Program;

/// What a sink type's validation works with: where to report (file, line, column and key),
/// the shared keys it may depend on, and the helpers every type's keys need.
pub struct SinkCheck<'c, 'a> {
    v: &'c mut Validator<'a>,
    key: &'c str,
    type_span: Range<usize>,
    format: Option<Format>,
    routed: Vec<String>,
    claims: Vec<Claim>,
    context: &'c SinkContext,
}

/// What a sink's keys may refer to beyond its own table, validated before the sinks.
pub(super) struct SinkContext {
    /// `[cluster] instance`, for `{instance}`.
    pub instance: Instance,
    /// Each valid upstream's `replicas`.
    pub replicas: HashMap<String, usize>,
}

/// `[cluster] instance` as `{instance}` sees it.
pub(super) enum Instance {
    /// No `[cluster]`: `{instance}` means nothing.
    Absent,
    /// `[cluster]` has errors, already reported.
    Unknown,
    /// The instance's name.
    Named(String),
}

impl<'c, 'a> SinkCheck<'c, 'a> {
    /// The check of the sink at `key`, whose `type` is at `type_span`.
    pub(super) fn new(
        v: &'c mut Validator<'a>,
        key: &'c str,
        type_span: Range<usize>,
        format: Option<Format>,
        routed: Vec<String>,
        context: &'c SinkContext,
    ) -> Self {
        SinkCheck {
            v,
            key,
            type_span,
            format,
            routed,
            claims: Vec::new(),
            context,
        }
    }

    /// The places the sink claimed.
    pub(super) fn into_claims(self) -> Vec<Claim> {
        self.claims
    }
}

impl SinkCheck<'_, '_> {
    /// `sink[N]`: the key of the table, for errors about it as a whole.
    pub fn sink_key(&self) -> &str {
        self.key
    }

    /// `sink[N].name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.key)
    }

    /// Where `type` was written: where a missing key is reported.
    pub fn type_span(&self) -> Range<usize> {
        self.type_span.clone()
    }

    /// `format` as written (`None`: not written, ndjson).
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// The names of the upstreams routed to this sink, sorted.
    pub fn routed(&self) -> &[String] {
        &self.routed
    }

    /// Reports a problem at `span` (a value's place in the file), under `key`.
    pub fn error(&mut self, span: Option<Range<usize>>, key: Option<String>, message: String) {
        self.v.error(span, key, message);
    }

    /// Problems reported so far: a type compares it before and after to know whether its
    /// own keys had any.
    pub fn error_count(&self) -> usize {
        self.v.errors.len()
    }

    /// Records that this sink holds a place (an address, a file): a second sink on it is
    /// refused.
    pub fn claim(&mut self, resource: String, shown: String, span: Range<usize>) {
        self.claims.push(Claim {
            resource,
            shown,
            span,
            one_writer: None,
        });
    }

    /// Like [`SinkCheck::claim`], for a place any number of sinks could share but that
    /// takes one writer (a Redis stream key): a second is reported under `key`, with `why`.
    pub fn claim_one_writer(
        &mut self,
        resource: String,
        shown: String,
        span: Range<usize>,
        key: String,
        why: &'static str,
    ) {
        self.claims.push(Claim {
            resource,
            shown,
            span,
            one_writer: Some((key, why)),
        });
    }

    /// `text` with `{instance}` replaced by `[cluster] instance`; an error at `span` under
    /// `key` when there is no `[cluster]`. `None` on an error (also one in `[cluster]`).
    pub fn instance(&mut self, text: &str, span: Range<usize>, key: &str) -> Option<String> {
        if !text.contains(INSTANCE_PLACEHOLDER) {
            return Some(text.to_string());
        }
        match &self.context.instance {
            Instance::Named(name) => Some(text.replace(INSTANCE_PLACEHOLDER, name)),
            Instance::Unknown => None,
            Instance::Absent => {
                self.error(
                    Some(span),
                    Some(key.into()),
                    format!("{INSTANCE_PLACEHOLDER} is the name of this instance in [cluster]; without [cluster] remove it"),
                );
                None
            }
        }
    }

    /// How many instances run upstream `name` at once (`replicas`; 1 if it has errors).
    pub fn replicas(&self, name: &str) -> usize {
        self.context.replicas.get(name).copied().unwrap_or(1)
    }

    /// A jq program, compiled (its errors reported where `text` is).
    pub fn jq_program(&mut self, text: &Spanned<String>, key: String) -> Option<Program> {
        self.v.jq_program(text, key).ok()
    }

    /// A duration such as "5s".
    pub fn duration(&mut self, s: &Spanned<String>, key: &str) -> Option<Duration> {
        self.v.duration(s, key)
    }

    /// A duration longer than zero.
    pub fn nonzero_duration(&mut self, s: &Spanned<String>, key: &str) -> Option<Duration> {
        self.v.nonzero_duration(s, key)
    }

    /// A count from 1 to `max`.
    pub fn count(&mut self, n: &Spanned<i64>, key: &str, max: usize) -> Option<usize> {
        self.v.count(n, key, max)
    }

    /// A size ("16MiB" or bytes) from 1 byte to `max`.
    pub fn byte_size(&mut self, s: &Spanned<RawSize>, key: &str, max: usize) -> Option<usize> {
        self.v.byte_size(s, key, max)
    }

    /// An IP address and port.
    pub fn socket_addr(&mut self, s: &Spanned<String>, key: &str) -> Option<std::net::SocketAddr> {
        self.v.socket_addr(s, key)
    }

    /// The value with `${VAR}`, `${file:…}` and `${credential:…}` expanded.
    pub fn expanded(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        match expand_env(value.get_ref(), self.v.env) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(Some(value.span()), Some(key.into()), message);
                None
            }
        }
    }

    /// The `url` key (expanded; `default` when absent): a URL of one of `schemes` with a host.
    pub fn url(
        &mut self,
        url: Option<&Spanned<String>>,
        default: &str,
        schemes: &[&str],
    ) -> Option<Url> {
        let ukey = self.key("url");
        let text = match url {
            Some(u) => self.expanded(u, &ukey)?,
            None => default.to_string(),
        };
        let span = url.map(Spanned::span);
        match Url::parse(&text) {
            Ok(url) if schemes.contains(&url.scheme()) && url.host_str().is_some() => Some(url),
            // The text may hold a password: it is not repeated.
            Ok(url) => {
                self.error(span, Some(ukey), format!("a {}:// URL was given; this sink takes {} URLs with a host, such as {default}", url.scheme(), schemes.join(":// or ")));
                None
            }
            Err(e) => {
                self.error(
                    span,
                    Some(ukey),
                    format!("not a URL ({e}); write it like {default}"),
                );
                None
            }
        }
    }
}
