//! A text message's payload: bytes that are UTF-8, kept as bytes.
//!
//! A text frame is checked as UTF-8 once, by tungstenite as it arrives. Its payload is then
//! usually copied out of tungstenite's buffer (see the upstream's arena), and `Utf8Bytes`
//! can only be made from a copy by checking it again: over a whole message, on every
//! message. `Text` is made only from a `str`, a `Utf8Bytes` or a copy of one, so it holds
//! UTF-8 by construction, and the encoders need nothing else: they work on its bytes.

use std::borrow::Cow;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Bytes that are UTF-8 (see the module's doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// `copy`, a copy of `text`'s bytes: UTF-8 as `text` is.
    pub(crate) fn copy_of(text: &Utf8Bytes, copy: Bytes) -> Text {
        debug_assert_eq!(copy.as_ref(), text.as_bytes());
        Text(copy)
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text as a `str`. Always borrowed: a `Text` is UTF-8 (a replacement character
    /// would stand for bytes that were not).
    pub fn to_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Text> for Bytes {
    fn from(text: Text) -> Bytes {
        text.0
    }
}

impl From<Utf8Bytes> for Text {
    fn from(text: Utf8Bytes) -> Text {
        Text(text.into())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(text.into())
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_reads_as_the_text_it_copies() {
        let original = Utf8Bytes::from("prix: 1,5 €");
        let copy = Text::copy_of(&original, Bytes::copy_from_slice(original.as_bytes()));
        assert_eq!(copy.to_str(), "prix: 1,5 €");
        assert!(matches!(copy.to_str(), Cow::Borrowed(_)));
        assert_eq!(copy, Text::from("prix: 1,5 €"));
        assert_eq!(copy.len(), "prix: 1,5 €".len());
    }
}
