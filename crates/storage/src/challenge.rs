//! Storage challenges: each epoch, k leaf indexes of each piece are drawn from
//! the beacon (every leaf of a piece with at most k). A provider that lost a
//! fraction f of a piece's leaves escapes all k with probability (1-f)^k (DESIGN.md section 3: f = 10%, k = 50 gives
//! 0.5%).

use tessera_types::Hash32;

/// `k` leaf indexes in `0..leaf_count`, uniform and independent, from
/// blake3(beacon || piece || epoch) read as a stream (rejection sampling, so no
/// modulo bias). Same inputs, same indexes, on every node. A piece of at most
/// `k` leaves is asked for every leaf once instead: nothing escapes, and its
/// proof is no larger than the piece (small objects' pieces have one or two).
pub fn challenge_indices(beacon: &Hash32, piece: &Hash32, epoch: u64, leaf_count: u64, k: u32) -> Vec<u64> {
    if leaf_count <= k as u64 {
        return (0..leaf_count).collect();
    }
    let mut h = blake3::Hasher::new();
    h.update(b"tessera-storage-challenge-v1");
    h.update(&beacon.0);
    h.update(&piece.0);
    h.update(&epoch.to_le_bytes());
    let mut stream = h.finalize_xof();
    let zone = u64::MAX - (u64::MAX % leaf_count);
    let mut out = Vec::with_capacity(k as usize);
    while out.len() < k as usize {
        let mut b = [0u8; 8];
        stream.fill(&mut b);
        let v = u64::from_le_bytes(b);
        if v < zone {
            out.push(v % leaf_count);
        }
    }
    out
}

/// Bytes a piece of `piece_len` bytes puts into the chain each epoch: its
/// proof's challenged leaves and the hashes of their shared Merkle paths
/// (`MultiProof`) as a transaction encodes them, plus the transaction's own
/// envelope. An upper bound: below each level at most one sibling per node
/// of the paths above it, and never more than the challenged leaves. About
/// 36 KB for a MiB-piece: it grows with the log of the piece's size.
pub fn proof_bytes(piece_len: u64, k: u32) -> u64 {
    const TX_ENVELOPE: u64 = 256;
    let leaves = crate::leaf_count(piece_len);
    let challenged = leaves.min(k as u64);
    let leaf = (crate::LEAF_BYTES as u64).min(piece_len.max(1));
    let (mut width, mut hashes) = (leaves, 0u64);
    while width > 1 {
        width = width.div_ceil(2);
        hashes += width.min(challenged);
    }
    TX_ENVELOPE + 8 + challenged * (4 + leaf) + hashes * 32
}

/// (1 - f)^k in parts per million, for f in parts per million.
pub fn escape_probability_ppm(lost_ppm: u32, k: u32) -> u32 {
    let keep = 1.0 - lost_ppm.min(1_000_000) as f64 / 1e6;
    (keep.powi(k as i32) * 1e6).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_bytes_bound_a_real_proofs_encoding() {
        use crate::{PieceTree, LEAF_BYTES};
        for len in [1usize, 700, 50 * 512, 1 << 20, (1 << 20) + 3] {
            let piece: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let tree = PieceTree::build(&piece);
            let idx = challenge_indices(&Hash32([1; 32]), &Hash32([2; 32]), 3, tree.leaf_count(), 50);
            let leaves: Vec<Vec<u8>> =
                idx.iter().map(|&i| piece[i as usize * LEAF_BYTES..((i as usize + 1) * LEAF_BYTES).min(len)].to_vec()).collect();
            let proofs: Vec<_> = idx.iter().map(|&i| tree.prove(i).unwrap()).collect();
            let proof = crate::MultiProof::from_proofs(tree.leaf_count(), &proofs).unwrap();
            let encoded = (borsh::to_vec(&leaves).unwrap().len() + borsh::to_vec(&proof).unwrap().len()) as u64;
            let bound = proof_bytes(len as u64, 50);
            // The bound counts every challenged leaf's sibling where the
            // draw, by chance, shares some: within a tenth of the real thing.
            assert!(encoded <= bound && bound <= encoded + 300 + LEAF_BYTES as u64 + encoded / 10, "len {len}: {encoded} encoded, {bound} bound");
            let singles = (borsh::to_vec(&leaves).unwrap().len() + borsh::to_vec(&proofs).unwrap().len()) as u64;
            if len >= 1 << 20 {
                assert!(encoded * 100 < singles * 85, "len {len}: {encoded} against {singles} for one path per leaf");
            }
        }
        assert!((35_000..37_000).contains(&proof_bytes(1 << 20, 50)), "{}", proof_bytes(1 << 20, 50));
    }

    #[test]
    fn indexes_are_deterministic_in_range_and_vary_by_epoch() {
        let beacon = Hash32::blake3(b"beacon");
        let piece = Hash32::blake3(b"piece");
        let a = challenge_indices(&beacon, &piece, 7, 1000, 50);
        assert_eq!(a, challenge_indices(&beacon, &piece, 7, 1000, 50));
        assert_ne!(a, challenge_indices(&beacon, &piece, 8, 1000, 50));
        assert!(a.iter().all(|i| *i < 1000));
        assert_eq!(a.len(), 50);
        assert_eq!(escape_probability_ppm(100_000, 50), 5_154);
        // A piece with no more leaves than challenges is checked whole.
        assert_eq!(challenge_indices(&beacon, &piece, 7, 3, 50), vec![0, 1, 2]);
        assert_eq!(challenge_indices(&beacon, &piece, 7, 50, 50), (0..50).collect::<Vec<_>>());
        assert!(challenge_indices(&beacon, &piece, 7, 0, 50).is_empty());
    }

    /// Simulation: a provider missing a fraction f of leaves passes an epoch's
    /// k challenges about (1-f)^k of the time. With uniform independent draws
    /// only the count of lost leaves matters, so each trial loses a run of them
    /// at a trial-dependent offset.
    #[test]
    fn escape_rate_matches_one_minus_f_to_the_k() {
        let leaves = 10_000u64;
        let trials = 20_000u64;
        for (lost_ppm, k) in [(100_000u32, 10u32), (100_000, 20), (300_000, 5), (50_000, 30)] {
            let lost = leaves * lost_ppm as u64 / 1_000_000;
            let mut escaped = 0u64;
            for t in 0..trials {
                let offset = (t * 7_919) % leaves;
                let is_lost = |i: u64| (i + leaves - offset) % leaves < lost;
                let beacon = Hash32::blake3(&t.to_le_bytes());
                let asked = challenge_indices(&beacon, &Hash32::blake3(b"piece"), t, leaves, k);
                if asked.iter().all(|i| !is_lost(*i)) {
                    escaped += 1;
                }
            }
            let expected = escape_probability_ppm(lost_ppm, k) as f64 / 1e6;
            let observed = escaped as f64 / trials as f64;
            let sigma = (expected * (1.0 - expected) / trials as f64).sqrt();
            assert!(
                (observed - expected).abs() < 5.0 * sigma + 0.001,
                "f={lost_ppm}ppm k={k}: observed {observed}, expected {expected}"
            );
        }
    }
}
