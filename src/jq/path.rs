//! Programs that are a plain path of keys (`.u`, `.data.E`): their value read straight from
//! the JSON text, without building the whole document as jq values.
//!
//! The feed checks run such a program on every message. Reading the document into jq's
//! values allocates for every key and value in it; here the text is scanned once, keys
//! compared where they lie, everything else skipped, and only the value found is read. When
//! the path is not there as plain objects (a key missing, an array, text that is not one
//! JSON document), the caller runs the program as jq would: the answer is always jq's.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The keys of a plain path program, or `None` for any other program.
pub(super) fn keys_of(source: &str) -> Option<Box<[Box<str>]>> {
    let source = source.trim();
    let rest = source.strip_prefix('.')?;
    let keys: Vec<Box<str>> = rest.split('.').map(Box::from).collect();
    let plain = |key: &str| {
        let mut chars = key.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    keys.iter().all(|k| plain(k)).then(|| keys.into())
}

/// The text of the value at `keys` in the JSON document `json`, if every step is an object
/// holding the key (the last of duplicates, as jq reads them) and the document is valid.
pub(super) fn value_at<'j>(json: &'j [u8], keys: &[Box<str>]) -> Option<&'j RawValue> {
    let mut reader = serde_json::Deserializer::from_slice(json);
    let found = Path { keys }.deserialize(&mut reader).ok()?;
    reader.end().ok()?;
    found
}

/// Reads one object level of the path.
struct Path<'k> {
    keys: &'k [Box<str>],
}

impl<'de, 'k> DeserializeSeed<'de> for Path<'k> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de, 'k> Visitor<'de> for Path<'k> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let Some((key, rest)) = self.keys.split_first() else {
            return Ok(None);
        };
        let mut found = None;
        while let Some(matched) = map.next_key_seed(Key(key))? {
            if !matched {
                map.next_value::<IgnoredAny>()?;
            } else if rest.is_empty() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                found = map.next_value_seed(Path { keys: rest })?;
            }
        }
        Ok(found)
    }

    // Anything but an object: read to its end (so the document is checked whole), no value.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether the next key is the one wanted, compared where it lies.
struct Key<'k>(&'k str);

impl<'de, 'k> DeserializeSeed<'de> for Key<'k> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<bool, D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'de, 'k> Visitor<'de> for Key<'k> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests;
