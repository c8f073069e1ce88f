//! Piece Merkle trees: a piece is cut into leaves of `LEAF_BYTES` (the last may
//! be shorter); the root goes on the ledger with the storage deal, and a
//! challenge is answered with leaves and their paths to that root.
//!
//! Hashing is blake3 with domain separation: leaf = H(0 || index || data),
//! node = H(1 || left || right). A level with an odd count promotes its last
//! node unchanged.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Hash32;

/// Small enough that a proof of 50 leaves (DESIGN.md section 3) fits in one transaction.
pub const LEAF_BYTES: usize = 512;

pub fn leaf_count(piece_len: u64) -> u64 {
    piece_len.div_ceil(LEAF_BYTES as u64).max(1)
}

fn leaf_hash(index: u64, data: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(&index.to_le_bytes());
    h.update(data);
    Hash32(*h.finalize().as_bytes())
}

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(&left.0);
    h.update(&right.0);
    Hash32(*h.finalize().as_bytes())
}

/// All levels of a piece's tree, leaves first.
pub struct PieceTree {
    levels: Vec<Vec<Hash32>>,
}

/// Sibling hashes from a leaf up to the root (levels where the node was
/// promoted contribute none).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct MerkleProof {
    pub index: u64,
    pub siblings: Vec<Hash32>,
}

impl PieceTree {
    pub fn build(piece: &[u8]) -> PieceTree {
        let leaves: Vec<Hash32> = if piece.is_empty() {
            vec![leaf_hash(0, &[])]
        } else {
            piece.chunks(LEAF_BYTES).enumerate().map(|(i, c)| leaf_hash(i as u64, c)).collect()
        };
        let mut levels = vec![leaves];
        while levels.last().expect("non-empty").len() > 1 {
            let below = levels.last().expect("non-empty");
            let above: Vec<Hash32> =
                below.chunks(2).map(|p| if p.len() == 2 { node_hash(&p[0], &p[1]) } else { p[0] }).collect();
            levels.push(above);
        }
        PieceTree { levels }
    }

    pub fn root(&self) -> Hash32 {
        self.levels.last().expect("non-empty")[0]
    }

    pub fn leaf_count(&self) -> u64 {
        self.levels[0].len() as u64
    }

    pub fn prove(&self, index: u64) -> Option<MerkleProof> {
        if index >= self.leaf_count() {
            return None;
        }
        let mut siblings = Vec::new();
        let mut i = index as usize;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                siblings.push(level[sibling]);
            }
            i /= 2;
        }
        Some(MerkleProof { index, siblings })
    }
}

impl MerkleProof {
    /// Checks that `leaf` is leaf `self.index` of a piece with `leaf_count`
    /// leaves and Merkle root `root`.
    pub fn verify(&self, root: &Hash32, leaf_count: u64, leaf: &[u8]) -> bool {
        if self.index >= leaf_count || leaf.len() > LEAF_BYTES {
            return false;
        }
        let mut hash = leaf_hash(self.index, leaf);
        let mut i = self.index;
        let mut width = leaf_count;
        let mut siblings = self.siblings.iter();
        while width > 1 {
            let sibling = i ^ 1;
            if sibling < width {
                let Some(s) = siblings.next() else { return false };
                hash = if i.is_multiple_of(2) { node_hash(&hash, s) } else { node_hash(s, &hash) };
            }
            i /= 2;
            width = width.div_ceil(2);
        }
        siblings.next().is_none() && hash == *root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_proves_and_tampering_fails() {
        for len in [1usize, 1024, 1025, 5 * 1024 + 3, 17 * 1024] {
            let piece: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let tree = PieceTree::build(&piece);
            assert_eq!(tree.leaf_count(), leaf_count(len as u64));
            for (i, leaf) in piece.chunks(LEAF_BYTES).enumerate() {
                let proof = tree.prove(i as u64).unwrap();
                assert!(proof.verify(&tree.root(), tree.leaf_count(), leaf), "len {len} leaf {i}");
                let mut bad = leaf.to_vec();
                bad[0] ^= 1;
                assert!(!proof.verify(&tree.root(), tree.leaf_count(), &bad));
                if tree.leaf_count() > 1 {
                    let mut moved = proof.clone();
                    moved.index = (proof.index + 1) % tree.leaf_count();
                    assert!(!moved.verify(&tree.root(), tree.leaf_count(), leaf));
                }
            }
            assert!(tree.prove(tree.leaf_count()).is_none());
        }
    }
}
