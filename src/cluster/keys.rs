//! The bucket's keys and values: `l.<upstream>.<slot>` for a lease slot, `m.<instance>` for
//! a member's heartbeat; each value a small JSON object naming its holder.

use serde::{Deserialize, Serialize};

use super::spread::Slot;

/// The key of a lease slot.
pub fn slot_key(slot: &Slot) -> String {
    format!("l.{}.{}", encode(&slot.upstream), slot.index)
}

/// The key of a member's heartbeat.
pub fn member_key(instance: &str) -> String {
    format!("m.{}", encode(instance))
}

/// The prefix of every member key.
pub const MEMBER_PREFIX: &str = "m.";

/// What a lease or heartbeat key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The instance holding it.
    pub holder: String,
    /// Random per acquisition: after a write whose answer was lost, the holder recognises
    /// its own value and carries on from its revision.
    pub token: String,
    /// When the holder acquired it (its clock, Unix milliseconds): the lease's age.
    pub since: u64,
}

impl Holder {
    /// The value's bytes.
    pub fn to_bytes(&self) -> bytes::Bytes {
        // A struct of strings and a number always serializes.
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    /// Reads a value; `None` for one that is not ours (it counts as held by nobody known).
    pub fn parse(bytes: &[u8]) -> Option<Holder> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Key tokens take `[-_a-zA-Z0-9]` as they are; anything else (including `.`, which
/// separates tokens) becomes `=XX`, so distinct names give distinct keys.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct() {
        let a = slot_key(&Slot {
            upstream: "a.b".into(),
            index: 0,
        });
        let b = slot_key(&Slot {
            upstream: "a=2Eb".into(),
            index: 0,
        });
        assert_eq!(a, "l.a=2Eb.0");
        assert_ne!(a, b);
        assert_eq!(member_key("host-1.example"), "m.host-1=2Eexample");
    }
}
