//! Segment buffers and codecs kept for the next reader. A segment reader
//! needs a segment's buffer and a Reed-Solomon encoder whose work buffers
//! span the segment's pieces; made fresh for every object, each of those is
//! megabytes of new pages the kernel clears on first touch, and a new
//! encoder zeroes its buffers besides (most of the page faults of an S3
//! endpoint taking many 4 MiB objects). Readers take them from here and
//! give them back when done. What is kept idle is bounded, in bytes and in
//! count; larger ones are freed. The contents never leak from one user to
//! the next: buffers are handed out empty and encoders are reset.

use std::sync::Mutex;

use crate::erasure::{ErasureScheme, SegmentCodec};

/// Buffers larger than this are freed rather than kept.
const BUFFER_MAX: usize = 16 << 20;
/// Capacity of all idle buffers together.
const IDLE_BUFFER_BYTES: usize = 64 << 20;
/// Idle codecs kept (a reader holds one only while it encodes a segment);
/// only those sized for pieces up to `CODEC_SHARD_MAX`.
const IDLE_CODECS: usize = 8;
const CODEC_SHARD_MAX: usize = 2 << 20;

struct Idle {
    buffers: Vec<Vec<u8>>,
    buffer_bytes: usize,
    codecs: Vec<SegmentCodec>,
}

static IDLE: Mutex<Idle> = Mutex::new(Idle { buffers: Vec::new(), buffer_bytes: 0, codecs: Vec::new() });

fn idle() -> std::sync::MutexGuard<'static, Idle> {
    // The lists stay consistent whatever a panicking holder did.
    IDLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty buffer of at least `capacity` bytes: the smallest idle one that
/// fits, or a new one.
pub(crate) fn buffer(capacity: usize) -> Vec<u8> {
    let reused = idle().take_buffer(capacity);
    reused.unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Keeps `buf` for a later [`buffer`] if there is room; frees it otherwise.
pub(crate) fn give_buffer(buf: Vec<u8>) {
    let capacity = buf.capacity();
    if capacity == 0 || capacity > BUFFER_MAX {
        return;
    }
    idle().keep_buffer(buf);
}

impl Idle {
    fn take_buffer(&mut self, capacity: usize) -> Option<Vec<u8>> {
        let fit = self.buffers.iter().enumerate().filter(|(_, b)| b.capacity() >= capacity).min_by_key(|(_, b)| b.capacity());
        let i = fit.map(|(i, _)| i)?;
        let b = self.buffers.swap_remove(i);
        self.buffer_bytes -= b.capacity();
        Some(b)
    }

    fn keep_buffer(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        let capacity = buf.capacity();
        if self.buffer_bytes + capacity > IDLE_BUFFER_BYTES {
            // Room for it if smaller idle ones make way (a workload's
            // current size is the one worth keeping).
            self.buffers.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
            while self.buffer_bytes + capacity > IDLE_BUFFER_BYTES {
                match self.buffers.pop() {
                    Some(b) if b.capacity() < capacity => self.buffer_bytes -= b.capacity(),
                    Some(b) => {
                        self.buffers.push(b);
                        return;
                    }
                    None => return,
                }
            }
        }
        self.buffer_bytes += capacity;
        self.buffers.push(buf);
    }
}

/// A codec for `scheme`: an idle one if any, else a new one.
pub(crate) fn codec(scheme: ErasureScheme) -> Result<SegmentCodec, crate::ErasureError> {
    let mut idle = idle();
    match idle.codecs.iter().position(|c| c.scheme() == scheme) {
        Some(i) => Ok(idle.codecs.swap_remove(i)),
        None => {
            drop(idle);
            SegmentCodec::new(scheme)
        }
    }
}

/// Keeps `codec` for a later [`codec`] if it is small enough and there is
/// room; otherwise hands it back to its giver.
pub(crate) fn give_codec(codec: SegmentCodec) -> Option<SegmentCodec> {
    if codec.shard_bytes_held() > CODEC_SHARD_MAX {
        return Some(codec);
    }
    let mut idle = idle();
    if idle.codecs.len() >= IDLE_CODECS {
        return Some(codec);
    }
    idle.codecs.push(codec);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_comes_back_empty_to_the_smallest_fit_and_idle_ones_stay_within_the_bound() {
        let mut idle = Idle { buffers: Vec::new(), buffer_bytes: 0, codecs: Vec::new() };
        let mut used = Vec::with_capacity(2 << 20);
        used.extend_from_slice(&[7u8; 1000]);
        let (ptr, cap) = (used.as_ptr(), used.capacity());
        idle.keep_buffer(used);
        idle.keep_buffer(Vec::with_capacity(8 << 20));
        assert!(idle.take_buffer(16 << 20).is_none(), "none fits");
        let again = idle.take_buffer(1 << 20).expect("an idle buffer fits");
        assert_eq!((again.as_ptr(), again.capacity(), again.len()), (ptr, cap, 0), "the smallest fit, emptied");
        assert_eq!(idle.buffer_bytes, 8 << 20);
        // Far more than the bound given back: the larger ones stay, within it.
        for mb in [1usize, 2, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8] {
            idle.keep_buffer(Vec::with_capacity(mb << 20));
        }
        assert!(idle.buffer_bytes <= IDLE_BUFFER_BYTES);
        assert_eq!(idle.buffer_bytes, idle.buffers.iter().map(Vec::capacity).sum::<usize>());
        assert!(idle.buffers.iter().all(|b| b.capacity() >= 8 << 20), "small ones made way");
    }
}
