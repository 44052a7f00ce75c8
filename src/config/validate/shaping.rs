//! Validation of an upstream's `before_connect`, `app_ping`, `decompress` and `reply`.

use std::path::Path;

use super::transport::pick;
use super::Validator;
use crate::config::raw::RawConnectionSettings;
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
    /// Resolves the keys of [`Shaping`]: the upstream's own (`over`), else `[defaults]`'s
    /// (`base`); `None` if any was invalid (each error reported, at the table it is in).
    pub(super) fn shaping(
        &mut self,
        base: &RawConnectionSettings,
        over: &RawConnectionSettings,
        key: &str,
    ) -> Option<Shaping> {
        let before = self.errors.len();
        let before_connect = pick(
            &base.before_connect,
            &over.before_connect,
            key,
            "before_connect",
        );
        let before_connect = before_connect.map(|(argv, key, _)| {
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
        let app_ping = pick(&base.app_ping, &over.app_ping, key, "app_ping");
        let app_ping = app_ping.and_then(|(p, key, _)| {
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
        let decompress = pick(&base.decompress, &over.decompress, key, "decompress")
            .map_or(Decompress::None, |(d, _, _)| *d.get_ref());
        // Compiled now: a program that does not compile is a config error at its line.
        let reply = match pick(&base.reply, &over.reply, key, "reply") {
            Some((text, key, _)) if text.get_ref().trim().is_empty() => {
                self.error(
                    Some(text.span()),
                    Some(key),
                    "is empty: write a jq program such as 'select(has(\"ping\")) | {pong: .ping}', or remove `reply`".into(),
                );
                None
            }
            Some((text, key, _)) => self.jq_program(text, key).ok(),
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
