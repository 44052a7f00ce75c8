//! What must never be printed: header and cookie values ([`Secret`]) and a URL's password
//! and query values ([`redact_url`]).

use std::fmt;

use url::Url;

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

/// What a hidden part of a URL shows instead.
const HIDDEN: &str = "***";

/// A URL safe for logs, records and `check`: the password and every query value show as
/// `***` (`?token=abc&x=1` becomes `?token=***&x=***`), because feeds put API keys in both.
/// A user name without a password is hidden too: services take tokens there as well.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if url.password().is_some() {
        let _ = shown.set_password(Some(HIDDEN));
    } else if !url.username().is_empty() {
        let _ = shown.set_username(HIDDEN);
    }
    if let Some(query) = url.query() {
        let hidden: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={HIDDEN}"),
                // A bare `?abc123` is a value with no name.
                None if !pair.is_empty() => HIDDEN.to_string(),
                None => String::new(),
            })
            .collect();
        shown.set_query(Some(&hidden.join("&")));
    }
    shown.to_string()
}
