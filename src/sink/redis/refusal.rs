//! What a Redis error means for a record: the client's error kinds and the server's codes,
//! not the text of the message, decide whether an entry was refused for good, may pass on a
//! later attempt, or was refused for an ID at or below the stream's top.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// What an error answered to one `XADD` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The ID is not above the stream's top entry: added before by an attempt whose reply
    /// was lost, or another client moved the stream past it. Only the entry at that ID tells.
    IdTooSmall,
    /// Not added, and may be on a later attempt (out of memory, loading, a failover).
    Transient,
    /// Not added, and will not be (a key of another type, a command the server refuses).
    Permanent,
}

/// Codes without a [`ServerErrorKind`] of their own that mean "not now".
const TRANSIENT_CODES: [&str; 4] = ["OOM", "BUSY", "MISCONF", "NOREPLICAS"];

/// Classifies the error answered to one `XADD` of a pipeline.
pub fn classify(e: &RedisError) -> Refusal {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError) if is_id_too_small(e) => {
            Refusal::IdTooSmall
        }
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::ReadOnly,
        ) => Refusal::Transient,
        _ if e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c)) => Refusal::Transient,
        // No answer of the server's own: the entry's fate is unknown, as for a lost reply.
        _ if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Refusal::Transient,
        _ => Refusal::Permanent,
    }
}

/// Whether `e` is Redis's refusal of an explicit `XADD` ID at or below the stream's top.
/// Redis gives it the generic code `ERR` and the client no kind of its own, so the server's
/// message detail is what tells it apart from the other `ERR`s.
fn is_id_too_small(e: &RedisError) -> bool {
    e.detail().is_some_and(|d| d.contains("equal or smaller"))
}

/// Whether `e` is `XINFO STREAM`'s answer for a key that does not exist (`ERR no such key`:
/// like the refusal above, a generic code whose detail is the only difference).
pub fn is_no_such_key(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
        && e.detail().is_some_and(|d| d.starts_with("no such key"))
}

/// Whether `e` is the answer for a key that holds another type than a stream.
pub fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_string(), Some(detail.to_string()))
    }

    #[test]
    fn codes_decide_not_the_whole_text() {
        assert_eq!(
            classify(&server_error(
                "OOM",
                "command not allowed when used memory > 'maxmemory'."
            )),
            Refusal::Transient
        );
        assert_eq!(
            classify(&server_error(
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value"
            )),
            Refusal::Permanent
        );
        // An extension error that merely mentions the words is not the ID refusal.
        assert_eq!(
            classify(&server_error("NOPERM", "equal or smaller")),
            Refusal::Permanent
        );
        assert!(is_wrong_type(&server_error("WRONGTYPE", "x")));
    }
}
