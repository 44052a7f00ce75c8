use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let env = |name: &str| match name {
        "TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    Config::parse_with_env(text, Path::new("test.toml"), &env)
}

fn errors(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config should be invalid")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const MINIMAL: &str = r#"
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
    assert_eq!(s.kind, SinkKind::Stdout);
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
        if let Err(e) = Config::parse_with_env(&text, Path::new(file), &env) {
            panic!("{file} is invalid:\n{e}");
        }
    }
}

#[test]
fn misspelt_key_is_located() {
    let text = "[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\nping_intervall = \"1s\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("test.toml:4:1: upstream[0]: "),
        "{errs:?}"
    );
    assert!(errs[0].contains("ping_intervall"), "{errs:?}");
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
fn every_error_is_reported_at_once_with_its_key() {
    let text = r#"
[[upstream]]
name = "a"
url = "http://h/"
connect_timeout = "soon"

[[upstream]]
name = "a"
url = "ws://h/"
max_message_size = "lots"

[[sink]]
type = "tcp"
listen = "0.0.0.0:7001"
upstreams = ["nope"]

[[sink]]
type = "tcp"
listen = "127.0.0.1:7002"

[[sink]]
type = "unix"
path = "/tmp/x.sock"
listen = "127.0.0.1:7003"
"#;
    let errs = errors(text).join("\n");
    for needle in [
        "upstream[0].url",
        "scheme \"http\"",
        "upstream[0].connect_timeout",
        "upstream[1].name",
        "used twice",
        "upstream[1].max_message_size",
        "sink[0].listen",
        "allow_remote",
        "sink[0].upstreams",
        "\"nope\"",
        "sink[2].listen",
    ] {
        assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
    }
    assert!(errs.lines().all(|l| l.starts_with("test.toml:")), "{errs}");
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
    // Defaulted (found by the fuzz test: it had no line): at the sink that holds the address.
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
fn defaults_error_is_reported_once() {
    let text = "[defaults]\nping_timeout = \"x\"\n[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\n[[upstream]]\nname = \"b\"\nurl = \"ws://h/\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("defaults.ping_timeout"), "{errs:?}");
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
        config.sinks[0].kind,
        SinkKind::Unix {
            path: "/run/x.sock".into(),
            mode: 0o640,
            max_clients: 64,
        }
    );
    let errs =
        errors("[[sink]]\ntype = \"unix\"\npath = \"/run/x.sock\"\nmode = \"rw\"\n").join("\n");
    assert!(errs.contains("sink[0].mode"), "{errs}");
}

#[test]
fn url_credentials_are_redacted() {
    let url = Url::parse("wss://user:pw@example.com/ws?x=1").unwrap();
    let shown = redact_url(&url);
    assert!(!shown.contains("pw") && !shown.contains("user"), "{shown}");
    assert!(shown.contains("example.com/ws?x=1"), "{shown}");
}

#[test]
fn line_column_counts_characters() {
    assert_eq!(line_column("ab\ncé\nx", 6), (2, 3));
    assert_eq!(line_column("abc", 0), (1, 1));
}

#[test]
fn parse_errors_name_their_table() {
    let text = "[daemon]\nlog_level = \"info\"\n[[sink]]\ntype = \"stdout\"\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:1\"\nbufer = 3\n";
    let errs = errors(text);
    assert!(
        errs[0].starts_with("test.toml:8:1: sink[1]: unknown field `bufer`"),
        "{errs:?}"
    );
}

#[test]
fn a_duration_longer_than_a_year_is_refused_not_left_to_overflow_a_deadline() {
    // Deadlines are computed as `now + timeout`; an absurd timeout used to panic there.
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
