//! jq programs (the jaq crates): compiled once when the config is loaded, run per value.
//!
//! A sink's `filter` and an upstream's `reply` share this module. [`Program::compile`] turns
//! the text into a program or a [`CompileError`] pointing at the offending character, so the
//! config can report it at its line and column. [`Program::run`] gives every output of one
//! input, or the first runtime error as a value ([`RunError`]): a program that fails on one
//! record never stops the caller, who counts and goes on.
//!
//! Values are jaq's own ([`Value`]); [`parse_json`] reads JSON text into one, and
//! [`write_compact`] writes one as compact JSON.

mod path;

use std::fmt;
use std::sync::Arc;

use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};

/// A JSON value as jq programs see it.
pub use jaq_json::Val as Value;

/// What programs run on: plain values, no global data (no `input`, no `$ENV`).
type Data = JustLut<Value>;

/// Outputs of one input, at most: a program like `repeat(.)` must not fill memory.
pub const MAX_OUTPUTS: usize = 1024;

/// A compiled jq program; cheap to clone and shared by every task that runs it.
///
/// Two programs are equal when their text is: the supervisor compares configs on reload.
#[derive(Clone)]
pub struct Program {
    source: Arc<str>,
    filter: Arc<jaq_core::Filter<Data>>,
    /// The keys, when the program is a plain path of them ([`path`]).
    keys: Option<Arc<[Box<str>]>>,
}

/// Why a program does not compile: what is wrong, and where in the program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// Byte offset in the program's text, when the error has a place.
    pub offset: Option<usize>,
    /// What is wrong, with the line and column in the program.
    pub message: String,
}

/// Why a program failed on one input (jq's `error`, a type error, `halt`, too many outputs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

impl Program {
    /// Parses and compiles `source` with jq's standard library.
    pub fn compile(source: &str) -> Result<Program, CompileError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errors| load_error(source, errors))?;
        let filter = Compiler::<_, Data>::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let undefined = errors.into_iter().flat_map(|(_, e)| e).next();
                match undefined {
                    Some((name, kind)) => located(
                        source,
                        name,
                        format!("undefined {} `{name}`", kind.as_str()),
                    ),
                    None => located(source, "", "the program does not compile".into()),
                }
            })?;
        Ok(Program {
            source: source.into(),
            filter: Arc::new(filter),
            keys: path::keys_of(source).map(Arc::from),
        })
    }

    /// The program's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The output of a plain path program (`.u`, `.data.E`) on the JSON text `json`, read
    /// straight from the text, when the path is there as plain objects. `None` says nothing
    /// about the output: run the program on the parsed document then ([`path`]).
    pub fn path_value(&self, json: &[u8]) -> Option<Value> {
        let raw = path::value_at(json, self.keys.as_deref()?)?;
        parse_json(raw.get().as_bytes())
    }

    /// Runs the program on `input`, handing each output to `out` as it comes; stops at the
    /// first error (outputs already handed over stay with the caller, who may discard them).
    pub fn run(&self, input: Value, mut out: impl FnMut(Value)) -> Result<(), RunError> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        for (n, item) in self.filter.id.run((ctx, input)).enumerate() {
            if n == MAX_OUTPUTS {
                return Err(RunError(format!(
                    "more than {MAX_OUTPUTS} outputs for one input; the rest are discarded"
                )));
            }
            match item {
                Ok(value) => out(value),
                // Not `jaq_core::unwrap_valr`: it exits the process on `halt`.
                Err(exception) => {
                    return Err(RunError(match exception.get_err() {
                        Ok(error) => message(&error.into_val()),
                        Err(other) => match other.get_halt() {
                            Ok(code) => format!("the program called halt (exit code {code})"),
                            Err(_) => "the program broke out of its control flow".into(),
                        },
                    }))
                }
            }
        }
        Ok(())
    }
}

impl PartialEq for Program {
    fn eq(&self, other: &Program) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Program({:?})", self.source)
    }
}

/// `text` as a value, if it is exactly one JSON value (surrounding whitespace allowed).
pub fn parse_json(text: &[u8]) -> Option<Value> {
    jaq_json::read::parse_single(text).ok()
}

/// Appends `value` as compact JSON (no line break: a string's are escaped).
pub fn write_compact(value: &Value, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = jaq_json::write::write(out, &jaq_json::write::Pp::default(), 0, value);
}

/// An error value as a message: a string as it is (`error("boom")` says boom), else JSON.
fn message(value: &Value) -> String {
    match as_text(value) {
        Some(text) => String::from_utf8_lossy(text).into_owned(),
        None => {
            let mut out = Vec::new();
            write_compact(value, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
    }
}

/// A string value's text, if `value` is a string.
pub fn as_text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::TStr(bytes) => Some(bytes),
        _ => None,
    }
}

/// The first lex or parse error, at its place.
fn load_error(source: &str, errors: load::Errors<&str, ()>) -> CompileError {
    for (_, error) in errors {
        match error {
            load::Error::Lex(lex) => {
                if let Some((expected, at)) = lex.into_iter().next() {
                    return located(source, at, format!("expected {}", expected.as_str()));
                }
            }
            load::Error::Parse(parse) => {
                if let Some((expected, at)) = parse.into_iter().next() {
                    let found = if at.is_empty() {
                        "the end of the program".to_string()
                    } else {
                        format!("`{}`", first_token(at))
                    };
                    return located(
                        source,
                        at,
                        format!("expected {}, found {found}", expected.as_str()),
                    );
                }
            }
            load::Error::Io(_) => return located(
                source,
                "",
                "modules (import, include) are not available; write the definitions in the program"
                    .into(),
            ),
        }
    }
    located(source, "", "the program does not parse".into())
}

/// A short excerpt of what follows an error's place.
fn first_token(rest: &str) -> &str {
    let end = rest
        .char_indices()
        .find(|(i, c)| c.is_whitespace() || *i >= 20)
        .map_or(rest.len(), |(i, _)| i.max(1));
    rest.get(..end).unwrap_or(rest)
}

/// An error at `at`, a slice of `source` (else without a place).
fn located(source: &str, at: &str, message: String) -> CompileError {
    let start = source.as_ptr() as usize;
    let position = at.as_ptr() as usize;
    let offset = (position >= start && position <= start + source.len()).then(|| position - start);
    let message = match offset {
        Some(offset) => {
            let before = &source[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            if line == 1 {
                format!("{message} at column {column} of the program")
            } else {
                format!("{message} at line {line}, column {column} of the program")
            }
        }
        None => message,
    };
    CompileError { offset, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(program: &str, input: &str) -> Result<Vec<String>, RunError> {
        let program = Program::compile(program).expect("compiles");
        let mut lines = Vec::new();
        program.run(parse_json(input.as_bytes()).expect("JSON"), |v| {
            let mut out = Vec::new();
            write_compact(&v, &mut out);
            lines.push(String::from_utf8(out).expect("UTF-8"));
        })?;
        Ok(lines)
    }

    #[test]
    fn runs_with_the_standard_library() {
        assert_eq!(
            outputs(
                r#"select(.a > 1) | {a, b: (.l | map(. * 2))}"#,
                r#"{"a":2,"l":[1,2]}"#
            ),
            Ok(vec![r#"{"a":2,"b":[2,4]}"#.to_string()])
        );
        assert_eq!(outputs("select(.a > 1)", r#"{"a":1}"#), Ok(vec![]));
        assert_eq!(
            outputs(
                r#""\(.ts),\(.data.price)""#,
                r#"{"ts":5,"data":{"price":1.5}}"#
            ),
            Ok(vec![r#""5,1.5""#.to_string()])
        );
        assert_eq!(
            outputs(r#".[] | test("^x")"#, r#"["xa","b"]"#),
            Ok(vec!["true".into(), "false".into()])
        );
    }

    #[test]
    fn runtime_errors_are_values() {
        let error = outputs(".a + 1", r#"{"a":"s"}"#).unwrap_err();
        assert!(error.0.contains("cannot"), "{error}");
        let halted = outputs("halt", "1").unwrap_err();
        assert!(halted.0.contains("halt"), "{halted}");
        let many = outputs("repeat(1)", "1").unwrap_err();
        assert!(many.0.contains("more than"), "{many}");
        assert_eq!(
            outputs(r#"error("boom")"#, "1"),
            Err(RunError("boom".into()))
        );
    }

    #[test]
    fn compile_errors_have_a_place() {
        let e = Program::compile(".a | ").unwrap_err();
        assert_eq!(e.offset, Some(5), "{e}");
        let e = Program::compile("select(.a ==)").unwrap_err();
        assert_eq!(e.offset, Some(12), "{e}");
        assert!(e.message.contains("column 13"), "{e}");
        let e = Program::compile(".a |\n nosuchfn").unwrap_err();
        assert_eq!(e.offset, Some(6), "{e}");
        assert!(e.message.contains("undefined filter `nosuchfn`"), "{e}");
        assert!(e.message.contains("line 2, column 2"), "{e}");
        let e = Program::compile(r#""\q""#).unwrap_err();
        assert!(e.offset.is_some(), "{e}");
        assert!(Program::compile("import \"x\" as x; .").is_err());
    }

    #[test]
    fn programs_are_shared_between_threads() {
        fn shared<T: Send + Sync>(_: &T) {}
        let program = Program::compile(".").unwrap();
        shared(&program);
        assert_eq!(program, Program::compile(".").unwrap());
    }

    #[test]
    fn strings_come_out_as_text_or_json() {
        let v = parse_json(br#""a\nb""#).unwrap();
        assert_eq!(as_text(&v), Some(&b"a\nb"[..]));
        let mut out = Vec::new();
        write_compact(&v, &mut out);
        assert_eq!(out, br#""a\nb""#);
    }
}
