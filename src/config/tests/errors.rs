//! Error reporting: every table's errors at once, in file order, each at its key.

use super::errors;
use crate::config::errors::line_column;

#[test]
fn misspelt_key_is_located() {
    let text = "[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\nping_intervall = \"1s\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("test.toml:4:1: upstream[0].ping_intervall: unknown field"),
        "{errs:?}"
    );
    assert!(errs[0].contains("ping_intervall"), "{errs:?}");
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
fn defaults_error_is_reported_once() {
    let text = "[defaults]\nping_timeout = \"x\"\n[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\n[[upstream]]\nname = \"b\"\nurl = \"ws://h/\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("defaults.ping_timeout"), "{errs:?}");
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
        errs[0].starts_with("test.toml:8:1: sink[1].bufer: unknown field `bufer`"),
        "{errs:?}"
    );
}

#[test]
fn every_table_reports_its_own_errors_in_file_order_with_keys() {
    let text = r#"[[upstream]]
name = "a"
url = "ws://h/"
bogus = 1
ping_intervall = "1s"

[[sink]]
type = "stdoot"

[[sink]]
type = "unix"
path = "/run/a.sock"
colour = "red"
"#;
    let errs = errors(text);
    let located: Vec<_> = errs
        .iter()
        .map(|e| e.split(": unknown").next().unwrap_or(e))
        .collect();
    assert_eq!(
        located,
        [
            "test.toml:4:1: upstream[0].bogus",
            "test.toml:5:1: upstream[0].ping_intervall",
            "test.toml:8:8: sink[0].type",
            "test.toml:13:1: sink[1].colour",
        ],
        "{errs:#?}"
    );
    assert!(
        errs[2].contains("`stdoot`, expected one of `stdout`"),
        "{errs:?}"
    );
}

#[test]
fn type_errors_name_the_key_not_the_table() {
    let text =
        "[defaults]\nreconnect = { max_attempts = \"many\", jitter = \"x\" }\nsend_queue = true\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "test.toml:2:30: defaults.reconnect.max_attempts: invalid type: string \"many\", \
             expected a whole number",
            "test.toml:2:47: defaults.reconnect.jitter: invalid type: string \"x\", expected a \
             number such as 2.0",
            "test.toml:3:14: defaults.send_queue: invalid type: boolean `true`, expected a whole \
             number",
        ]
    );
}

#[test]
fn a_table_that_cannot_be_read_does_not_hide_validation_of_the_others() {
    // The sink's upstream is named by a table that failed: no second error for that.
    let text = r#"[[upstream]]
name = "a"
[[upstream]]
name = "b"
url = "http://h/"
[[sink]]
type = "stdout"
upstreams = ["a", "b"]
[[sink]]
type = "unix"
path = 5
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("test.toml:1:1: upstream[0]: missing field `url`"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("test.toml:5:7: upstream[1].url: scheme"),
        "{errs:?}"
    );
    // The removed path is not reported again as missing.
    assert!(
        errs[2].starts_with("test.toml:11:8: sink[1].path: invalid type"),
        "{errs:?}"
    );
}

#[test]
fn unknown_and_misshapen_top_level_keys_are_reported() {
    let errs = errors("title = \"x\"\nupstream = 3\n[deamon]\nlog_level = \"info\"\n");
    let keys: Vec<_> = errs
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(keys, ["title", "upstream", "deamon"], "{errs:#?}");
    assert!(errs[1].contains("[[upstream]]"), "{errs:?}");
}

#[test]
fn shaping_keys_are_checked_at_their_line() {
    let text = r#"[[upstream]]
name = "a"
url = "ws://h/"
before_connect = []
app_ping = { message = "", expect = "pong", interval = "soon" }
decompress = "brotli"
"#;
    let errs = errors(text);
    let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
    assert!(
        has("test.toml:4:18: upstream[0].before_connect: must name a program"),
        "{errs:?}"
    );
    assert!(
        has("test.toml:5:24: upstream[0].app_ping.message: must not be empty"),
        "{errs:?}"
    );
    assert!(
        has("test.toml:5:56: upstream[0].app_ping.interval: \"soon\" is not a duration"),
        "{errs:?}"
    );
    assert!(
        has("test.toml:6:14: upstream[0].decompress: unknown variant `brotli`"),
        "{errs:?}"
    );
}

#[test]
fn shaping_keys_resolve_with_their_defaults() {
    let text = r#"[[upstream]]
name = "a"
url = "ws://h/"
before_connect = ["get-ticket", "a"]
app_ping = { message = "ping", expect = "pong" }
decompress = "auto"
"#;
    let config = crate::config::Config::parse_with_env(
        text,
        "t.toml".as_ref(),
        &|_| None,
        &crate::sink::registry::SINKS,
    )
    .unwrap();
    let u = &config.upstreams[0];
    assert_eq!(
        u.before_connect.as_deref(),
        Some(&["get-ticket".to_string(), "a".to_string()][..])
    );
    let p = u.app_ping.as_ref().unwrap();
    assert_eq!((p.interval.as_secs(), p.timeout.as_secs()), (15, 10));
    assert_eq!(u.decompress, crate::config::Decompress::Auto);
}

#[test]
fn shaping_keys_sit_in_defaults_too_and_an_upstream_overrides_them() {
    let text = r#"[defaults]
before_connect = ["get-ticket"]
app_ping = { message = "ping", expect = "pong", interval = "5s" }
decompress = "gzip"
reply = '{pong: .ping}'

[[upstream]]
name = "inherits"
url = "ws://h/"

[[upstream]]
name = "overrides"
url = "ws://h/"
decompress = "none"
before_connect = ["other"]
"#;
    let config = crate::config::Config::parse_with_env(
        text,
        "t.toml".as_ref(),
        &|_| None,
        &crate::sink::registry::SINKS,
    )
    .unwrap();
    let (a, b) = (&config.upstreams[0], &config.upstreams[1]);
    assert_eq!(
        a.before_connect.as_deref(),
        Some(&["get-ticket".to_string()][..])
    );
    assert_eq!(a.app_ping.as_ref().map(|p| p.interval.as_secs()), Some(5));
    assert_eq!(a.decompress, crate::config::Decompress::Gzip);
    assert!(a.reply.is_some() && b.reply.is_some());
    assert_eq!(
        b.before_connect.as_deref(),
        Some(&["other".to_string()][..])
    );
    assert_eq!(b.decompress, crate::config::Decompress::None);

    // A mistake in [defaults] is reported once, at its line, under `defaults`.
    let bad = "[defaults]\nreply = '{pong: .ping'\n\n[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\n\n[[upstream]]\nname = \"b\"\nurl = \"ws://h/\"\n";
    let found = errors(bad);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains(":2:") && found[0].contains("defaults.reply"),
        "{found:?}"
    );
}

#[test]
fn reply_is_compiled_at_load_and_its_mistakes_are_at_their_line() {
    let text = r#"[[upstream]]
name = "a"
url = "ws://h/"
reply = '''
select(has("ping"))
  | {pong: .ping'''

[[upstream]]
name = "b"
url = "ws://h/"
reply = " "
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    // The end of the program: line 6, just after `.ping`.
    assert!(
        errs[0].starts_with("test.toml:6:17: upstream[0].reply: the jq program does not compile: expected closing brace at line 2, column 17"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("test.toml:11:9: upstream[1].reply: is empty"),
        "{errs:?}"
    );
    let text = "[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\nreply = 'select(has(\"ping\")) | {pong: .ping}'\n";
    let config = crate::config::Config::parse_with_env(
        text,
        "t.toml".as_ref(),
        &|_| None,
        &crate::sink::registry::SINKS,
    )
    .unwrap();
    let reply = config.upstreams[0].reply.as_ref().expect("compiled");
    assert_eq!(reply.source(), r#"select(has("ping")) | {pong: .ping}"#);
    let plan = crate::config::plan::Plan(&config).to_string();
    assert!(
        plan.contains("  reply          select(has(\"ping\"))"),
        "{plan}"
    );
}

#[test]
fn msg_id_is_a_name_or_a_jq_program_reported_at_its_place() {
    let text = r#"[[upstream]]
name = "a"
url = "ws://h/"

[[sink]]
type = "nats"
jetstream = true
msg_id = { jq = ".t |" }

[[sink]]
type = "nats"
subject = "other.{upstream}"
jetstream = true
msg_id = "hash"
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("test.toml:8:22: sink[0].msg_id.jq: the jq program does not compile"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("test.toml:14:10: sink[1].msg_id: \"hash\" is not a msg_id"),
        "{errs:?}"
    );
    let text = "[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\n\n[[sink]]\ntype = \"nats\"\njetstream = true\nmsg_id = { jq = '.t' }\n";
    let config = crate::config::Config::parse_with_env(
        text,
        "t.toml".as_ref(),
        &|_| None,
        &crate::sink::registry::SINKS,
    )
    .unwrap();
    let plan = crate::config::plan::Plan(&config).to_string();
    assert!(
        plan.contains("Nats-Msg-Id {upstream}:{sink}:{jq \".t\"}"),
        "{plan}"
    );
}
