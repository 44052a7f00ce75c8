//! The file and exec sinks' keys and `filter`: defaults, and every mistake at its key.

use std::time::Duration;

use super::{errors, parse};
use crate::config::OnSlow;
use crate::sink::exec::{ExecSettings, RestartPolicy};
use crate::sink::file::FileSettings;

fn with_sink(sink: &str) -> String {
    format!("[[upstream]]\nname = \"a\"\nurl = \"ws://h/\"\n\n[[sink]]\n{sink}\n")
}

#[test]
fn file_and_exec_sinks_get_their_defaults() {
    let dir = std::env::temp_dir();
    let text = with_sink(&format!(
        "type = \"file\"\npath = \"{}/wsbridge-config-test.ndjson\"\nrotate = {{ size = \"1MiB\" }}\n\n[[sink]]\ntype = \"exec\"\ncommand = [\"cat\"]\nfilter = '.data'",
        dir.display()
    ));
    let config = parse(&text).unwrap();
    let (file, exec) = (&config.sinks[0], &config.sinks[1]);
    let Some(FileSettings {
        rotate: Some(rotate),
        ..
    }) = file.settings.get::<FileSettings>()
    else {
        panic!("{:?}", file.settings)
    };
    assert_eq!(
        (rotate.size, rotate.every, rotate.keep, rotate.compress),
        (Some(1 << 20), None, 10, false)
    );
    assert_eq!((file.on_slow, file.inbound), (OnSlow::Block, false));
    let Some(ExecSettings { command, restart }) = exec.settings.get::<ExecSettings>() else {
        panic!("{:?}", exec.settings)
    };
    assert_eq!(command, &["cat"]);
    assert_eq!(*restart, RestartPolicy::default());
    assert_eq!(restart.initial, Duration::from_secs(1));
    assert_eq!((exec.on_slow, exec.inbound), (OnSlow::Block, false));
    assert_eq!(exec.filter.as_ref().map(|f| f.source()), Some(".data"));
}

#[test]
fn mistakes_are_reported_at_their_keys() {
    let text = with_sink(
        "type = \"exec\"\ncommand = []\non_slow = \"disconnect\"\nrestart = { initial = \"5s\", max = \"1s\" }\nrotate = { size = \"1MiB\" }\n\n[[sink]]\ntype = \"file\"\npath = \"/nonexistent-dir/x.ndjson\"\nrotate = { keep = 0 }\ninbound = true\nfilter = '.a |'",
    );
    let found = errors(&text);
    let expect = [
        "sink[0].command: an exec sink needs `command`",
        "sink[0].on_slow: an exec sink has one program",
        "sink[0].restart.max: is shorter than initial",
        "sink[0].rotate: an exec sink has no `rotate` key",
        "sink[1].path: the directory /nonexistent-dir does not exist",
        "sink[1].rotate.keep: must be a whole number from 1",
        "sink[1].rotate: says neither `size` nor `every`",
        "sink[1].inbound: file has no clients",
        "sink[1].filter: the jq program does not compile: expected term, found the end of the program at column 5",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.contains(e)),
            "no {e:?} in {found:#?}"
        );
    }
}
