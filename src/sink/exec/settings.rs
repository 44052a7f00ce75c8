//! `type = "exec"`: its keys (`command`, `restart`), their validation, its `check` lines
//! and its binding (nothing to bind: the program starts when the sink runs).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::plan::{dur, on_slow, size};
use crate::config::sink::{Buffer, Inbound, Shared, SinkSettings, SinkType, SlowRule};
use crate::config::{OnSlow, SinkCheck, SinkConfig};
use crate::sink::registry::SinkComponent;
use crate::sink::{BoundSink, SinkError};

/// The exec sink type.
pub struct Exec;

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecKeys {
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub restart: Option<Spanned<RawRestart>>,
}

/// `restart = { ... }` of an exec sink: any subset of the keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub initial: Option<Spanned<String>>,
    pub max: Option<Spanned<String>>,
}

/// Records written to a program's stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSettings {
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// Delays before restarting the program after it exits.
    pub restart: RestartPolicy,
}

/// `restart = { ... }` of an exec sink: capped exponential backoff (doubling, ±20 % jitter)
/// between restarts of a program that exits, reset once it has run for `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl SinkSettings for ExecSettings {
    fn name(&self) -> String {
        format!("exec:{}", self.command.join(" "))
    }

    fn plan(&self, _: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command        {:?}", self.command)?;
        writeln!(
            f,
            "  restart        after {} ×2 up to {}",
            dur(self.restart.initial),
            dur(self.restart.max)
        )
    }

    fn plan_queue(&self, s: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stdout = if s.inbound { "sent upstream" } else { "logged" };
        writeln!(
            f,
            "  queue          {} records or {}, on_slow {}; its stdout is {stdout}",
            s.buffer,
            size(s.buffer_bytes),
            on_slow(s.on_slow)
        )
    }
}

impl SinkType for Exec {
    const NAME: &'static str = "exec";
    const SHARED: Shared = Shared {
        buffer: Buffer::Records,
        buffer_bytes: true,
        on_slow: Some(SlowRule {
            default: OnSlow::Block,
            no_disconnect: Some("an exec sink has one program to write to, not clients to disconnect: use \"block\" or \"drop\""),
        }),
        max_block: true,
        listener: false,
        // A program's output is sent upstream only when asked for: a legacy tool's chatter
        // is logged instead.
        inbound: Inbound::Off,
    };
    type Keys = ExecKeys;
    type Settings = ExecSettings;

    /// Its `command` and `restart`.
    fn validate(s: ExecKeys, check: &mut SinkCheck<'_, '_>) -> Option<ExecSettings> {
        let restart = match &s.restart {
            Some(r) => {
                let key = check.key("restart");
                restart(check, r, &key)
            }
            None => Some(RestartPolicy::default()),
        };
        let command: Vec<String> = match &s.command {
            Some(c) => c.get_ref().iter().map(|a| a.get_ref().clone()).collect(),
            None => Vec::new(),
        };
        if command.first().is_none_or(|program| program.is_empty()) {
            let span = s.command.as_ref().map_or(check.type_span(), Spanned::span);
            check.error(
                Some(span),
                Some(check.key("command")),
                "an exec sink needs `command`, the program and its arguments, such as [\"/usr/local/bin/tool\", \"--stdin\"]".into(),
            );
            return None;
        }
        Some(ExecSettings {
            command,
            restart: restart?,
        })
    }
}

impl SinkComponent for Exec {
    fn bind(_: &SinkConfig, _: &ExecSettings) -> Result<BoundSink, SinkError> {
        Ok(BoundSink::new(|ctx| async move {
            super::run(ctx).await;
            Ok(())
        }))
    }
}

fn restart(
    check: &mut SinkCheck<'_, '_>,
    r: &Spanned<RawRestart>,
    key: &str,
) -> Option<RestartPolicy> {
    let raw = r.get_ref();
    let mut policy = RestartPolicy::default();
    let before = check.error_count();
    if let Some(initial) = &raw.initial {
        policy.initial = check
            .nonzero_duration(initial, &format!("{key}.initial"))
            .unwrap_or_default();
    }
    if let Some(max) = &raw.max {
        policy.max = check
            .nonzero_duration(max, &format!("{key}.max"))
            .unwrap_or_default();
    }
    if check.error_count() > before {
        return None;
    }
    if policy.initial > policy.max {
        let span = raw.max.as_ref().or(raw.initial.as_ref()).map(Spanned::span);
        check.error(
            span,
            Some(format!("{key}.max")),
            format!(
                "is shorter than initial ({}); the delay grows from initial up to max",
                crate::duration::human(policy.initial)
            ),
        );
        return None;
    }
    Some(policy)
}
