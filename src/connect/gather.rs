//! Lines gathered for one vectored write to stdout: small ones encoded into a buffer, large
//! payloads that are their own line ([`Encoding::verbatim`]) written from where they are.
//!
//! Copying a payload of a few KiB into a buffer only to write the buffer costs as much as
//! everything else done for it. A large payload is held instead (a reference to the bytes
//! the connection read), and one `writev` takes the buffer's pieces and the payloads in
//! order: the kernel copies them once, or not at all for /dev/null.

use std::io::{self, IoSlice};

use bytes::Bytes;

use crate::record::{Encoding, Event, EventKind, LineEnd};

/// A payload this large whose line is the payload as it is goes by reference.
const BY_REFERENCE_FROM: usize = 1024;
/// At most this many payloads by reference in one write: with the buffer's pieces between
/// them, within the kernel's limit of 1,024 pieces per `writev`.
const MAX_REFERENCES: usize = 500;

/// The lines of one write, in order.
#[derive(Debug, Default)]
pub(super) struct Gather {
    /// Encoded lines, and the newlines after payloads held by reference.
    buffer: Vec<u8>,
    /// Payloads held by reference, each with the length of `buffer` when it came: the part
    /// of the buffer written before it.
    payloads: Vec<(usize, Bytes)>,
    /// Bytes of the payloads held.
    held: usize,
}

impl Gather {
    /// A gather whose buffer starts with room for `capacity` bytes.
    pub(super) fn with_capacity(capacity: usize) -> Gather {
        Gather {
            buffer: Vec::with_capacity(capacity),
            ..Gather::default()
        }
    }

    /// Appends the line of `event` (if `encoding` writes one).
    pub(super) fn push(&mut self, upstream: &str, event: &Event, encoding: Encoding) {
        // The size first: `verbatim` looks for line breaks, which `encode` does again.
        let end = (event.payload_len() >= BY_REFERENCE_FROM)
            .then(|| encoding.verbatim(event))
            .flatten()
            .map(|(_, end)| end);
        let payload = match (&event.kind, end) {
            (EventKind::Text { data, .. }, Some(end)) => Some((Bytes::from(data.clone()), end)),
            (EventKind::Binary { data, .. }, Some(end)) => Some((data.clone(), end)),
            _ => None,
        };
        match payload {
            Some((payload, end)) => {
                self.held += payload.len();
                self.payloads.push((self.buffer.len(), payload));
                if end == LineEnd::Newline {
                    self.buffer.push(b'\n');
                }
            }
            None => {
                encoding.encode(upstream, event, &mut self.buffer);
            }
        }
    }

    /// Bytes gathered, in the buffer and held by reference.
    pub(super) fn len(&self) -> usize {
        self.buffer.len() + self.held
    }

    /// The buffer's own bytes (what gathering copied).
    pub(super) fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The encoded lines (all of it when nothing is held by reference).
    pub(super) fn buffer(&self) -> &[u8] {
        &self.buffer
    }

    /// No more payloads fit in one write.
    pub(super) fn full(&self) -> bool {
        self.payloads.len() >= MAX_REFERENCES
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces to write, in order.
    pub(super) fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(2 * self.payloads.len() + 1);
        let mut written = 0;
        for (before, payload) in &self.payloads {
            if *before > written {
                slices.push(IoSlice::new(&self.buffer[written..*before]));
                written = *before;
            }
            slices.push(IoSlice::new(payload));
        }
        if written < self.buffer.len() {
            slices.push(IoSlice::new(&self.buffer[written..]));
        }
        slices
    }

    /// Empties it, giving back a buffer grown past `keep` (by one large line).
    pub(super) fn clear(&mut self, keep: usize) {
        self.buffer.clear();
        if self.buffer.capacity() > keep {
            self.buffer = Vec::with_capacity(keep.min(64 << 10));
        }
        self.payloads.clear();
        self.held = 0;
    }
}

/// Writes all of `slices` with `write` (one vectored write, more when it takes less).
pub(super) fn write_all_with(
    mut slices: &mut [IoSlice<'_>],
    mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<()> {
    while !slices.is_empty() {
        match write(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
