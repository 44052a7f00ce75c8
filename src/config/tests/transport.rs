//! `proxy`, `client_cert`, `client_key`, `server_name` and `insecure`: layering over
//! `[defaults]`, errors at their keys, and proxy passwords kept out of errors, Debug and plan.

use super::{errors, parse};
use crate::config::plan::Plan;
use crate::config::proxy::ProxyKind;
use crate::config::ProxySetting;

#[test]
fn proxy_from_defaults_with_env_expansion_and_direct_per_upstream() {
    let text = r#"
[defaults]
proxy = "socks5h://me:${TOKEN}@proxy.internal:1080"

[[upstream]]
name = "a"
url = "wss://h/"

[[upstream]]
name = "b"
url = "ws://h/"
proxy = "direct"
"#;
    let config = parse(text).unwrap();
    let ProxySetting::Via(proxy) = &config.upstreams[0].proxy else {
        panic!("{:?}", config.upstreams[0].proxy);
    };
    assert_eq!(proxy.kind, ProxyKind::Socks5h);
    assert_eq!(proxy.to_string(), "socks5h://me:***@proxy.internal:1080");
    assert_eq!(config.upstreams[1].proxy, ProxySetting::Direct);
    let shown = format!("{}{:?}", Plan(&config), config);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("proxy          socks5h://me:***@proxy.internal:1080"),
        "{shown}"
    );
    assert!(shown.contains("proxy          direct"), "{shown}");
}

#[test]
fn a_bad_proxy_is_an_error_at_its_key_without_its_password() {
    let text =
        "[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\nproxy = \"https://me:hunter2@p:1\"\n";
    let errs = errors(text).join("\n");
    assert!(
        errs.starts_with("test.toml:4:9: upstream[0].proxy: a TLS connection to the proxy"),
        "{errs}"
    );
    assert!(!errs.contains("hunter2"), "{errs}");
    let text = "[defaults]\nproxy = \"ftp://p\"\n[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\n";
    let errs = errors(text).join("\n");
    assert!(
        errs.contains("test.toml:2:9: defaults.proxy: proxy scheme \"ftp\""),
        "{errs}"
    );
}

#[test]
fn tls_keys_on_a_ws_upstream_are_errors_but_inherited_ones_are_ignored() {
    let text = r#"
[defaults]
insecure = true
server_name = "feed.internal"

[[upstream]]
name = "a"
url = "ws://h/"

[[upstream]]
name = "b"
url = "wss://h/"

[[upstream]]
name = "c"
url = "ws://h/"
insecure = true
"#;
    let errs = errors(text).join("\n");
    assert!(
        errs.contains("upstream[2].insecure: only a wss:// URL uses TLS"),
        "{errs}"
    );
    assert_eq!(errs.lines().count(), 1, "{errs}");
    // Without the third upstream: valid, and only the wss:// one takes the defaults.
    let config = parse(&text[..text.rfind("[[upstream]]").unwrap()]).unwrap();
    assert!(!config.upstreams[0].insecure);
    assert!(config.upstreams[1].insecure);
    assert_eq!(
        config.upstreams[1].server_name.as_deref(),
        Some("feed.internal")
    );
    let plan = Plan(&config).to_string();
    assert!(plan.contains("WARNING        insecure = true"), "{plan}");
}

#[test]
fn client_cert_needs_its_key_and_files_that_hold_them() {
    let text =
        "[[upstream]]\nname = \"a\"\nurl = \"wss://h/\"\nclient_cert = \"/nonexistent/c.pem\"\n";
    let errs = errors(text).join("\n");
    assert!(
        errs.contains("test.toml:4:15: upstream[0].client_cert: client_cert needs client_key"),
        "{errs}"
    );
    let text = format!("{text}client_key = \"/nonexistent/c.key\"\nserver_name = \"not a name\"\n");
    let errs = errors(&text).join("\n");
    assert!(
        errs.contains("upstream[0].client_cert: cannot use client certificate /nonexistent/c.pem"),
        "{errs}"
    );
    assert!(
        errs.contains("upstream[0].server_name: \"not a name\" is not a DNS name"),
        "{errs}"
    );
}
