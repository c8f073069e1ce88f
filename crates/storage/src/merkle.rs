//! Piece Merkle trees: a piece is cut into leaves of `LEAF_BYTES` (the last may
//! be shorter); the root goes on the ledger with the storage deal, and a
//! challenge is answered with leaves and their paths to that root.
//!
//! Hashing is BLAKE3's own tree mode, keyed with `TREE_KEY` and with chunks
//! of `LEAF_BYTES`: a leaf is the chaining value of one chunk whose counter
//! is the leaf's index (so a leaf cannot be moved), a node the chaining value
//! of one parent block `left || right`; BLAKE3's flags keep the two apart. A
//! level with an odd count promotes its last node unchanged. Every leaf and
//! node of a level thus goes through blake3's SIMD kernel side by side, read
//! in place (`lanes`), and a tree costs about one flat blake3 pass.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Hash32;

/// Small enough that a proof of 50 leaves (DESIGN.md section 3) fits in one transaction.
pub const LEAF_BYTES: usize = 512;

pub fn leaf_count(piece_len: u64) -> u64 {
    piece_len.div_ceil(LEAF_BYTES as u64).max(1)
}

/// The key of every piece tree's hashes: none of them is a plain blake3 hash.
pub(crate) const TREE_KEY: [u8; 32] = *b"tessera piece merkle tree leaves";

/// Leaf indexes from here on have no chunk counter (BLAKE3 counts chunks of
/// 1 KiB in 64 bits); no piece comes near it.
const MAX_LEAVES: u64 = 1 << 50;

/// One leaf's hash (a tree's levels are hashed many at once by `lanes`, to the same bytes).
pub(crate) fn leaf_hash(index: u64, data: &[u8]) -> Hash32 {
    use blake3::hazmat::HasherExt;
    debug_assert!(index < MAX_LEAVES && data.len() <= LEAF_BYTES);
    if data.is_empty() {
        // The one leaf of an empty piece (BLAKE3 has no empty non-root chunk).
        return Hash32(*blake3::keyed_hash(&TREE_KEY, &[]).as_bytes());
    }
    // The hasher counts chunks in 1 KiB of offset; a leaf's counter is its index.
    Hash32(blake3::Hasher::new_keyed(&TREE_KEY).set_input_offset(index * 1024).update(data).finalize_non_root())
}

pub(crate) fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    Hash32(blake3::hazmat::merge_subtrees_non_root(&left.0, &right.0, blake3::hazmat::Mode::KeyedHash(&TREE_KEY)))
}

/// A piece's hash: the root of its tree (each level let go once the one
/// above it is hashed).
pub fn piece_hash(piece: &[u8]) -> Hash32 {
    let mut level = leaf_level(0, piece);
    while level.len() > 1 {
        level = level_above(&level);
    }
    level[0]
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
        let mut levels = vec![leaf_level(0, piece)];
        while levels.last().expect("non-empty").len() > 1 {
            let above = level_above(levels.last().expect("non-empty"));
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
        push_siblings(&self.levels, index as usize, &mut siblings);
        Some(MerkleProof { index, siblings })
    }
}

/// Leaf hashes of `data`, leaves `first` on (an empty piece has one empty leaf).
fn leaf_level(first: u64, data: &[u8]) -> Vec<Hash32> {
    if data.is_empty() && first == 0 {
        vec![leaf_hash(0, &[])]
    } else {
        let mut level = Vec::with_capacity(data.len().div_ceil(LEAF_BYTES));
        let covered = crate::lanes::full_leaves(first, data, &mut level);
        if covered < data.len() {
            level.push(leaf_hash(first + level.len() as u64, &data[covered..]));
        }
        level
    }
}

/// The level above `below`: pairs hashed, an odd last node promoted.
fn level_above(below: &[Hash32]) -> Vec<Hash32> {
    crate::lanes::nodes(below)
}

/// Appends the siblings of node `i` of `levels[0]`, level by level, below the top one.
fn push_siblings(levels: &[Vec<Hash32>], mut i: usize, siblings: &mut Vec<Hash32>) {
    for level in &levels[..levels.len().saturating_sub(1)] {
        if i ^ 1 < level.len() {
            siblings.push(level[i ^ 1]);
        }
        i /= 2;
    }
}

/// Tree levels below this one are not kept by [`UpperTree`]: a group of
/// `1 << GROUP_LEVEL` leaves is rehashed from the piece to answer for one of them.
const GROUP_LEVEL: usize = 2;

/// The levels of a piece's tree from groups of leaves up (about 1/32 of the
/// piece at 512-byte leaves). Kept beside a piece, it answers a challenged
/// leaf from the bytes of that leaf's group alone instead of the whole piece,
/// and it checks those bytes on the way.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct UpperTree {
    leaf_count: u64,
    /// Leaves under each node of `levels[0]`.
    group_leaves: u64,
    levels: Vec<Vec<Hash32>>,
}

impl PieceTree {
    pub fn upper(&self) -> UpperTree {
        let skip = GROUP_LEVEL.min(self.levels.len() - 1);
        UpperTree { leaf_count: self.leaf_count(), group_leaves: 1 << skip, levels: self.levels[skip..].to_vec() }
    }
}

impl UpperTree {
    pub fn root(&self) -> Hash32 {
        self.levels.last().and_then(|l| l.first()).copied().unwrap_or(Hash32([0; 32]))
    }

    pub fn leaf_count(&self) -> u64 {
        self.leaf_count
    }

    /// The tree's bytes behind a blake3 checksum of them, for keeping on disk.
    pub fn encode(&self) -> Vec<u8> {
        let body = borsh::to_vec(self).expect("an in-memory tree encodes");
        let mut out = Vec::with_capacity(32 + body.len());
        out.extend_from_slice(blake3::hash(&body).as_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A tree written by `encode`; `None` when torn, damaged or misshapen.
    pub fn decode(bytes: &[u8]) -> Option<UpperTree> {
        let (sum, body) = (bytes.get(..32)?, bytes.get(32..)?);
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let tree: UpperTree = borsh::from_slice(body).ok()?;
        tree.well_formed().then_some(tree)
    }

    /// Whether the levels have the shape `leaf_count` gives (a decoded tree is checked before use).
    pub fn well_formed(&self) -> bool {
        let mut width = self.leaf_count.div_ceil(self.group_leaves.max(1));
        if !self.group_leaves.is_power_of_two() || self.levels.is_empty() {
            return false;
        }
        for level in &self.levels {
            if level.len() as u64 != width {
                return false;
            }
            width = width.div_ceil(2);
        }
        self.levels.last().is_some_and(|l| l.len() == 1)
            && (self.levels.len() == 1 || self.levels[self.levels.len() - 2].len() > 1)
    }

    /// The byte range, within a piece of `piece_len` bytes, of the group that holds leaf `index`.
    pub fn group_of(&self, index: u64, piece_len: u64) -> Option<std::ops::Range<u64>> {
        if index >= self.leaf_count {
            return None;
        }
        let start = index / self.group_leaves * self.group_leaves * LEAF_BYTES as u64;
        Some(start.min(piece_len)..(start + self.group_leaves * LEAF_BYTES as u64).min(piece_len))
    }

    /// The proof of leaf `index` from `group`, the bytes `group_of` names;
    /// `None` when they do not hash to the group's node (the piece, or this
    /// tree, is damaged).
    pub fn prove(&self, index: u64, group: &[u8]) -> Option<MerkleProof> {
        if index >= self.leaf_count {
            return None;
        }
        let g = index / self.group_leaves;
        let first = g * self.group_leaves;
        let mut group_levels = vec![leaf_level(first, group)];
        if group_levels[0].len() as u64 != (self.leaf_count - first).min(self.group_leaves) {
            return None;
        }
        for _ in 0..self.group_leaves.trailing_zeros() {
            let above = level_above(group_levels.last().expect("non-empty"));
            group_levels.push(above);
        }
        if group_levels.last().expect("non-empty").as_slice() != self.levels[0].get(g as usize..g as usize + 1)? {
            return None;
        }
        let mut siblings = Vec::new();
        push_siblings(&group_levels, (index - first) as usize, &mut siblings);
        push_siblings(&self.levels, g as usize, &mut siblings);
        Some(MerkleProof { index, siblings })
    }
}

impl MerkleProof {
    /// Checks that `leaf` is leaf `self.index` of a piece with `leaf_count`
    /// leaves and Merkle root `root`.
    pub fn verify(&self, root: &Hash32, leaf_count: u64, leaf: &[u8]) -> bool {
        if self.index >= leaf_count.min(MAX_LEAVES) || leaf.len() > LEAF_BYTES {
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

/// The Merkle paths of several leaves of one piece, each hash given once:
/// a sibling that the other leaves' paths compute is left out, so the
/// paths' shared upper levels cost nothing. The leaves' indices are not
/// carried: whoever checks the proof drew them.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct MultiProof {
    /// The siblings the paths need, level by level from the leaves up and
    /// left to right within a level.
    pub nodes: Vec<Hash32>,
}

impl MultiProof {
    /// Combines single-leaf proofs of one piece of `leaf_count` leaves (in
    /// any order, repeats allowed); `None` when they are not of one shape.
    pub fn from_proofs(leaf_count: u64, proofs: &[MerkleProof]) -> Option<MultiProof> {
        let mut known: std::collections::HashMap<(u32, u64), Hash32> = std::collections::HashMap::new();
        for p in proofs {
            let (mut i, mut width, mut level, mut siblings) = (p.index, leaf_count, 0u32, p.siblings.iter());
            while width > 1 {
                if i ^ 1 < width {
                    known.insert((level, i ^ 1), *siblings.next()?);
                }
                (i, width, level) = (i / 2, width.div_ceil(2), level + 1);
            }
        }
        let mut nodes = Vec::new();
        let mut level: std::collections::BTreeSet<u64> = proofs.iter().map(|p| p.index).collect();
        let (mut width, mut depth) = (leaf_count, 0u32);
        while width > 1 {
            for &i in &level {
                let sibling = i ^ 1;
                if sibling < width && !level.contains(&sibling) {
                    nodes.push(*known.get(&(depth, sibling))?);
                }
            }
            level = level.iter().map(|i| i / 2).collect();
            (width, depth) = (width.div_ceil(2), depth + 1);
        }
        Some(MultiProof { nodes })
    }

    /// Checks that `leaves[n]` is leaf `indices[n]` of a piece with
    /// `leaf_count` leaves and Merkle root `root` for every `n` (an index
    /// asked twice needs the same leaf twice).
    pub fn verify(&self, root: &Hash32, leaf_count: u64, indices: &[u64], leaves: &[Vec<u8>]) -> bool {
        if indices.is_empty() || indices.len() != leaves.len() {
            return false;
        }
        let mut level: std::collections::BTreeMap<u64, Hash32> = std::collections::BTreeMap::new();
        for (&i, leaf) in indices.iter().zip(leaves) {
            if i >= leaf_count.min(MAX_LEAVES) || leaf.len() > LEAF_BYTES {
                return false;
            }
            let hash = leaf_hash(i, leaf);
            if level.insert(i, hash).is_some_and(|before| before != hash) {
                return false;
            }
        }
        let mut nodes = self.nodes.iter();
        let mut width = leaf_count;
        while width > 1 {
            let mut above = std::collections::BTreeMap::new();
            let mut here = level.into_iter().peekable();
            while let Some((i, hash)) = here.next() {
                let parent = if i % 2 == 1 {
                    // Its left sibling is not in the set (it would have taken this one along).
                    let Some(left) = nodes.next() else { return false };
                    node_hash(left, &hash)
                } else if i + 1 >= width {
                    hash
                } else if let Some((_, right)) = here.next_if(|(j, _)| *j == i + 1) {
                    node_hash(&hash, &right)
                } else {
                    let Some(right) = nodes.next() else { return false };
                    node_hash(&hash, right)
                };
                above.insert(i / 2, parent);
            }
            level = above;
            width = width.div_ceil(2);
        }
        nodes.next().is_none() && level.len() == 1 && level.get(&0) == Some(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multiproof_proves_any_set_of_leaves_in_fewer_hashes_and_tampering_fails() {
        for len in [1usize, 512, 513, 7 * 512 + 3, 33 * 512, 1 << 20] {
            let piece: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            let tree = PieceTree::build(&piece);
            let n = tree.leaf_count();
            let leaf = |i: u64| piece[i as usize * LEAF_BYTES..((i as usize + 1) * LEAF_BYTES).min(len)].to_vec();
            let sets: Vec<Vec<u64>> = vec![
                vec![0],
                vec![n - 1],
                (0..n.min(50)).collect(),
                crate::challenge_indices(&Hash32([3; 32]), &Hash32([4; 32]), 9, n, 50),
                vec![n / 2, 0, n / 2, n - 1],
            ];
            for indices in sets {
                let leaves: Vec<Vec<u8>> = indices.iter().map(|&i| leaf(i)).collect();
                let proofs: Vec<MerkleProof> = indices.iter().map(|&i| tree.prove(i).unwrap()).collect();
                let multi = MultiProof::from_proofs(n, &proofs).unwrap();
                assert!(multi.verify(&tree.root(), n, &indices, &leaves), "len {len} {indices:?}");
                let singles: usize = proofs.iter().map(|p| p.siblings.len()).sum();
                assert!(multi.nodes.len() <= singles);
                if indices.len() >= 50 && n > 1000 {
                    assert!(multi.nodes.len() * 3 < singles * 2, "len {len}: {} hashes against {singles}", multi.nodes.len());
                }
                let mut bad = leaves.clone();
                bad[0][0] ^= 1;
                assert!(!multi.verify(&tree.root(), n, &indices, &bad), "len {len}: a changed leaf");
                if n > 1 {
                    let moved: Vec<u64> = indices.iter().map(|i| (i + 1) % n).collect();
                    assert!(!multi.verify(&tree.root(), n, &moved, &leaves), "len {len}: other indices");
                }
                if let Some(first) = multi.nodes.first() {
                    let mut short = multi.clone();
                    short.nodes.remove(0);
                    assert!(!short.verify(&tree.root(), n, &indices, &leaves));
                    let mut long = multi.clone();
                    long.nodes.push(*first);
                    assert!(!long.verify(&tree.root(), n, &indices, &leaves));
                }
                assert!(!multi.verify(&Hash32([0; 32]), n, &indices, &leaves));
            }
            // An index asked twice needs the same leaf both times.
            if n > 1 {
                let indices = vec![1, 1];
                let proofs = vec![tree.prove(1).unwrap(), tree.prove(1).unwrap()];
                let multi = MultiProof::from_proofs(n, &proofs).unwrap();
                assert!(multi.verify(&tree.root(), n, &indices, &[leaf(1), leaf(1)]));
                assert!(!multi.verify(&tree.root(), n, &indices, &[leaf(1), leaf(0)]));
            }
            assert!(!MultiProof { nodes: vec![] }.verify(&tree.root(), n, &[], &[]));
        }
    }

    #[test]
    fn every_leaf_proves_and_tampering_fails() {
        for len in [1usize, 1024, 1025, 5 * 1024 + 3, 17 * 1024] {
            let piece: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let tree = PieceTree::build(&piece);
            assert_eq!(piece_hash(&piece), tree.root(), "len {len}");
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

    #[test]
    fn the_upper_tree_proves_like_the_whole_tree_from_one_group() {
        for len in [0usize, 1, 512, 513, 1024, 2048, 2049, 5 * 1024 + 3, 17 * 1024, 64 * 1024] {
            let piece: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let tree = PieceTree::build(&piece);
            let upper = tree.upper();
            assert!(upper.well_formed(), "len {len}");
            assert_eq!(upper.root(), tree.root());
            let mut encoded = upper.encode();
            assert_eq!(UpperTree::decode(&encoded).as_ref(), Some(&upper));
            let last = encoded.len() - 1;
            encoded[last] ^= 1;
            assert_eq!(UpperTree::decode(&encoded), None, "a damaged tree is refused");
            assert_eq!(UpperTree::decode(&encoded[..last]), None, "a torn tree is refused");
            for i in 0..tree.leaf_count() {
                let range = upper.group_of(i, len as u64).unwrap();
                let group = &piece[range.start as usize..range.end as usize];
                assert_eq!(upper.prove(i, group), tree.prove(i), "len {len} leaf {i}");
                if !group.is_empty() {
                    let mut bad = group.to_vec();
                    bad[group.len() - 1] ^= 1;
                    assert_eq!(upper.prove(i, &bad), None, "len {len} leaf {i}: damaged group");
                    assert_eq!(upper.prove(i, &group[..group.len() - 1]), None, "len {len} leaf {i}: short group");
                }
            }
            assert!(upper.group_of(tree.leaf_count(), len as u64).is_none());
            let mut odd = upper.clone();
            odd.levels.pop();
            assert!(!odd.well_formed());
        }
    }
}
