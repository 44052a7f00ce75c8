//! `decompress`: inflating binary messages that the application compressed (gzip, zlib or
//! raw deflate; not `permessage-deflate`, which tungstenite would handle in the protocol).
//!
//! Inflating is bounded while it runs: output is read in chunks through `take(limit + 1)`,
//! so a small message that would inflate to gigabytes costs at most `limit + 1` bytes of
//! memory and is refused.

use std::io::Read;

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use crate::config::Decompress;

/// Why a message could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    /// Larger than the limit once inflated.
    #[error("a binary message of {compressed} bytes inflates to more than max_message_size ({limit} bytes); it was dropped (raise max_message_size if such messages are expected)")]
    TooBig {
        /// Its size as received.
        compressed: usize,
        /// max_message_size.
        limit: usize,
    },
    /// Not valid data of that format.
    #[error("a binary message of {compressed} bytes is not valid {format} data ({reason}); it was dropped (check decompress)")]
    Corrupt {
        /// Its size as received.
        compressed: usize,
        /// What it was read as.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
}

/// The format `kind` means for `data` (for `auto`: by its first bytes).
fn detect(kind: Decompress, data: &[u8]) -> Decompress {
    if kind != Decompress::Auto {
        return kind;
    }
    match data {
        [0x1f, 0x8b, ..] => Decompress::Gzip,
        // RFC 1950: method 8 (deflate), a window of at most 32 KiB, and a check value that
        // makes the first two bytes a multiple of 31.
        [cmf, flg, ..]
            if cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 =>
        {
            Decompress::Zlib
        }
        _ => Decompress::Deflate,
    }
}

/// Inflates `data` as `kind` (not [`Decompress::None`]) into at most `limit` bytes.
pub fn inflate(kind: Decompress, data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let format = detect(kind, data);
    let reader: Box<dyn Read + '_> = match format {
        Decompress::Gzip => Box::new(MultiGzDecoder::new(data)),
        Decompress::Zlib => Box::new(ZlibDecoder::new(data)),
        _ => Box::new(DeflateDecoder::new(data)),
    };
    // Reserve for a typical ratio, not for the limit: most messages are far smaller.
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit) + 1);
    let read = reader.take(limit as u64 + 1).read_to_end(&mut out);
    if let Err(e) = read {
        return Err(InflateError::Corrupt {
            compressed: data.len(),
            format: format.as_str(),
            reason: e.to_string(),
        });
    }
    if out.len() > limit {
        return Err(InflateError::TooBig {
            compressed: data.len(),
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    use super::*;

    fn compress(kind: Decompress, data: &[u8]) -> Vec<u8> {
        let level = Compression::default();
        match kind {
            Decompress::Gzip => {
                let mut e = GzEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Decompress::Zlib => {
                let mut e = ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => {
                let mut e = DeflateEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    #[test]
    fn each_format_inflates_as_itself_and_auto_tells_them_apart() {
        let text = br#"{"ch":"market.btcusdt.trade","tick":{"price":1.5}}"#.repeat(20);
        for kind in [Decompress::Gzip, Decompress::Zlib, Decompress::Deflate] {
            let packed = compress(kind, &text);
            assert_eq!(detect(Decompress::Auto, &packed), kind, "{kind:?}");
            assert_eq!(inflate(kind, &packed, 1 << 20).unwrap(), &text[..]);
            assert_eq!(
                inflate(Decompress::Auto, &packed, 1 << 20).unwrap(),
                &text[..]
            );
        }
    }

    #[test]
    fn the_limit_holds_while_inflating_and_corrupt_data_is_named() {
        let zeros = vec![0u8; 4 << 20];
        let bomb = compress(Decompress::Gzip, &zeros);
        let e = inflate(Decompress::Gzip, &bomb, 64 << 10).unwrap_err();
        assert!(
            matches!(e, InflateError::TooBig { limit: 65536, .. }),
            "{e}"
        );
        assert_eq!(
            inflate(Decompress::Gzip, &bomb, 4 << 20).unwrap().len(),
            4 << 20
        );
        let e = inflate(Decompress::Zlib, b"\x78\x9cnot zlib at all", 1024).unwrap_err();
        assert!(e.to_string().contains("not valid zlib data"), "{e}");
    }
}
