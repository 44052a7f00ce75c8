//! Reading the TOML text into the serde mirror one table at a time, so that a mistake in one
//! table does not hide the mistakes in the others, and every mistake names its key.
//!
//! serde stops at the first error of whatever it deserializes. So the document is parsed
//! into spanned values first; each top-level table and each `[[upstream]]` and `[[sink]]` is
//! deserialized on its own; and when one fails at a key, that key is reported, removed and
//! the table tried again, until it deserializes or fails as a whole (a required key missing).

use std::collections::HashSet;
use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::raw::{RawConfig, RawSink, RawSinkShared};
use super::sink::{SinkCatalog, COMMON_KEYS, OPTIONAL_KEYS};

/// One problem found while reading tables: where, which key, what.
pub(super) struct Problem {
    pub span: Option<Range<usize>>,
    pub key: String,
    pub message: String,
}

/// The mirror of every table that could be read, and what could not.
pub(super) struct Parsed {
    /// Tables with their bad keys removed; a table that could not be read at all is `None`.
    pub raw: RawConfig,
    /// Every problem, a syntax error alone or each bad key of each table.
    pub problems: Vec<Problem>,
    /// The dotted keys that were removed: validation must not report them again as missing.
    pub removed: HashSet<String>,
}

const TOP_LEVEL: [&str; 6] = [
    "daemon", "metrics", "defaults", "upstream", "sink", "cluster",
];

/// Parses `text`; a TOML syntax error is the only problem reported (nothing after it can be
/// trusted), otherwise every table's problems are.
pub(super) fn parse(text: &str, sinks: &dyn SinkCatalog) -> Parsed {
    let mut parsed = Parsed {
        raw: RawConfig::default(),
        problems: Vec::new(),
        removed: HashSet::new(),
    };
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(e) => {
            parsed.problems.push(Problem {
                span: e.span(),
                key: String::new(),
                message: e.message().trim_end().to_string(),
            });
            return parsed;
        }
    };
    for (name, value) in document.get_ref().iter() {
        let name = name.get_ref().as_ref();
        match name {
            "daemon" => {
                if let Some(t) = parsed.table(value, name) {
                    parsed.raw.daemon = t;
                }
            }
            "metrics" => parsed.raw.metrics = parsed.table(value, name),
            "cluster" => parsed.raw.cluster = parsed.table(value, name),
            "defaults" => {
                if let Some(t) = parsed.table(value, name) {
                    parsed.raw.defaults = t;
                }
            }
            "upstream" => {
                for (i, item) in parsed.array(value, name).iter().enumerate() {
                    let upstream = parsed.table(item, &format!("upstream[{i}]"));
                    if upstream.is_none() {
                        // Sinks may name it: its own errors are enough.
                        if let Some(n) = item
                            .get_ref()
                            .get("name")
                            .and_then(|n| n.get_ref().as_str())
                        {
                            parsed.raw.unread_upstream_names.push(n.to_string());
                        }
                    }
                    parsed.raw.upstream.push(upstream);
                }
            }
            "sink" => {
                for (i, item) in parsed.array(value, name).iter().enumerate() {
                    let sink = parsed.sink(item, &format!("sink[{i}]"), sinks);
                    parsed.raw.sink.push(sink);
                }
            }
            _ => parsed.problems.push(Problem {
                span: Some(value.span()),
                key: name.to_string(),
                message: format!(
                    "unknown table or key `{name}`; the top level has {}",
                    TOP_LEVEL.join(", ")
                ),
            }),
        }
    }
    parsed
}

impl Parsed {
    /// The items of `[[name]]`, or none (and a problem) if `name` is not an array of tables.
    fn array<'a, 'i>(
        &mut self,
        value: &'a Spanned<DeValue<'i>>,
        name: &str,
    ) -> &'a [Spanned<DeValue<'i>>] {
        match value.get_ref() {
            DeValue::Array(items) => items,
            _ => {
                self.problems.push(Problem {
                    span: Some(value.span()),
                    key: name.to_string(),
                    message: format!("must be a list of tables: write [[{name}]] on a line of its own above each one's keys"),
                });
                &[]
            }
        }
    }

    /// Deserializes one table, reporting and removing each bad key in turn (see the module doc).
    pub(super) fn table<T: DeserializeOwned>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Option<T> {
        if !value.get_ref().is_table() {
            self.problems.push(Problem {
                span: Some(value.span()),
                key: key.to_string(),
                message: format!("must be a table, not a {}", value.get_ref().type_str()),
            });
            return None;
        }
        let mut value = value.clone();
        let mut removed_here = Vec::new();
        loop {
            let error = match T::deserialize(value.clone().into_deserializer()) {
                Ok(table) => return Some(table),
                Err(e) => e,
            };
            let path = error
                .span()
                .map(|s| key_path(&value, &s))
                .unwrap_or_default();
            let message = match error.message().trim_end() {
                ENUM_TYPE => choices::<T>(&value, &path).unwrap_or_else(|| ENUM_TYPE.into()),
                message => plain_types(message),
            };
            if path.is_empty() {
                // The table as a whole: a required key is missing. If that key was removed
                // above, its problem is already reported.
                let repeated = removed_here
                    .iter()
                    .any(|k: &String| message.starts_with(&format!("missing field `{k}`")));
                if !repeated {
                    self.problems.push(Problem {
                        span: error.span().or(Some(value.span())),
                        key: key.to_string(),
                        message,
                    });
                }
                return None;
            }
            let dotted = format!("{key}.{}", path.join("."));
            self.problems.push(Problem {
                span: error.span(),
                key: dotted.clone(),
                message,
            });
            if !remove(&mut value, &path) {
                return None;
            }
            removed_here.push(path[0].clone());
            self.removed.insert(dotted);
        }
    }
}

impl Parsed {
    /// Reads one `[[sink]]`: `type` first, then the shared keys the type takes into
    /// [`RawSinkShared`] and the rest into the type's own struct. A key the type does not
    /// take is reported and removed first, so serde reports only the values it cannot read.
    fn sink(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        sinks: &dyn SinkCatalog,
    ) -> Option<RawSink> {
        let DeValue::Table(entries) = value.get_ref() else {
            self.problems.push(Problem {
                span: Some(value.span()),
                key: key.to_string(),
                message: format!("must be a table, not a {}", value.get_ref().type_str()),
            });
            return None;
        };
        let names: Vec<String> = sinks
            .entries()
            .iter()
            .map(|e| format!("`{}`", e.name))
            .collect();
        let names = names.join(", ");
        let Some((_, kind)) = entries.iter().find(|(k, _)| k.get_ref() == "type") else {
            self.problems.push(Problem {
                span: Some(value.span()),
                key: key.to_string(),
                message: format!("missing field `type`: one of {names}"),
            });
            return None;
        };
        let tkey = format!("{key}.type");
        let Some(entry) = kind.get_ref().as_str().and_then(|name| sinks.get(name)) else {
            let message = match kind.get_ref().as_str() {
                Some(name) => format!("unknown sink type `{name}`, expected one of {names}"),
                None => format!(
                    "invalid type: {}, expected one of {names}",
                    kind.get_ref().type_str()
                ),
            };
            self.problems.push(Problem {
                span: Some(kind.span()),
                key: tkey.clone(),
                message,
            });
            self.removed.insert(tkey);
            return None;
        };
        let own_fields = (entry.fields)();
        let takes = entry.keys();
        let (mut shared, mut own) = (value.clone(), value.clone());
        for (k, v) in entries.iter() {
            let name: &str = k.get_ref();
            let optional = OPTIONAL_KEYS.iter().find(|(o, _)| *o == name);
            let is_shared = COMMON_KEYS.contains(&name) || optional.is_some();
            if name == "type" || is_shared {
                remove(&mut own, &[name.to_string()]);
            }
            if !is_shared || !takes.contains(&name) {
                remove(&mut shared, &[name.to_string()]);
            }
            if name == "type" || takes.contains(&name) {
                continue;
            }
            // A key of another type, or of none.
            let elsewhere =
                optional.is_some() || sinks.entries().iter().any(|e| (e.fields)().contains(&name));
            let dotted = format!("{key}.{name}");
            let (span, message) = if elsewhere {
                let article = if entry.name.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                (
                    v.span(),
                    format!(
                        "{article} {} sink has no `{name}` key; remove it or change `type`",
                        entry.name
                    ),
                )
            } else {
                let expected: Vec<String> = takes.iter().map(|k| format!("`{k}`")).collect();
                (
                    k.span(),
                    format!(
                        "unknown field `{name}`, expected one of {}",
                        expected.join(", ")
                    ),
                )
            };
            self.problems.push(Problem {
                span: Some(span),
                key: dotted.clone(),
                message,
            });
            remove(&mut own, &[name.to_string()]);
            self.removed.insert(dotted);
        }
        debug_assert!(own_fields.iter().all(|f| takes.contains(f)));
        let shared = self.table::<RawSinkShared>(&shared, key);
        let own = (entry.read)(self, &own, key);
        Some(RawSink {
            kind: Spanned::new(kind.span(), entry.name),
            shared: shared?,
            own: own?,
        })
    }
}

/// The keys leading from `table` to the innermost key whose name or value holds `span`;
/// empty when the span is the table's own (or outside any key).
fn key_path(table: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Vec<String> {
    let DeValue::Table(entries) = table.get_ref() else {
        return Vec::new();
    };
    for (k, v) in entries.iter() {
        let (ks, vs) = (k.span(), v.span());
        let in_key = ks.start <= span.start && span.start < ks.end.max(ks.start + 1);
        let in_value = vs.start <= span.start && span.end <= vs.end && span != &table.span();
        if in_key || in_value {
            let mut path = vec![k.get_ref().to_string()];
            if in_value && v.get_ref().is_table() {
                path.extend(key_path(v, span));
            }
            return path;
        }
    }
    Vec::new()
}

/// What toml says, and nothing more, when a key that takes one of a few words (an enum such
/// as `on_gap` or `on_slow`) has a value of another type.
const ENUM_TYPE: &str = "wanted string or table";

/// For a key at `path` that takes one of a few words but has a value of another type: says
/// which words. They are found by reading the table again with an empty string there, which
/// serde answers with "unknown variant ``, expected …".
fn choices<T: DeserializeOwned>(table: &Spanned<DeValue<'_>>, path: &[String]) -> Option<String> {
    let mut probe = table.clone();
    let slot = value_at(&mut probe, path)?;
    let found = slot.get_ref().type_str();
    *slot.get_mut() = DeValue::String("".into());
    let error = T::deserialize(probe.into_deserializer()).err()?;
    let words = error
        .message()
        .trim_end()
        .strip_prefix("unknown variant ``, expected ")?
        .to_string();
    Some(format!("invalid type: {found}, expected {words}"))
}

/// The value of the key at `path`, if there is one.
fn value_at<'a, 'i>(
    table: &'a mut Spanned<DeValue<'i>>,
    path: &[String],
) -> Option<&'a mut Spanned<DeValue<'i>>> {
    let Some((first, rest)) = path.split_first() else {
        return Some(table);
    };
    let DeValue::Table(entries) = table.get_mut() else {
        return None;
    };
    let value = entries
        .iter_mut()
        .find(|(k, _)| k.get_ref() == first)
        .map(|(_, v)| v)?;
    value_at(value, rest)
}

/// Removes the key at `path`; false if there was none.
fn remove(table: &mut Spanned<DeValue<'_>>, path: &[String]) -> bool {
    let DeValue::Table(entries) = table.get_mut() else {
        return false;
    };
    match path {
        [] => false,
        [last] => entries.remove(last.as_str()).is_some(),
        [first, rest @ ..] => {
            let mut found = false;
            for (k, v) in entries.iter_mut() {
                if k.get_ref() == first {
                    found = remove(v, rest);
                }
            }
            found
        }
    }
}

/// serde names Rust types in type errors; say what to write instead, in TOML's words (an
/// array is no "sequence", which is also a key's name).
fn plain_types(message: &str) -> String {
    message
        .replace("invalid type: sequence,", "invalid type: array,")
        .replace("invalid type: map,", "invalid type: table,")
        .replace("expected i64", "expected a whole number")
        .replace("expected f64", "expected a number such as 2.0")
        .replace("expected a boolean", "expected true or false")
}
