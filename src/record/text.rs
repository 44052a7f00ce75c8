//! A text message's payload: bytes that are UTF-8, kept as bytes.
//!
//! A text frame is checked as UTF-8 once, by tungstenite as it arrives. Its payload is then
//! usually copied out of tungstenite's buffer (see the upstream's arena), and `Utf8Bytes`
//! can only be made from a copy by checking it again: over a whole message, on every
//! message. `Text` is made only from a `str`, a `Utf8Bytes` or a copy of one, so it holds
//! UTF-8 by construction, and the encoders need nothing else: they work on its bytes.
//!
//! A text of up to [`INLINE`] bytes (a cache line) is kept inside the event itself. A shared
//! `Bytes` costs an atomic increment when it is made and a decrement when it is dropped, per
//! message; for the small messages of a busy feed, those two were more than the copy.

use std::borrow::Cow;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Texts up to this many bytes are kept inline.
pub const INLINE: usize = 64;

/// Bytes that are UTF-8 (see the module's doc).
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Shared(Bytes),
    Inline { len: u8, bytes: [u8; INLINE] },
}

impl Text {
    /// `copy`, a copy of `text`'s bytes: UTF-8 as `text` is.
    pub(crate) fn copy_of(text: &Utf8Bytes, copy: Bytes) -> Text {
        debug_assert_eq!(copy.as_ref(), text.as_bytes());
        Text(Repr::Shared(copy))
    }

    /// `text` copied inline, if it is short enough.
    pub(crate) fn inline(text: &str) -> Option<Text> {
        let len = u8::try_from(text.len())
            .ok()
            .filter(|&n| usize::from(n) <= INLINE)?;
        let mut bytes = [0; INLINE];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Text(Repr::Inline { len, bytes }))
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared(bytes) => bytes,
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
        }
    }

    /// The text as a `str`. Always borrowed: a `Text` is UTF-8 (a replacement character
    /// would stand for bytes that were not).
    pub fn to_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

impl From<Text> for Bytes {
    fn from(text: Text) -> Bytes {
        match text.0 {
            Repr::Shared(bytes) => bytes,
            Repr::Inline { .. } => Bytes::copy_from_slice(text.as_bytes()),
        }
    }
}

impl From<Utf8Bytes> for Text {
    fn from(text: Utf8Bytes) -> Text {
        Text(Repr::Shared(text.into()))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::inline(&text).unwrap_or_else(|| Text(Repr::Shared(text.into())))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text::inline(text)
            .unwrap_or_else(|| Text(Repr::Shared(Bytes::copy_from_slice(text.as_bytes()))))
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
        assert_eq!(copy.len(), "prix: 1,5 €".len());
    }

    #[test]
    fn inline_and_shared_texts_of_the_same_bytes_are_equal() {
        let short = "x".repeat(INLINE);
        let inline = Text::inline(&short).expect("fits");
        let shared = Text::from(Utf8Bytes::from(short.clone()));
        assert_eq!(inline, shared);
        assert_eq!(inline.as_bytes(), short.as_bytes());
        assert_eq!(Bytes::from(inline), Bytes::from(shared));
        assert!(Text::inline(&"x".repeat(INLINE + 1)).is_none());
        let long = Text::from("é".repeat(INLINE));
        assert_eq!(long.to_str(), "é".repeat(INLINE));
        assert!(Text::from("").is_empty());
    }
}
