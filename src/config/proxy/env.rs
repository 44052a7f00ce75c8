//! The proxy the environment names for an upstream without a `proxy` setting, read as curl
//! reads it:
//!
//! - `wss://` uses `https_proxy`, else `HTTPS_PROXY`; `ws://` uses `http_proxy` only in lower
//!   case (curl ignores `HTTP_PROXY`: a CGI program gets a request's `Proxy:` header as
//!   `HTTP_PROXY`, so an attacker could set it); then `all_proxy`, else `ALL_PROXY`.
//! - `no_proxy`, else `NO_PROXY`: hosts reached directly, comma-separated: a name matches
//!   itself and its subdomains (`example.com`, `.example.com`), `*` matches every host, and IP
//!   addresses and networks (`10.0.0.0/8`) match addresses. hyper-util's matcher applies these
//!   rules; the variables themselves are picked here, because its own reading of them differs
//!   from curl's in case precedence.
//!
//! Empty variables count as unset.

use hyper::Uri;
use hyper_util::client::proxy::matcher::Matcher;
use url::Url;

use super::Proxy;

/// A proxy variable of the environment holds no usable proxy URL.
#[derive(Debug, thiserror::Error)]
#[error("the environment variable {var} is not a usable proxy: {reason}; fix or unset it, or set proxy in the config")]
pub struct EnvironmentError {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong with its value (the value is not repeated: it may hold a password).
    pub reason: String,
}

/// The first of `names` that is set and not empty.
fn first(
    names: &[&'static str],
    environment: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        environment(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*name, v))
    })
}

/// The proxy for `url` and the variable that named it; `None`: connect directly.
pub fn lookup(
    url: &Url,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Proxy, &'static str)>, EnvironmentError> {
    let secure = url.scheme() == "wss";
    let scheme_vars: &[&'static str] = if secure {
        &["https_proxy", "HTTPS_PROXY"]
    } else {
        &["http_proxy"]
    };
    let Some((var, value)) =
        first(scheme_vars, environment).or_else(|| first(&["all_proxy", "ALL_PROXY"], environment))
    else {
        return Ok(None);
    };
    if let Some((_, no_proxy)) = first(&["no_proxy", "NO_PROXY"], environment) {
        if bypasses(url, secure, &no_proxy) {
            return Ok(None);
        }
    }
    let proxy = Proxy::parse(&value).map_err(|reason| EnvironmentError { var, reason })?;
    Ok(Some((proxy, var)))
}

/// Whether `no_proxy` lists the URL's host. The matcher is given a stand-in proxy so that its
/// answer depends on `no_proxy` alone.
fn bypasses(url: &Url, secure: bool, no_proxy: &str) -> bool {
    let Some(host) = url.host() else {
        return false;
    };
    let scheme = if secure { "https" } else { "http" };
    let Ok(uri) = format!("{scheme}://{host}/").parse::<Uri>() else {
        return false;
    };
    let matcher = Matcher::builder()
        .all("http://proxy.invalid:1")
        .no(no_proxy)
        .build();
    matcher.intercept(&uri).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup_in(url: &str, vars: &[(&str, &str)]) -> Option<(String, &'static str)> {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        lookup(&Url::parse(url).unwrap(), &env)
            .unwrap()
            .map(|(p, var)| (p.to_string(), var))
    }

    #[test]
    fn scheme_variables_then_all_proxy_in_curls_case_order() {
        let https = ("https_proxy", "http://lower:1");
        let https_upper = ("HTTPS_PROXY", "http://upper:1");
        let all = ("ALL_PROXY", "socks5h://all:1");
        let got = lookup_in("wss://feed.example/", &[https_upper, https]);
        assert_eq!(got, Some(("http://lower:1".into(), "https_proxy")));
        let got = lookup_in("wss://feed.example/", &[https_upper, all]);
        assert_eq!(got, Some(("http://upper:1".into(), "HTTPS_PROXY")));
        // ws:// ignores HTTP_PROXY (curl's CGI rule) and falls back to ALL_PROXY.
        let got = lookup_in(
            "ws://feed.example/",
            &[("HTTP_PROXY", "http://x:1"), https, all],
        );
        assert_eq!(got, Some(("socks5h://all:1".into(), "ALL_PROXY")));
        let got = lookup_in("ws://feed.example/", &[("http_proxy", "http://x:2")]);
        assert_eq!(got, Some(("http://x:2".into(), "http_proxy")));
        assert_eq!(lookup_in("ws://feed.example/", &[("http_proxy", "")]), None);
    }

    #[test]
    fn no_proxy_matches_suffixes_star_and_addresses() {
        let proxy = ("https_proxy", "http://p:1");
        for (url, no) in [
            ("wss://feed.example.com/", "example.com"),
            ("wss://feed.example.com/", "other.org, .example.com"),
            ("wss://anything/", "*"),
            ("wss://10.1.2.3:9443/", "10.0.0.0/8"),
            ("wss://127.0.0.1/", "127.0.0.1"),
        ] {
            assert_eq!(
                lookup_in(url, &[proxy, ("no_proxy", no)]),
                None,
                "{url} {no}"
            );
        }
        for (url, no) in [
            ("wss://notexample.com/", "example.com"),
            ("wss://10.1.2.3/", "192.168.0.0/16"),
        ] {
            assert!(
                lookup_in(url, &[proxy, ("NO_PROXY", no)]).is_some(),
                "{url} {no}"
            );
        }
        // The lower-case variable wins, as in curl.
        let vars = [proxy, ("no_proxy", "other.org"), ("NO_PROXY", "*")];
        assert!(lookup_in("wss://h.example/", &vars).is_some());
    }

    #[test]
    fn a_bad_variable_is_named_and_its_value_kept_secret() {
        let env = |name: &str| (name == "https_proxy").then(|| "https://u:hunter2@p:1".to_string());
        let error = lookup(&Url::parse("wss://h/").unwrap(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("https_proxy") && !error.contains("hunter2"),
            "{error}"
        );
    }
}
