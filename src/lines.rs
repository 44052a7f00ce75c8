//! Bounded line framing for inbound lines (sink clients and `connect`'s stdin).
//!
//! Unlike `LinesCodec`, an overlong or non-UTF-8 line is an item, not a stream error, so one
//! bad line gets one error reply and the connection carries on with the next line.

use bytes::{Buf, BytesMut};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::codec::Decoder;

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line without its `\n` (and without a trailing `\r`), sharing the read buffer's
    /// memory (it goes out as a text message without a copy).
    Text(Utf8Bytes),
    /// A line longer than the limit; it is discarded up to its newline.
    TooLong,
    /// A line that is not UTF-8; it is discarded.
    NotUtf8,
}

/// The decoder.
#[derive(Debug)]
pub struct BoundedLines {
    max: usize,
    /// Bytes already scanned for a newline.
    scanned: usize,
    /// Inside an overlong line that was already reported.
    discarding: bool,
}

impl BoundedLines {
    /// Lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        BoundedLines {
            max,
            scanned: 0,
            discarding: false,
        }
    }

    fn take_line(&mut self, buf: &mut BytesMut, end: usize) -> Option<Line> {
        let mut line = buf.split_to(end + 1);
        self.scanned = 0;
        if std::mem::take(&mut self.discarding) {
            return None;
        }
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        Some(frame(line, self.max))
    }
}

fn frame(line: BytesMut, max: usize) -> Line {
    if line.len() > max {
        return Line::TooLong;
    }
    match Utf8Bytes::try_from(line.freeze()) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::NotUtf8,
    }
}

impl Decoder for BoundedLines {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        loop {
            match memchr::memchr(b'\n', &buf[self.scanned..]) {
                Some(offset) => {
                    let end = self.scanned + offset;
                    match self.take_line(buf, end) {
                        Some(line) => return Ok(Some(line)),
                        None => continue, // the tail of an overlong line
                    }
                }
                // One byte over the limit may be the `\r` of a `\r\n` still on its way.
                None if buf.len() > self.max + 1
                    || (buf.len() == self.max + 1 && buf.last() != Some(&b'\r')) =>
                {
                    // No newline within the limit: report once, then drop bytes as they come.
                    buf.advance(buf.len());
                    self.scanned = 0;
                    if !self.discarding {
                        self.discarding = true;
                        return Ok(Some(Line::TooLong));
                    }
                    return Ok(None);
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        // A last line without a newline still counts.
        if buf.is_empty() || std::mem::take(&mut self.discarding) {
            buf.clear();
            return Ok(None);
        }
        let line = buf.split_to(buf.len());
        self.scanned = 0;
        Ok(Some(frame(line, self.max)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
        let mut codec = BoundedLines::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                out.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.into())
    }

    #[test]
    fn splits_lines_across_chunks_and_strips_cr() {
        let lines = decode_all(100, &[b"ab", b"c\r\nde", b"f\n", b"tail"]);
        assert_eq!(lines, vec![text("abc"), text("def"), text("tail")]);
    }

    #[test]
    fn overlong_line_is_reported_once_and_the_next_line_survives() {
        let long = vec![b'x'; 50];
        let lines = decode_all(10, &[&long, &long, b"xx\nok\n"]);
        assert_eq!(lines, vec![Line::TooLong, text("ok")]);
    }

    #[test]
    fn overlong_line_with_newline_in_one_chunk() {
        let lines = decode_all(3, &[b"abcdef\nok\n"]);
        assert_eq!(lines, vec![Line::TooLong, text("ok")]);
    }

    #[test]
    fn invalid_utf8_is_an_item_not_an_error() {
        let lines = decode_all(10, &[b"\xff\xfe\nok\n"]);
        assert_eq!(lines, vec![Line::NotUtf8, text("ok")]);
    }
}
