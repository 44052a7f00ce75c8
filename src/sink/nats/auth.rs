//! How a nats sink proves who it is, given to async-nats as one auth callback that answers
//! once per client: the first connect gets the credentials (the URL's user and password, or a
//! `.creds` file's JWT and the nonce signed with its seed), any later attempt an error. That
//! is how the client is kept from reconnecting by itself (see the parent module), which
//! async-nats has no option for. A token goes in the options, beside the callback. The
//! keys (`creds_file`, `token`) are validated here too.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::{Auth, AuthError, ConnectOptions};
use nkeys::KeyPair;

use toml::Spanned;
use url::Url;

use super::settings::{NatsConfig, NatsKeys};
use crate::config::{Secret, SinkCheck};

/// A nats sink's credentials (a user and password come with the URL).
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    /// None, or the URL's user and password.
    None,
    /// A `.creds` file (JWT and NKey seed), as `nsc` writes it.
    CredsFile(PathBuf),
    /// A token.
    Token(Secret),
}

impl fmt::Display for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::None => f.write_str("none"),
            NatsAuth::CredsFile(path) => write!(f, "creds_file {}", path.display()),
            NatsAuth::Token(_) => f.write_str("token <redacted>"),
        }
    }
}

/// The credentials a nats sink's keys give: one of `creds_file`, `token` or a user and
/// password in the URL.
pub fn validate(
    check: &mut SinkCheck<'_, '_>,
    s: &NatsKeys,
    key: &str,
    url: Option<&Url>,
) -> Option<NatsAuth> {
    let in_url = url.is_some_and(|u| !u.username().is_empty());
    let given = [s.creds_file.is_some(), s.token.is_some(), in_url];
    if given.iter().filter(|g| **g).count() > 1 {
        let span = s
            .token
            .as_ref()
            .or(s.creds_file.as_ref())
            .map(Spanned::span);
        check.error(
            span,
            Some(key.into()),
            "give one way to authenticate: creds_file, token, or a user and password in the URL"
                .into(),
        );
        return None;
    }
    if let Some(path) = &s.creds_file {
        let expanded = check.expanded(path, &format!("{key}.creds_file"))?;
        if let Err(e) = std::fs::metadata(&expanded) {
            check.error(
                Some(path.span()),
                Some(format!("{key}.creds_file")),
                format!("cannot read {expanded}: {e}; give the .creds file that nsc wrote for this user"),
            );
            return None;
        }
        return Some(NatsAuth::CredsFile(expanded.into()));
    }
    if let Some(token) = &s.token {
        let expanded = check.expanded(token, &format!("{key}.token"))?;
        return Some(NatsAuth::Token(Secret::new(expanded)));
    }
    Some(NatsAuth::None)
}

/// The credentials of one client, usable for one connection.
pub struct OneConnection {
    user: Option<(String, String)>,
    creds: Option<(String, Arc<KeyPair>)>,
    token: Option<String>,
}

impl OneConnection {
    /// Reads what `config` names (a creds file is read now, for each new client, so a
    /// renewed file is taken on the next reconnect); why not, if it cannot.
    pub async fn new(config: &NatsConfig) -> Result<OneConnection, String> {
        let url = &config.url;
        let user = (!url.username().is_empty()).then(|| {
            (
                percent(url.username()),
                percent(url.password().unwrap_or("")),
            )
        });
        let mut creds = None;
        let mut token = None;
        match &config.auth {
            NatsAuth::None => {}
            NatsAuth::Token(secret) => token = Some(secret.expose().to_string()),
            NatsAuth::CredsFile(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("cannot read the creds file {}: {e}", path.display()))?;
                let parsed = parse_creds(&text).ok_or_else(|| {
                    format!(
                        "the creds file {} holds no user JWT and seed as nsc writes them",
                        path.display()
                    )
                })?;
                creds = Some((parsed.0, Arc::new(parsed.1)));
            }
        }
        Ok(OneConnection { user, creds, token })
    }

    /// Connect options whose auth callback answers once.
    pub fn options(self) -> ConnectOptions {
        let used = AtomicBool::new(false);
        let OneConnection { user, creds, token } = self;
        let options = ConnectOptions::with_auth_callback(move |nonce: Vec<u8>| {
            let first = !used.swap(true, Ordering::SeqCst);
            let user = user.clone();
            let creds = creds.clone();
            async move {
                if !first {
                    return Err(AuthError::new(
                        "wsbridge reconnects with a new client, not this one",
                    ));
                }
                let mut auth = Auth::new();
                if let Some((name, password)) = user {
                    auth.username = Some(name);
                    auth.password = Some(password);
                }
                if let Some((jwt, key)) = creds {
                    auth.jwt = Some(jwt);
                    auth.signature = Some(key.sign(&nonce).map_err(AuthError::new)?);
                }
                Ok(auth)
            }
        });
        match token {
            Some(token) => options.token(token),
            None => options,
        }
    }
}

/// The user JWT and the seed's key pair of a `.creds` file: each the first line after its
/// `-----BEGIN …-----` marker.
fn parse_creds(text: &str) -> Option<(String, KeyPair)> {
    let after = |marker: &str| {
        let mut lines = text.lines().map(str::trim);
        lines.find(|l| l.starts_with("-----BEGIN") && l.contains(marker))?;
        lines.find(|l| !l.is_empty()).map(str::to_string)
    };
    let jwt = after("USER JWT")?;
    let seed = after("NKEY SEED")?;
    let key = KeyPair::from_seed(&seed).ok()?;
    Some((jwt, key))
}

/// A URL's user or password as typed (`%40` back to `@`).
fn percent(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_jwt_and_seed_of_a_creds_file() {
        let seed = KeyPair::new_user().seed().unwrap();
        let text = format!(
            "-----BEGIN NATS USER JWT-----\neyJhbGciOi.x.y\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let (jwt, key) = parse_creds(&text).unwrap();
        assert_eq!(jwt, "eyJhbGciOi.x.y");
        assert_eq!(key.seed().unwrap(), seed);
        assert!(parse_creds("nothing").is_none());
    }
}
