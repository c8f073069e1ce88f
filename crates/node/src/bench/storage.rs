//! `tessera bench storage`: erasure encode and decode throughput of Tessera's
//! segment codec next to the raw reed-solomon-simd crate on the same shards,
//! in the same run; and the pieces' Merkle trees (what every upload, every
//! provider receiving a piece and every repair computes) next to a flat
//! blake3 hash of the same pieces, the most the hash function allows.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use std::time::Instant;
use tessera_storage::{ErasureScheme, PieceTree, SegmentCodec};
use tessera_types::Hash32;

use super::peak_rss_mib;

pub struct StorageBenchConfig {
    pub total_bytes: usize,
    pub segment_bytes: usize,
    pub scheme: ErasureScheme,
}

pub struct StorageBenchReport {
    pub segments: usize,
    pub encode_gib_s: f64,
    pub raw_encode_gib_s: f64,
    pub decode_gib_s: f64,
    pub raw_decode_gib_s: f64,
    /// Piece Merkle trees over every piece (data and parity).
    pub tree_gib_s: f64,
    /// `blake3::hash` of the same pieces.
    pub flat_blake3_gib_s: f64,
    pub peak_rss_mib: f64,
}

fn gib_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / secs
}

pub fn run_storage_bench(cfg: &StorageBenchConfig, progress: &mut dyn FnMut(&str)) -> anyhow::Result<StorageBenchReport> {
    cfg.scheme.validate()?;
    let k = cfg.scheme.data as usize;
    let m = cfg.scheme.parity as usize;
    anyhow::ensure!(
        cfg.segment_bytes >= 2 * k && cfg.segment_bytes.is_multiple_of(2 * k),
        "segment size must be a multiple of 2 x data shards ({})",
        2 * k
    );
    let segments = cfg.total_bytes.div_ceil(cfg.segment_bytes).max(1);
    let total = segments * cfg.segment_bytes;
    let shard = cfg.scheme.shard_bytes(cfg.segment_bytes);
    // Worst case for decoding: the first M data shards are lost.
    let lost = m.min(k);
    progress(&format!(
        "{segments} segments of {} KiB: encode, then decode with {lost} data shards lost, each with Tessera's codec \
         and with reed-solomon-simd directly, segment by segment (same shards, same cache conditions)...",
        cfg.segment_bytes >> 10
    ));
    let mut codec = SegmentCodec::new(cfg.scheme)?;
    let mut encoder = ReedSolomonEncoder::new(k, m, shard)?;
    let mut decoder = ReedSolomonDecoder::new(k, m, shard)?;
    let (mut enc_ours, mut enc_raw, mut dec_ours, mut dec_raw) = (0f64, 0f64, 0f64, 0f64);
    let (mut tree_secs, mut flat_secs, mut piece_bytes) = (0f64, 0f64, 0usize);
    let mut seg = vec![0u8; cfg.segment_bytes];
    let mut source = blake3::Hasher::new().update(b"tessera-storage-bench").finalize_xof();
    // The peer does the least the crate allows: reset, add, encode, and
    // hash the parity it produced in place (outside the timed region).
    let raw_encode = |encoder: &mut ReedSolomonEncoder, seg: &[u8]| -> anyhow::Result<(Vec<Hash32>, f64)> {
        let started = Instant::now();
        encoder.reset(k, m, shard)?;
        for s in seg.chunks_exact(shard) {
            encoder.add_original_shard(s)?;
        }
        let result = encoder.encode()?;
        let elapsed = started.elapsed().as_secs_f64();
        Ok((result.recovery_iter().map(Hash32::blake3).collect(), elapsed))
    };
    // And for decoding: reset, add the K shards kept, decode, and join the
    // data shards kept and restored into the segment.
    let raw_decode = |decoder: &mut ReedSolomonDecoder, shards: &[Vec<u8>], kept: &[(usize, &[u8])]| -> anyhow::Result<(Vec<u8>, f64)> {
        let started = Instant::now();
        decoder.reset(k, m, shard)?;
        for &(i, s) in kept {
            if i < k {
                decoder.add_original_shard(i, s)?;
            } else {
                decoder.add_recovery_shard(i - k, s)?;
            }
        }
        let result = decoder.decode()?;
        let mut plain = Vec::with_capacity(cfg.segment_bytes);
        for (i, s) in shards.iter().enumerate().take(k) {
            plain.extend_from_slice(result.restored_original(i).unwrap_or(s));
        }
        Ok((plain, started.elapsed().as_secs_f64()))
    };

    // One untimed round first: our codec builds its encoder and decoder on
    // first use, and either side's work buffers fault their pages in then,
    // which would otherwise land in one side's timing only.
    source.fill(&mut seg);
    {
        let shards = codec.encode(&seg)?.to_vecs();
        raw_encode(&mut encoder, &seg)?;
        let kept: Vec<(usize, &[u8])> = shards.iter().enumerate().skip(lost).take(k).map(|(i, s)| (i, s.as_slice())).collect();
        anyhow::ensure!(codec.decode(seg.len(), &kept)? == seg, "decoded segment differs");
        anyhow::ensure!(raw_decode(&mut decoder, &shards, &kept)?.0 == seg, "raw decode differs");
    }

    for index in 0..segments {
        source.fill(&mut seg);

        // Alternate which side runs first so neither always finds the segment in cache.
        let mut raw_first = None;
        if index % 2 == 1 {
            raw_first = Some(raw_encode(&mut encoder, &seg)?);
        }
        let started = Instant::now();
        let shards = {
            let ours = codec.encode(&seg)?;
            enc_ours += started.elapsed().as_secs_f64();
            ours.to_vecs()
        };
        let (raw_parity, raw_time) = match raw_first {
            Some(r) => r,
            None => raw_encode(&mut encoder, &seg)?,
        };
        enc_raw += raw_time;
        let ours_parity: Vec<Hash32> = shards[k..].iter().map(|p| Hash32::blake3(p)).collect();
        anyhow::ensure!(raw_parity == ours_parity, "codec and raw crate disagree on parity");

        // Alternate which runs first, as above.
        let time_trees = || {
            let started = Instant::now();
            let roots: Vec<Hash32> = shards.iter().map(|p| PieceTree::build(p).root()).collect();
            (roots, started.elapsed().as_secs_f64())
        };
        let time_flat = || {
            let started = Instant::now();
            let hashes: Vec<Hash32> = shards.iter().map(|p| Hash32::blake3(p)).collect();
            (hashes, started.elapsed().as_secs_f64())
        };
        let ((roots, tree_time), (hashes, flat_time)) = if index % 2 == 1 {
            let flat = time_flat();
            (time_trees(), flat)
        } else {
            let trees = time_trees();
            (trees, time_flat())
        };
        std::hint::black_box((roots, hashes));
        tree_secs += tree_time;
        flat_secs += flat_time;
        piece_bytes += shards.iter().map(Vec::len).sum::<usize>();

        let kept: Vec<(usize, &[u8])> = shards.iter().enumerate().skip(lost).take(k).map(|(i, s)| (i, s.as_slice())).collect();
        let started = Instant::now();
        let plain = codec.decode(seg.len(), &kept)?;
        dec_ours += started.elapsed().as_secs_f64();
        anyhow::ensure!(plain == seg, "decoded segment differs");

        let (raw_plain, raw_time) = raw_decode(&mut decoder, &shards, &kept)?;
        dec_raw += raw_time;
        anyhow::ensure!(raw_plain == seg, "raw decode differs");
    }
    Ok(StorageBenchReport {
        segments,
        encode_gib_s: gib_per_s(total, enc_ours),
        raw_encode_gib_s: gib_per_s(total, enc_raw),
        decode_gib_s: gib_per_s(total, dec_ours),
        raw_decode_gib_s: gib_per_s(total, dec_raw),
        tree_gib_s: gib_per_s(piece_bytes, tree_secs),
        flat_blake3_gib_s: gib_per_s(piece_bytes, flat_secs),
        peak_rss_mib: peak_rss_mib(),
    })
}
