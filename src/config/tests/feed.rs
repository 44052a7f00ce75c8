//! The feed checks `sequence`, `on_gap` and `event_time`: read from an upstream or from
//! `[defaults]`, and each mistake (a program that does not compile, a word that is not a
//! choice, a value of the wrong type) reported at its line and column under its key.

use super::{errors, parse};
use crate::config::OnGap;

#[test]
fn every_mistake_in_a_feed_check_is_reported_at_its_place() {
    let text = r#"[defaults]
sequence = ".u |"
on_gap = "sometimes"
event_time = 5

[[upstream]]
name = "a"
url = "ws://h/"
sequence = '.u | tonumber('
on_gap = "bogus"
event_time = '.E +'

[[upstream]]
name = "b"
url = "ws://h/"
sequence = 3
on_gap = 1
event_time = ["x"]

[[upstream]]
name = "c"
url = "ws://h/"
sequence = " "
"#;
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "test.toml:2:17: defaults.sequence: the jq program does not compile: expected term, found the end of the program at column 5 of the program",
            "test.toml:3:10: defaults.on_gap: unknown variant `sometimes`, expected `record` or `reconnect`",
            "test.toml:4:14: defaults.event_time: invalid type: integer `5`, expected a string",
            "test.toml:9:27: upstream[0].sequence: the jq program does not compile: expected closing parenthesis at column 15 of the program",
            "test.toml:10:10: upstream[0].on_gap: unknown variant `bogus`, expected `record` or `reconnect`",
            "test.toml:11:19: upstream[0].event_time: the jq program does not compile: expected term, found the end of the program at column 5 of the program",
            "test.toml:16:12: upstream[1].sequence: invalid type: integer `3`, expected a string",
            "test.toml:17:10: upstream[1].on_gap: invalid type: integer, expected `record` or `reconnect`",
            "test.toml:18:14: upstream[1].event_time: invalid type: array, expected a string",
            "test.toml:23:12: upstream[2].sequence: is empty: write a jq program such as '.u', or remove the key",
        ]
    );
}

#[test]
fn on_gap_reconnect_needs_a_sequence_in_an_upstream_not_in_defaults() {
    let errs = errors("[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\non_gap = \"reconnect\"\n");
    assert_eq!(
        errs,
        ["test.toml:4:10: upstream[0].on_gap: has nothing to act on: set `sequence` (a jq program such as '.u') too"]
    );
    // In [defaults] it is for the upstreams that have a sequence.
    let text = r#"[defaults]
on_gap = "reconnect"

[[upstream]]
name = "checked"
url = "ws://h/"
sequence = ".u"

[[upstream]]
name = "plain"
url = "ws://h/"
"#;
    let config = parse(text).unwrap();
    let (checked, plain) = (&config.upstreams[0].feed, &config.upstreams[1].feed);
    assert_eq!(checked.on_gap, OnGap::Reconnect);
    assert_eq!(checked.sequence.as_ref().map(|p| p.source()), Some(".u"));
    assert!(!plain.any(), "{plain:?}");
}

#[test]
fn an_upstream_overrides_the_defaults_feed_checks() {
    let text = r#"[defaults]
sequence = ".u"
event_time = ".E"

[[upstream]]
name = "own"
url = "ws://h/"
sequence = ".seq"
on_gap = "record"

[[upstream]]
name = "inherits"
url = "ws://h/"
"#;
    let config = parse(text).unwrap();
    let source = |i: usize| {
        let feed = &config.upstreams[i].feed;
        (
            feed.sequence.as_ref().map(|p| p.source().to_string()),
            feed.event_time.as_ref().map(|p| p.source().to_string()),
            feed.on_gap,
        )
    };
    assert_eq!(
        source(0),
        (Some(".seq".into()), Some(".E".into()), OnGap::Record)
    );
    assert_eq!(
        source(1),
        (Some(".u".into()), Some(".E".into()), OnGap::Record)
    );
}
