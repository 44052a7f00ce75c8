//! Validation of an upstream's `before_connect`, `app_ping`, `decompress` and `reply`.

use std::path::Path;

use super::Validator;
use crate::config::raw::RawUpstream;
use crate::config::{AppPing, Decompress, DEFAULT_APP_PING_INTERVAL, DEFAULT_APP_PING_TIMEOUT};
use crate::jq::Program;

/// The resolved keys of one upstream.
pub(super) struct Shaping {
    pub before_connect: Option<Vec<String>>,
    pub app_ping: Option<AppPing>,
    pub decompress: Decompress,
    pub reply: Option<Program>,
}

impl Validator<'_> {
    /// Resolves the keys of [`Shaping`]; `None` if any was invalid (each error reported).
    pub(super) fn shaping(&mut self, u: &RawUpstream, key: &str) -> Option<Shaping> {
        let before = self.errors.len();
        let before_connect = u.before_connect.as_ref().map(|argv| {
            let key = format!("{key}.before_connect");
            match argv.get_ref().first() {
                None => self.error(
                    Some(argv.span()),
                    Some(key),
                    "must name a program: before_connect = [\"/path/to/program\", \"arg\", …]"
                        .into(),
                ),
                Some(program) => {
                    if let Some(problem) = program_problem(program.get_ref()) {
                        self.error(Some(program.span()), Some(key), problem);
                    }
                }
            }
            argv.get_ref().iter().map(|a| a.get_ref().clone()).collect()
        });
        let app_ping = u.app_ping.as_ref().and_then(|p| {
            let key = format!("{key}.app_ping");
            let p = p.get_ref();
            for (field, value) in [("message", &p.message), ("expect", &p.expect)] {
                if value.get_ref().is_empty() {
                    self.error(
                        Some(value.span()),
                        Some(format!("{key}.{field}")),
                        "must not be empty".into(),
                    );
                }
            }
            let interval = match &p.interval {
                Some(s) => self.nonzero_duration(s, &format!("{key}.interval")),
                None => Some(DEFAULT_APP_PING_INTERVAL),
            };
            let timeout = match &p.timeout {
                Some(s) => self.nonzero_duration(s, &format!("{key}.timeout")),
                None => Some(DEFAULT_APP_PING_TIMEOUT),
            };
            Some(AppPing {
                message: p.message.get_ref().clone(),
                interval: interval?,
                expect: p.expect.get_ref().clone(),
                timeout: timeout?,
            })
        });
        let decompress = u
            .decompress
            .as_ref()
            .map_or(Decompress::None, |d| *d.get_ref());
        // Compiled now: a program that does not compile is a config error at its line.
        let reply = match &u.reply {
            Some(text) if text.get_ref().trim().is_empty() => {
                self.error(
                    Some(text.span()),
                    Some(format!("{key}.reply")),
                    "is empty: write a jq program such as 'select(has(\"ping\")) | {pong: .ping}', or remove `reply`".into(),
                );
                None
            }
            Some(text) => self.jq_program(text, format!("{key}.reply")).ok(),
            None => None,
        };
        (self.errors.len() == before).then_some(Shaping {
            before_connect,
            app_ping,
            decompress,
            reply,
        })
    }
}

/// Why `program` cannot be run, when that is visible now: a path (anything with a `/`) must
/// be an executable file; a bare name is looked up in `$PATH` at each attempt.
fn program_problem(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if program.is_empty() {
        return Some("the program name is empty".into());
    }
    if !program.contains('/') {
        return None;
    }
    match std::fs::metadata(Path::new(program)) {
        Err(e) => Some(format!(
            "cannot use {program}: {e}; give the path of an executable program"
        )),
        Ok(m) if !m.is_file() => Some(format!(
            "{program} is not a file; give the path of an executable program"
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("{program} is not executable; chmod +x it"))
        }
        Ok(_) => None,
    }
}
