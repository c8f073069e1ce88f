//! A tree level's hashes side by side. Within one level of a piece tree every
//! leaf hash and every node hash is independent of the others, so they all
//! go through blake3's multi-input SIMD kernel (up to 16 inputs at once on
//! AVX-512) instead of one `blake3::Hasher` each. A leaf is one BLAKE3 chunk
//! of 512 bytes and a node one parent block (see `merkle`), so the kernel
//! reads full leaves straight from the piece, with no copy and no partial
//! block: a tree costs about what a flat blake3 pass does. The hashes are
//! exactly those of `merkle::leaf_hash` and `merkle::node_hash`, which the
//! tests check on every kernel.
//!
//! The kernel is `blake3::platform`, the crate's own unstable interface to
//! its SIMD code: `Cargo.lock` pins the version, and the tests compare every
//! hash with the plain hasher, so a change there fails them, not the ledger.

use blake3::platform::Platform;
use blake3::IncrementCounter;
use tessera_types::Hash32;

use crate::merkle::{LEAF_BYTES, TREE_KEY};

const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const PARENT: u8 = 4;
const KEYED_HASH: u8 = 16;
/// Nodes copied out and hashed per kernel call (16 KiB of pairs).
const BATCH: usize = 256;

/// `TREE_KEY` as BLAKE3's key words.
fn key_words() -> [u32; 8] {
    let mut words = [0u32; 8];
    for (word, bytes) in words.iter_mut().zip(TREE_KEY.chunks_exact(4)) {
        *word = u32::from_le_bytes(bytes.try_into().expect("four bytes"));
    }
    words
}

/// Hashes of the full leaves at the start of `data`, numbered from `first`,
/// appended to `out`; returns how many bytes they covered (a shorter last
/// leaf is left to the caller).
pub(crate) fn full_leaves(first: u64, data: &[u8], out: &mut Vec<Hash32>) -> usize {
    full_leaves_on(Platform::detect(), first, data, out)
}

fn full_leaves_on(platform: Platform, first: u64, data: &[u8], out: &mut Vec<Hash32>) -> usize {
    let leaves: Vec<&[u8; LEAF_BYTES]> = data.chunks_exact(LEAF_BYTES).map(|l| l.try_into().expect("a full leaf")).collect();
    let mut cvs = vec![0u8; 32 * leaves.len()];
    // Each leaf is a chunk whose counter is its index: blocks chained from the key, start and end flagged.
    platform.hash_many(&leaves, &key_words(), first, IncrementCounter::Yes, KEYED_HASH, CHUNK_START, CHUNK_END, &mut cvs);
    out.extend(cvs.chunks_exact(32).map(|cv| Hash32(cv.try_into().expect("32 bytes"))));
    leaves.len() * LEAF_BYTES
}

/// The level above `below`: pairs hashed, an odd last node promoted.
pub(crate) fn nodes(below: &[Hash32]) -> Vec<Hash32> {
    nodes_on(Platform::detect(), below)
}

fn nodes_on(platform: Platform, below: &[Hash32]) -> Vec<Hash32> {
    let pairs = below.len() / 2;
    let mut out = Vec::with_capacity(below.len().div_ceil(2));
    let mut blocks = vec![[0u8; 64]; BATCH.min(pairs)];
    let mut cvs = vec![0u8; 32 * blocks.len()];
    let key = key_words();
    for start in (0..pairs).step_by(BATCH) {
        let n = BATCH.min(pairs - start);
        for (j, block) in blocks[..n].iter_mut().enumerate() {
            block[..32].copy_from_slice(&below[2 * (start + j)].0);
            block[32..].copy_from_slice(&below[2 * (start + j) + 1].0);
        }
        let inputs: Vec<&[u8; 64]> = blocks[..n].iter().collect();
        platform.hash_many(&inputs, &key, 0, IncrementCounter::No, KEYED_HASH | PARENT, 0, 0, &mut cvs[..32 * n]);
        out.extend(cvs[..32 * n].chunks_exact(32).map(|cv| Hash32(cv.try_into().expect("32 bytes"))));
    }
    if below.len() % 2 == 1 {
        out.push(below[below.len() - 1]);
    }
    out
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
        platforms.extend([Platform::sse2(), Platform::sse41(), Platform::avx2(), Platform::avx512()].into_iter().flatten());
        for platform in platforms {
            for leaves in [0usize, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130, 513, 1030] {
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
