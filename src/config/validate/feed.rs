//! Validation of an upstream's feed checks: `sequence`, `on_gap` and `event_time`, each
//! taken from the upstream or else `[defaults]`, the programs compiled at their line.

use toml::Spanned;

use super::transport::pick;
use super::Validator;
use crate::config::raw::RawConnectionSettings;
use crate::config::{FeedChecks, OnGap};
use crate::jq::Program;

impl Validator<'_> {
    /// Resolves the feed checks of the upstream at `key`; `None` if any was invalid (each
    /// error reported).
    pub(super) fn feed_checks(
        &mut self,
        base: &RawConnectionSettings,
        over: &RawConnectionSettings,
        key: &str,
    ) -> Option<FeedChecks> {
        let before = self.errors.len();
        let sequence = pick(&base.sequence, &over.sequence, key, "sequence")
            .and_then(|(text, key, _)| self.feed_program(text, key, ".u"));
        let event_time = pick(&base.event_time, &over.event_time, key, "event_time")
            .and_then(|(text, key, _)| self.feed_program(text, key, ".E"));
        let on_gap = pick(&base.on_gap, &over.on_gap, key, "on_gap");
        // In `[defaults]` it applies to the upstreams that have a `sequence`; written in an
        // upstream without one, it is a mistake worth saying.
        if let (Some((value, key, true)), None) = (&on_gap, &sequence) {
            if *value.get_ref() == OnGap::Reconnect && self.errors.len() == before {
                self.error(
                    Some(value.span()),
                    Some(key.clone()),
                    "has nothing to act on: set `sequence` (a jq program such as '.u') too".into(),
                );
            }
        }
        (self.errors.len() == before).then(|| FeedChecks {
            sequence,
            on_gap: on_gap.map_or(OnGap::Record, |(v, _, _)| *v.get_ref()),
            event_time,
        })
    }

    /// A non-empty program, compiled.
    fn feed_program(
        &mut self,
        text: &Spanned<String>,
        key: String,
        example: &str,
    ) -> Option<Program> {
        if text.get_ref().trim().is_empty() {
            self.error(
                Some(text.span()),
                Some(key),
                format!("is empty: write a jq program such as '{example}', or remove the key"),
            );
            return None;
        }
        self.jq_program(text, key).ok()
    }
}
