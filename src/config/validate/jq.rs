//! Validation of a jq program written in the config (a sink's `filter`, an upstream's
//! `reply`): compiled here, so that a mistake in it is reported at its line and column.

use toml::Spanned;

use super::Validator;
use crate::jq::Program;

impl Validator<'_> {
    /// Compiles the jq program at `key`; a compile error is reported at the offending
    /// character and gives `Err(())`.
    pub(super) fn jq_program(
        &mut self,
        text: &Spanned<String>,
        key: String,
    ) -> Result<Program, ()> {
        match Program::compile(text.get_ref()) {
            Ok(program) => Ok(program),
            Err(e) => {
                // Point at the character itself when the program is written as it is
                // (a literal string, or a basic one without escapes); else at the string.
                let span = text.span();
                let written = self.text.get(span.clone()).unwrap_or_default();
                let start = match (written.find(text.get_ref().as_str()), e.offset) {
                    (Some(at), Some(offset)) => span.start + at + offset,
                    _ => span.start,
                };
                self.error(
                    Some(start..start + 1),
                    Some(key),
                    format!("the jq program does not compile: {}", e.message),
                );
                Err(())
            }
        }
    }
}
