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
    full_leaves_on(Platform::detect(), wide_tails(), first, data, out)
}

fn full_leaves_on(platform: Platform, wide: bool, first: u64, data: &[u8], out: &mut Vec<Hash32>) -> usize {
    let full = data.len() / LEAF_BYTES;
    let leaf = |i: usize| &data[i * LEAF_BYTES..][..LEAF_BYTES];
    side_by_side::<LEAF_BYTES>(
        platform,
        wide,
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
    nodes_on(Platform::detect(), wide_tails(), below)
}

fn nodes_on(platform: Platform, wide: bool, below: &[Hash32]) -> Vec<Hash32> {
    let mut out = Vec::with_capacity(below.len().div_ceil(2));
    // A node's input is `1 || left || right`: one full block and the last byte of `right`.
    side_by_side::<BLOCK_BYTES>(
        platform,
        wide,
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
/// time through the kernel; appends the hashes to `out` in order. The last
/// blocks, each continuing its own input's chaining value, go through
/// `avx512::compress16` 16 at a time when `wide`, else one by one.
fn side_by_side<'a, const N: usize>(
    platform: Platform,
    wide: bool,
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
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut j = 0;
        #[cfg(target_arch = "x86_64")]
        if wide {
            while n - j >= avx512::LANES {
                let mut states = [[0u32; 8]; avx512::LANES];
                let mut blocks = [[0u8; BLOCK_BYTES]; avx512::LANES];
                let mut len = 0;
                for (lane, (state, block)) in states.iter_mut().zip(&mut blocks).enumerate() {
                    *state = words(&cvs[32 * (j + lane)..][..32]);
                    let t = tail(start + j + lane);
                    block[..t.len()].copy_from_slice(t);
                    len = t.len();
                }
                // SAFETY: `wide` is only set where the CPU has AVX-512F.
                unsafe { avx512::compress16(&mut states, &blocks, len as u32, (CHUNK_END | ROOT) as u32) };
                out.extend(states.iter().map(hash_of));
                j += avx512::LANES;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = wide;
        for j in j..n {
            out.push(finish(&platform, &cvs[32 * j..][..32], tail(start + j)));
        }
    }
}

/// Whether `avx512::compress16` runs here.
fn wide_tails() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static WIDE: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| std::arch::is_x86_feature_detected!("avx512f"));
        *WIDE
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A chaining value's words from its 32 bytes.
fn words(cv_bytes: &[u8]) -> [u32; 8] {
    let mut cv = [0u32; 8];
    for (word, bytes) in cv.iter_mut().zip(cv_bytes.chunks_exact(4)) {
        *word = u32::from_le_bytes(bytes.try_into().expect("four bytes"));
    }
    cv
}

/// The hash whose words `cv` holds.
fn hash_of(cv: &[u32; 8]) -> Hash32 {
    let mut hash = [0u8; 32];
    for (bytes, word) in hash.chunks_exact_mut(4).zip(cv) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    Hash32(hash)
}

/// The root hash of a one-chunk input from the chaining value of its full
/// blocks and its last, partial block `tail`.
fn finish(platform: &Platform, cv_bytes: &[u8], tail: &[u8]) -> Hash32 {
    let mut cv = words(cv_bytes);
    let mut block = [0u8; BLOCK_BYTES];
    block[..tail.len()].copy_from_slice(tail);
    platform.compress_in_place(&mut cv, &block, tail.len() as u8, 0, CHUNK_END | ROOT);
    hash_of(&cv)
}

/// BLAKE3's compression function on 16 inputs at once, each with a chaining
/// value of its own (`hash_many` takes one for all, so it cannot run the
/// last blocks of many leaves); one 32-bit lane of each vector per input.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    pub const LANES: usize = 16;

    /// Message word order of each of the 7 rounds: round 0 takes the words
    /// in order, and each later round permutes the one before.
    const SCHEDULE: [[usize; 16]; 7] = {
        const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
        let mut s = [[0usize; 16]; 7];
        let mut i = 0;
        while i < 16 {
            s[0][i] = i;
            i += 1;
        }
        let mut r = 1;
        while r < 7 {
            let mut i = 0;
            while i < 16 {
                s[r][i] = s[r - 1][PERMUTATION[i]];
                i += 1;
            }
            r += 1;
        }
        s
    };

    #[inline(always)]
    unsafe fn g(v: &mut [__m512i; 16], a: usize, b: usize, c: usize, d: usize, x: __m512i, y: __m512i) {
        unsafe {
            v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), x);
            v[d] = _mm512_ror_epi32::<16>(_mm512_xor_si512(v[d], v[a]));
            v[c] = _mm512_add_epi32(v[c], v[d]);
            v[b] = _mm512_ror_epi32::<12>(_mm512_xor_si512(v[b], v[c]));
            v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), y);
            v[d] = _mm512_ror_epi32::<8>(_mm512_xor_si512(v[d], v[a]));
            v[c] = _mm512_add_epi32(v[c], v[d]);
            v[b] = _mm512_ror_epi32::<7>(_mm512_xor_si512(v[b], v[c]));
        }
    }

    /// Compresses `blocks[i]` (its first `block_len` bytes used, the rest
    /// zero) into `states[i]` in place, block counter 0, for every `i`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn compress16(states: &mut [[u32; 8]; LANES], blocks: &[[u8; 64]; LANES], block_len: u32, flags: u32) {
        // Lane i of word j sits at i * stride + j in the arrays.
        let lane_words = |stride: i32| _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(stride));
        let (state_at, block_at) = (lane_words(8), lane_words(16));
        let sp = states.as_mut_ptr() as *mut i32;
        let bp = blocks.as_ptr() as *const i32;
        // SAFETY: every index gathered or scattered is below 16 * stride
        // words, inside the arrays; x86 is little-endian, as BLAKE3's words are.
        unsafe {
            let mut m = [_mm512_setzero_si512(); 16];
            for (j, w) in m.iter_mut().enumerate() {
                *w = _mm512_i32gather_epi32::<4>(_mm512_add_epi32(block_at, _mm512_set1_epi32(j as i32)), bp);
            }
            let mut v = [_mm512_setzero_si512(); 16];
            for (j, w) in v[..8].iter_mut().enumerate() {
                *w = _mm512_i32gather_epi32::<4>(_mm512_add_epi32(state_at, _mm512_set1_epi32(j as i32)), sp as *const i32);
            }
            for (j, w) in v[8..12].iter_mut().enumerate() {
                *w = _mm512_set1_epi32(super::IV[j] as i32);
            }
            v[12] = _mm512_setzero_si512();
            v[13] = _mm512_setzero_si512();
            v[14] = _mm512_set1_epi32(block_len as i32);
            v[15] = _mm512_set1_epi32(flags as i32);
            for s in &SCHEDULE {
                g(&mut v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
                g(&mut v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
                g(&mut v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
                g(&mut v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
                g(&mut v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
                g(&mut v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
                g(&mut v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
                g(&mut v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
            }
            for j in 0..8 {
                let out = _mm512_xor_si512(v[j], v[j + 8]);
                _mm512_i32scatter_epi32::<4>(sp, _mm512_add_epi32(state_at, _mm512_set1_epi32(j as i32)), out);
            }
        }
    }
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
        for (platform, wide) in platforms.into_iter().flat_map(|p| [(p, false), (p, wide_tails())]) {
            for leaves in [0usize, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130] {
                for short in [0usize, 1, 8, 9, 10, 511] {
                    let data: Vec<u8> = (0..leaves * LEAF_BYTES + short).map(|i| (i * 131 % 253) as u8).collect();
                    let first = 1_000 + leaves as u64;
                    let mut level = Vec::new();
                    assert_eq!(full_leaves_on(platform, wide, first, &data, &mut level), leaves * LEAF_BYTES);
                    let plain: Vec<Hash32> =
                        data.chunks(LEAF_BYTES).take(leaves).enumerate().map(|(j, c)| leaf_hash(first + j as u64, c)).collect();
                    assert_eq!(level, plain, "{platform:?} (wide {wide}): {leaves} leaves");
                    let plain: Vec<Hash32> = level.chunks(2).map(|p| if p.len() == 2 { node_hash(&p[0], &p[1]) } else { p[0] }).collect();
                    assert_eq!(nodes_on(platform, wide, &level), plain, "{platform:?} (wide {wide}): {leaves} nodes");
                }
            }
        }
    }
}
