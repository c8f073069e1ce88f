//! A tree level's hashes side by side. Within one level of a piece tree every
//! leaf hash and every node hash is independent of the others, so they go
//! through blake3's multi-input SIMD kernel (up to 16 inputs at once on
//! AVX-512) instead of one `blake3::Hasher` each, which runs a 521-byte leaf
//! through one lane at a time. The bytes hashed and the hashes are exactly
//! those of `merkle::leaf_hash` and `merkle::node_hash`, which the tests
//! check on every path.
//!
//! The kernel is `blake3::platform`, the crate's own unstable interface to
//! its SIMD code: `Cargo.lock` pins the version, and the tests compare every
//! hash with the plain hasher, so a change there fails them, not the ledger.
//!
//! Each input is its full blocks through `hash_many` (flags: chunk start on
//! the first block) and then its last, partial block through
//! `compress_in_place` (chunk end and root): an input under 1 KiB is one
//! blake3 chunk, and its hash is that chunk's root output.

use blake3::IncrementCounter;
use blake3::platform::Platform;
use tessera_types::Hash32;

use crate::merkle::LEAF_BYTES;

/// BLAKE3's initial chaining value (the key words of plain hashing).
const IV: [u32; 8] = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19];
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const ROOT: u8 = 8;
const BLOCK_BYTES: usize = 64;
/// Inputs copied out and hashed per kernel call (32 KiB of leaf blocks).
const BATCH: usize = 64;

/// A leaf's input is `0 || index (8 bytes) || data`; a full leaf's first
/// eight blocks hold the prefix and the first `LEAF_HEAD` bytes of its data,
/// and its last block the rest.
const LEAF_PREFIX: usize = 9;
const LEAF_HEAD: usize = LEAF_BYTES - LEAF_PREFIX;

/// Hashes of the full leaves at the start of `data`, numbered from `first`,
/// appended to `out`; returns how many bytes they covered (a shorter last
/// leaf is left to the caller).
pub(crate) fn full_leaves(first: u64, data: &[u8], out: &mut Vec<Hash32>) -> usize {
    full_leaves_on(Platform::detect(), first, data, out)
}

fn full_leaves_on(platform: Platform, first: u64, data: &[u8], out: &mut Vec<Hash32>) -> usize {
    let full = data.len() / LEAF_BYTES;
    let leaf = |i: usize| &data[i * LEAF_BYTES..][..LEAF_BYTES];
    side_by_side::<LEAF_BYTES>(
        platform,
        full,
        |i, head| {
            head[0] = 0;
            head[1..LEAF_PREFIX].copy_from_slice(&(first + i as u64).to_le_bytes());
            head[LEAF_PREFIX..].copy_from_slice(&leaf(i)[..LEAF_HEAD]);
        },
        |i| &leaf(i)[LEAF_HEAD..],
        out,
    );
    full * LEAF_BYTES
}

/// The level above `below`: pairs hashed, an odd last node promoted.
pub(crate) fn nodes(below: &[Hash32]) -> Vec<Hash32> {
    nodes_on(Platform::detect(), below)
}

fn nodes_on(platform: Platform, below: &[Hash32]) -> Vec<Hash32> {
    let mut out = Vec::with_capacity(below.len().div_ceil(2));
    // A node's input is `1 || left || right`: one full block and the last byte of `right`.
    side_by_side::<BLOCK_BYTES>(
        platform,
        below.len() / 2,
        |i, head| {
            head[0] = 1;
            head[1..33].copy_from_slice(&below[2 * i].0);
            head[33..].copy_from_slice(&below[2 * i + 1].0[..31]);
        },
        |i| &below[2 * i + 1].0[31..],
        &mut out,
    );
    if below.len() % 2 == 1 {
        out.push(below[below.len() - 1]);
    }
    out
}

/// Hashes `count` inputs of one shape, each `N` bytes of full blocks (which
/// `head` writes) followed by a partial last block (`tail`), `BATCH` at a
/// time through the kernel; appends the hashes to `out` in order.
fn side_by_side<'a, const N: usize>(
    platform: Platform,
    count: usize,
    head: impl Fn(usize, &mut [u8; N]),
    tail: impl Fn(usize) -> &'a [u8],
    out: &mut Vec<Hash32>,
) {
    let mut heads = vec![[0u8; N]; BATCH.min(count)];
    let mut cvs = vec![0u8; 32 * heads.len()];
    for start in (0..count).step_by(BATCH) {
        let n = BATCH.min(count - start);
        for (j, h) in heads[..n].iter_mut().enumerate() {
            head(start + j, h);
        }
        let inputs: Vec<&[u8; N]> = heads[..n].iter().collect();
        platform.hash_many(&inputs, &IV, 0, IncrementCounter::No, 0, CHUNK_START, 0, &mut cvs[..32 * n]);
        for j in 0..n {
            out.push(finish(&platform, &cvs[32 * j..][..32], tail(start + j)));
        }
    }
}

/// The root hash of a one-chunk input from the chaining value of its full
/// blocks and its last, partial block `tail`.
fn finish(platform: &Platform, cv_bytes: &[u8], tail: &[u8]) -> Hash32 {
    let mut cv = [0u32; 8];
    for (word, bytes) in cv.iter_mut().zip(cv_bytes.chunks_exact(4)) {
        *word = u32::from_le_bytes(bytes.try_into().expect("four bytes"));
    }
    let mut block = [0u8; BLOCK_BYTES];
    block[..tail.len()].copy_from_slice(tail);
    platform.compress_in_place(&mut cv, &block, tail.len() as u8, 0, CHUNK_END | ROOT);
    let mut hash = [0u8; 32];
    for (bytes, word) in hash.chunks_exact_mut(4).zip(cv) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    Hash32(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, node_hash};

    #[test]
    fn side_by_side_hashes_are_the_plain_hashers() {
        // Every kernel this machine runs; counts around the kernels' widths
        // (4, 8, 16) and the batch size, with and without a short last leaf.
        let mut platforms = vec![Platform::detect(), Platform::portable()];
        #[cfg(target_arch = "x86_64")]
        platforms.extend([Platform::sse2(), Platform::sse41(), Platform::avx2()].into_iter().flatten());
        for platform in platforms {
            for leaves in [0usize, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130] {
                for short in [0usize, 1, 8, 9, 10, 511] {
                    let data: Vec<u8> = (0..leaves * LEAF_BYTES + short).map(|i| (i * 131 % 253) as u8).collect();
                    let first = 1_000 + leaves as u64;
                    let mut level = Vec::new();
                    assert_eq!(full_leaves_on(platform, first, &data, &mut level), leaves * LEAF_BYTES);
                    let plain: Vec<Hash32> =
                        data.chunks(LEAF_BYTES).take(leaves).enumerate().map(|(j, c)| leaf_hash(first + j as u64, c)).collect();
                    assert_eq!(level, plain, "{platform:?}: {leaves} leaves");
                    let plain: Vec<Hash32> = level.chunks(2).map(|p| if p.len() == 2 { node_hash(&p[0], &p[1]) } else { p[0] }).collect();
                    assert_eq!(nodes_on(platform, &level), plain, "{platform:?}: {leaves} nodes");
                }
            }
        }
    }
}
