//! Unit tests of parsing and validation: defaults, layering, keys, ranges and redaction;
//! `errors` covers how errors are located and reported.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::*;
// The sink types are the sink layer's: these tests read whole files, sinks included.
use crate::sink::registry::SINKS;
use crate::sink::stdout::StdoutSettings;
use crate::sink::unix::settings::UnixSettings;

mod errors;
mod feed;
mod file_exec;
mod transport;

pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let env = |name: &str| match name {
        "TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    Config::parse_with_env(text, Path::new("test.toml"), &env, &SINKS)
}

pub(super) fn errors(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config should be invalid")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

pub(super) const MINIMAL: &str = r#"
[[upstream]]
name = "a"
url = "ws://127.0.0.1:9000/x"

[[sink]]
type = "stdout"
"#;

#[test]
fn minimal_config_gets_every_default() {
    let config = parse(MINIMAL).unwrap();
    let u = &config.upstreams[0];
    assert_eq!(u.connect_timeout, Duration::from_secs(10));
    assert_eq!(u.ping_interval, Some(Duration::from_secs(20)));
    assert_eq!(u.ping_timeout, Duration::from_secs(10));
    assert_eq!(u.receive_timeout, None);
    assert_eq!(u.reconnect, ReconnectPolicy::default());
    assert_eq!(u.max_message_size, 16 * 1024 * 1024);
    let s = &config.sinks[0];
    assert_eq!(s.settings.get::<StdoutSettings>(), Some(&StdoutSettings));
    assert_eq!(
        (s.format, s.events, s.parse_json, s.upstreams.clone()),
        (Format::Ndjson, true, false, None)
    );
    assert_eq!(config.daemon.shutdown_timeout, Duration::from_secs(5));
}

#[test]
fn shipped_example_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config/wsbridge.toml", "config/demo.toml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let env = |_: &str| Some("example".to_string());
        if let Err(e) = Config::parse_with_env(&text, Path::new(file), &env, &SINKS) {
            panic!("{file} is invalid:\n{e}");
        }
    }
}

#[test]
fn inline_tables_keep_other_defaults_and_layer_over_defaults() {
    let text = r#"
[defaults]
reconnect = { max = "10s", jitter = 0.0 }
ping_interval = "0s"

[[upstream]]
name = "a"
url = "ws://h/"
reconnect = { initial = "1s" }
"#;
    let u = &parse(text).unwrap().upstreams[0];
    assert_eq!(u.reconnect.initial, Duration::from_secs(1));
    assert_eq!(u.reconnect.max, Duration::from_secs(10));
    assert_eq!(u.reconnect.jitter, 0.0);
    assert_eq!(u.reconnect.multiplier, 2.0);
    assert_eq!(u.ping_interval, None, "0s turns autoping off");
}

#[test]
fn duplicate_listen_addresses_and_paths_clash() {
    let text = r#"
[[sink]]
type = "tcp"
listen = "127.0.0.1:7001"
[[sink]]
type = "tcp"
listen = "127.0.0.1:7001"
[[sink]]
type = "unix"
path = "/run/a.sock"
[[sink]]
type = "unix"
path = "/run/a.sock"
[[sink]]
type = "stdout"
[[sink]]
type = "stdout"
"#;
    let errs = errors(text).join("\n");
    assert!(
        errs.contains("address 127.0.0.1:7001 is already used by sink[0]"),
        "{errs}"
    );
    assert!(
        errs.contains("socket path /run/a.sock is already used by sink[2]"),
        "{errs}"
    );
    assert!(errs.contains("stdout is already used by sink[4]"), "{errs}");
}

#[test]
fn metrics_on_a_sinks_address_is_an_error_at_a_line_even_when_defaulted() {
    let sink = "[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:9187\"\n";
    // Set: the error points at metrics.listen.
    let errs = errors(&format!("{sink}[metrics]\nlisten = \"127.0.0.1:9187\"\n"));
    assert_eq!(
        errs,
        [
            "test.toml:5:10: metrics.listen: address 127.0.0.1:9187 is already used by sink[0]; \
          give metrics.listen another address"
        ]
    );
    // Defaulted, so not in the file: at the sink that holds the address.
    let errs = errors(&format!("{sink}[metrics]\nallow_remote = false\n"));
    assert_eq!(
        errs,
        [
            "test.toml:3:10: metrics.listen: address 127.0.0.1:9187 (the default) is already used \
          by sink[0]; set metrics.listen to another address"
        ]
    );
}

#[test]
fn env_expansion_in_headers_and_cookies() {
    let text = r#"
[[upstream]]
name = "a"
url = "ws://h/"
headers = { Authorization = "Bearer ${TOKEN}" }
cookies = { session = "x$${TOKEN}y" }
"#;
    let u = &parse(text).unwrap().upstreams[0];
    assert_eq!(u.headers[0].1.expose(), "Bearer s3cret");
    assert_eq!(u.cookies[0].1.expose(), "x${TOKEN}y");
    assert!(
        !format!("{u:?}").contains("s3cret"),
        "Debug must redact secrets"
    );
}

#[test]
fn unset_env_var_is_an_error_that_names_it() {
    let text = "[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\nheaders = { X = \"${MISSING}\" }\n";
    let errs = errors(text).join("\n");
    assert!(
        errs.contains("upstream[0].headers.X") && errs.contains("MISSING is not set"),
        "{errs}"
    );
}

#[test]
fn keys_of_another_sink_type_are_rejected() {
    let text = "[[sink]]\ntype = \"stdout\"\nlisten = \"127.0.0.1:1\"\n";
    let errs = errors(text).join("\n");
    assert!(
        errs.contains("sink[0].listen") && errs.contains("stdout sink has no `listen`"),
        "{errs}"
    );
}

#[test]
fn unix_mode_is_octal() {
    let text = "[[sink]]\ntype = \"unix\"\npath = \"/run/x.sock\"\nmode = \"0640\"\n";
    let config = parse(text).unwrap();
    assert_eq!(
        config.sinks[0].settings.get::<UnixSettings>(),
        Some(&UnixSettings {
            path: "/run/x.sock".into(),
            mode: 0o640,
        })
    );
    assert_eq!(config.sinks[0].listener.max_clients, 64);
    let errs =
        errors("[[sink]]\ntype = \"unix\"\npath = \"/run/x.sock\"\nmode = \"rw\"\n").join("\n");
    assert!(errs.contains("sink[0].mode"), "{errs}");
}

#[test]
fn url_passwords_and_query_values_are_redacted() {
    let shown = |url: &str| redact_url(&Url::parse(url).unwrap());
    assert_eq!(
        shown("wss://user:pw@example.com/ws?token=abc&x=1"),
        "wss://user:***@example.com/ws?token=***&x=***"
    );
    assert_eq!(shown("wss://tok3n@example.com/"), "wss://***@example.com/");
    assert_eq!(shown("ws://h/?s3cret&a=&b=c=d"), "ws://h/?***&a=***&b=***");
    assert_eq!(shown("ws://h:81/p?"), "ws://h:81/p?");
    assert_eq!(shown("ws://h/p#frag"), "ws://h/p#frag");
    let mut u = UpstreamConfig::new("a", Url::parse("ws://u:p@h/?k=v").unwrap());
    assert_eq!(u.display_url(), "ws://u:***@h/?k=***");
    u.url = Url::parse("ws://h/x").unwrap();
    assert_eq!(u.display_url(), "ws://h/x");
}
#[test]
fn a_duration_longer_than_a_year_is_refused_not_left_to_overflow_a_deadline() {
    // Deadlines are computed as `now + timeout`: an absurd timeout would overflow there.
    let text = MINIMAL.replace(
        "url = \"ws://127.0.0.1:9000/x\"",
        "url = \"ws://127.0.0.1:9000/x\"\nping_timeout = \"500000000000years\"",
    ) + "\n[daemon]\nshutdown_timeout = \"366days\"\n";
    let errs = errors(&text).join("\n");
    for needle in [
        "upstream[0].ping_timeout",
        "daemon.shutdown_timeout",
        "at most 365 days",
    ] {
        assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
    }
    assert_eq!(parse_duration(" 365days "), Ok(MAX_DURATION));
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert!(parse_duration("soon")
        .unwrap_err()
        .contains("not a duration"));
}

#[test]
fn new_client_bounds_and_reset_after_have_defaults_and_are_read() {
    let config = parse(
        "[[sink]]\ntype = \"unix\"\npath = \"/run/a.sock\"\n\
         [[sink]]\ntype = \"unix\"\npath = \"/run/b.sock\"\nmax_clients = 3\nbuffer_bytes = \"1MiB\"\n\
         [[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:1\"\nbuffer_bytes = 4096\n\
         [defaults]\nreconnect = { reset_after = \"1m\" }\n\
         [[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\nreconnect = { initial = \"1s\" }\n\
         [[upstream]]\nname = \"b\"\nurl = \"ws://h/\"\nreconnect = { reset_after = \"0s\" }\n",
    )
    .unwrap();
    let s = &config.sinks;
    assert_eq!(s[0].buffer_bytes, 16 << 20);
    assert_eq!(s[0].listener.max_clients, 64);
    assert_eq!(s[1].listener.max_clients, 3);
    assert_eq!((s[1].buffer_bytes, s[2].buffer_bytes), (1 << 20, 4096));
    let u = &config.upstreams;
    assert_eq!(u[0].reconnect.reset_after, Duration::from_secs(60));
    assert_eq!(u[0].reconnect.initial, Duration::from_secs(1));
    assert_eq!(u[1].reconnect.reset_after, Duration::ZERO);
    assert_eq!(
        parse(MINIMAL).unwrap().upstreams[0].reconnect.reset_after,
        Duration::from_secs(30)
    );
}

#[test]
fn client_bounds_are_checked() {
    let errs = errors(
        "[[sink]]\ntype = \"stdout\"\nbuffer_bytes = \"1MiB\"\n\
         [[sink]]\ntype = \"unix\"\npath = \"/run/b.sock\"\nmax_clients = 0\nbuffer_bytes = \"2GiB\"\n\
         [[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:1\"\nbuffer_bytes = \"lots\"\n\
         [[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\nreconnect = { reset_after = \"soon\" }\n",
    )
    .join("\n");
    for needle in [
        "test.toml:3:16: sink[0].buffer_bytes: a stdout sink has no `buffer_bytes`",
        "test.toml:7:15: sink[1].max_clients: must be a whole number from 1 to",
        "test.toml:8:16: sink[1].buffer_bytes: must be from 1 byte to 1 GiB",
        "test.toml:12:16: sink[2].buffer_bytes: not a size",
        "upstream[0].reconnect.reset_after",
    ] {
        assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
    }
}

#[test]
fn only_what_a_reload_cannot_apply_asks_for_a_restart() {
    let config = parse(MINIMAL).unwrap();
    let with = |extra: &str| parse(&format!("{MINIMAL}{extra}")).unwrap();
    assert!(config.restart_warnings(&config.clone()).is_empty());
    // Written out as the defaults, or a timeout that applies at once: nothing to restart.
    let same =
        with("[daemon]\nlog_level = \"info\"\nlog_format = \"text\"\nshutdown_timeout = \"2s\"\n");
    assert!(config.restart_warnings(&same).is_empty());
    let metrics = with("[metrics]\n");
    assert!(metrics
        .restart_warnings(&with("[metrics]\nlisten = \"127.0.0.1:9187\"\n"))
        .is_empty());
    let warnings = config.restart_warnings(&with("[daemon]\nlog_format = \"json\"\n[metrics]\n"));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}

#[test]
fn the_plan_shows_values_as_they_are_written() {
    let plan = plan::Plan(&parse(&format!("{MINIMAL}[daemon]\nlog_format = \"json\"\n")).unwrap())
        .to_string();
    assert!(plan.contains("  log            info, json\n"), "{plan}");
}

#[test]
fn tcp_sinks_on_port_zero_do_not_clash() {
    let text = "[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:0\"\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    assert_eq!(parse(text).unwrap().sinks.len(), 2);
}

#[test]
fn replay_and_fd_name_belong_to_listener_sinks() {
    let text = "[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:7001\"\nreplay = 1000\nfd_name = \"feed\"\n";
    let config = parse(text).unwrap();
    assert_eq!(config.sinks[0].listener.replay, 1000);
    assert_eq!(config.sinks[0].listener.fd_name.as_deref(), Some("feed"));
    let config = parse("[[sink]]\ntype = \"unix\"\npath = \"/run/x.sock\"\nreplay = 0\n").unwrap();
    // max_clients is a listener key too now (it was the unix and tcp kinds' field).
    assert_eq!(
        config.sinks[0].listener,
        crate::config::ListenerOptions {
            max_clients: crate::config::DEFAULT_MAX_CLIENTS,
            ..Default::default()
        }
    );
    let errs = errors(
        "[[sink]]\ntype = \"stdout\"\nreplay = 5\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:7001\"\nreplay = -1\nfd_name = \"a:b\"\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].contains("test.toml:3:10: sink[0].replay: a stdout sink has no `replay` key"),
        "{errs:?}"
    );
    assert!(
        errs[1].contains("sink[1].replay: must be a whole number"),
        "{errs:?}"
    );
    assert!(errs[2].contains("sink[1].fd_name"), "{errs:?}");
}
