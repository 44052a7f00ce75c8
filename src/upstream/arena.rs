//! Where small payloads are copied as soon as tungstenite hands them out.
//!
//! A payload tungstenite hands out shares the block it was read into with the payloads read
//! with it. While any of them is held (a batch waiting for its sinks), tungstenite cannot
//! reuse that block and allocates a fresh one for its next read: one allocation per read
//! buffer, freed in bursts as batches are written, which the C allocator answers by giving
//! the memory back to the kernel and faulting it in again. A small payload copied out at once
//! lets tungstenite's buffer be reused in place; the copies go into blocks of ours that are
//! used again once their batches are written, so a stream allocates nothing as it flows.
//!
//! A text short enough to sit inside its event is kept there instead ([`crate::record::Text`]).
//!
//! Blocks are large while messages stream and small otherwise, and an [`Arena::idle`]
//! connection keeps no large block, so 10,000 idle upstreams stay small.

use bytes::{Bytes, BytesMut};

/// Payloads smaller than this are copied; a larger one has a block of tungstenite's to itself.
pub(super) const COPY_BELOW: usize = 16 << 10;
/// The block while messages stream: two hold a full batch each (a batch is at most
/// `MAX_BATCH_BYTES`), one being filled while the other is written.
const STREAM_BLOCK: usize = 512 << 10;
/// The block of a trickle.
const TRICKLE_BLOCK: usize = 16 << 10;

/// Blocks that copied payloads live in: the one being filled and the one filled before.
#[derive(Debug)]
pub(super) struct Arena {
    current: BytesMut,
    previous: BytesMut,
    block: usize,
}

impl Default for Arena {
    fn default() -> Arena {
        Arena {
            current: BytesMut::new(),
            previous: BytesMut::new(),
            block: TRICKLE_BLOCK,
        }
    }
}

impl Arena {
    /// A copy of `payload`, or `None` when it is too large to be worth one.
    pub(super) fn copy(&mut self, payload: &[u8]) -> Option<Bytes> {
        if payload.len() >= COPY_BELOW {
            return None;
        }
        if self.current.capacity() < payload.len() {
            self.next_block();
        }
        self.current.extend_from_slice(payload);
        Some(self.current.split().freeze())
    }

    /// Moves on to the previous block if everything copied into it is gone (written by the
    /// sinks), else to a new one.
    fn next_block(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        if !self.current.try_reclaim(self.block) {
            self.current = BytesMut::with_capacity(self.block);
        }
    }

    /// Messages are streaming: the next blocks are large.
    pub(super) fn streaming(&mut self) {
        self.block = STREAM_BLOCK;
    }

    /// The connection went quiet: large blocks are let go (their payloads keep what they
    /// need until written), the next ones are small.
    pub(super) fn idle(&mut self) {
        if self.block != TRICKLE_BLOCK {
            self.block = TRICKLE_BLOCK;
            *self = Arena::default();
        }
    }

    /// The memory this arena holds on to, beyond what payloads hold.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.current.capacity() + self.previous.capacity()
    }
}

#[cfg(test)]
mod tests;
