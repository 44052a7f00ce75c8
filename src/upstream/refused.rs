//! How long to wait after a server refused the handshake with an HTTP status: a server
//! that said 401, 403 or 404 will not change its mind in half a second, and one that said
//! 429 or 503 usually says when to come back (`Retry-After`).

use std::time::{Duration, SystemTime};

use tokio_tungstenite::tungstenite::http::{header, HeaderMap};

/// The longest `Retry-After` honoured: a server asking for more is probably misconfigured,
/// and the feed should not stay down for a day on its word.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The delay before the next attempt after a refusal with `status`, or `None` for the normal
/// backoff: `reconnect.max` (`max`) for 401/403/404, `Retry-After` (capped at
/// [`MAX_RETRY_AFTER`]) for 429/503 when the server sent one.
pub fn delay(status: u16, retry_after: Option<Duration>, max: Duration) -> Option<Duration> {
    match status {
        401 | 403 | 404 => Some(max),
        429 | 503 => retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
        _ => None,
    }
}

/// `Retry-After` as a delay from `now`: delay-seconds or an HTTP date (a date in the past is
/// zero). `None` when absent or unreadable.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(MAX_RETRY_AFTER.as_secs())));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(retry_after(&headers("2"), now), secs(2));
        assert_eq!(retry_after(&headers(" 120 "), now), secs(120));
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2026 07:28:30 GMT"), now),
            secs(30)
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2026 07:00:00 GMT"), now),
            secs(0),
            "a date in the past: at once"
        );
        assert_eq!(retry_after(&headers("999999999"), now), secs(3600));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn refusals_wait_by_status() {
        let max = Duration::from_secs(60);
        let two = Some(Duration::from_secs(2));
        for status in [401, 403, 404] {
            assert_eq!(delay(status, two, max), Some(max), "{status}");
        }
        assert_eq!(delay(429, two, max), two);
        assert_eq!(delay(503, two, max), two);
        assert_eq!(
            delay(429, None, max),
            None,
            "no Retry-After: normal backoff"
        );
        assert_eq!(
            delay(503, Some(Duration::from_secs(86_400)), max),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(delay(500, two, max), None);
        assert_eq!(delay(400, None, max), None);
    }
}
