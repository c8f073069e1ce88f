//! storage transactions.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_storage::{ErasureScheme, MultiProof, LEAF_BYTES};
use tessera_types::{Amount, Hash32};

use crate::error::{invalid, TxError};
use crate::tx::check_positive;

/// Largest piece a deal may name (a 4+2 scheme over 64 MiB segments).
pub const MAX_PIECE_BYTES: u64 = 64 * 1024 * 1024;
/// Segments one deal may cover; a larger file is stored as several deals.
pub const MAX_SEGMENTS_PER_DEAL: usize = 32;
/// Most leaves one proof may carry.
pub const MAX_PROOF_LEAVES: usize = 64;
/// Most objects one pack may hold.
pub const MAX_PACK_MEMBERS: usize = 1024;

/// One object inside a pack: its own content id and where its bytes lie in
/// the pack's plain bytes. The ledger records what the owner says; a reader
/// checks the member's bytes against its content id.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct PackMember {
    pub cid: Hash32,
    pub offset: u64,
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct PieceMeta {
    /// The root of the piece's Merkle tree (`tessera_storage::piece_hash`):
    /// its address, and what its proofs of storage are checked against.
    pub hash: Hash32,
    pub len: u64,
}

/// The K+M pieces of one segment of the content.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct SegmentPieces {
    pub segment: u32,
    /// Plain length and blake3 hash of the segment, checked after decoding.
    pub len: u64,
    pub hash: Hash32,
    pub pieces: Vec<PieceMeta>,
}

/// What a deal stores and on what terms: content `cid`'s segments and their
/// K+M pieces, for `duration_blocks` at most `max_price_per_gib_block`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DealTerms {
    pub cid: Hash32,
    pub scheme: ErasureScheme,
    /// Segment size of the content's manifest (the last segment may be shorter).
    pub segment_bytes: u64,
    pub segments: Vec<SegmentPieces>,
    pub duration_blocks: u64,
    pub max_price_per_gib_block: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum StorageMsg {
    /// Stores pieces of content `cid` for `duration_blocks`; the ledger picks a
    /// distinct provider for each piece of a segment and locks
    /// `max_price_per_gib_block` x bytes x duration in escrow.
    CreateDeal(DealTerms),
    /// A provider's answer to this epoch's challenge of one piece.
    ProveStorage { deal: u64, piece: u32, epoch: u64, leaves: Vec<Vec<u8>>, proof: MultiProof },
    /// The owner ends a deal early; unspent escrow returns.
    EndDeal { deal: u64 },
    /// A deal over a pack: many small objects stored end to end as one
    /// content (one deal, one set of pieces and proofs), each object still
    /// found by its own content id. The pack fits one deal.
    CreatePack {
        terms: DealTerms,
        /// In offset order, not overlapping, inside the pack.
        members: Vec<PackMember>,
    },
}

impl DealTerms {
    /// Bytes of all the pieces the deal stores.
    pub fn piece_bytes(&self) -> u64 {
        self.segments.iter().flat_map(|s| &s.pieces).map(|p| p.len).sum()
    }

    /// The escrow the deal locks: the price ceiling for every piece byte over the whole duration.
    pub fn escrow(&self) -> Option<Amount> {
        super::exec::deal_escrow(self.max_price_per_gib_block, self.piece_bytes(), self.duration_blocks)
    }
}

impl StorageMsg {
    /// The deal a `CreateDeal` or `CreatePack` opens.
    pub fn deal_terms(&self) -> Option<&DealTerms> {
        match self {
            StorageMsg::CreateDeal(t) | StorageMsg::CreatePack { terms: t, .. } => Some(t),
            _ => None,
        }
    }
}

fn validate_deal(t: &DealTerms) -> Result<(), TxError> {
    let DealTerms { scheme, segments, duration_blocks, max_price_per_gib_block, .. } = t;
    let (duration_blocks, max_price_per_gib_block) = (*duration_blocks, *max_price_per_gib_block);
    scheme.validate().map_err(|e| invalid(e.to_string()))?;
    check_positive("max price per GiB per block", max_price_per_gib_block)?;
    if duration_blocks == 0 {
        return Err(invalid("a deal lasts at least one block"));
    }
    if segments.is_empty() || segments.len() > MAX_SEGMENTS_PER_DEAL {
        return Err(invalid(format!("a deal covers 1 to {MAX_SEGMENTS_PER_DEAL} segments")));
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in segments {
        if !seen.insert(s.segment) {
            return Err(invalid(format!("segment {} appears twice", s.segment)));
        }
        if s.pieces.len() != scheme.total() {
            return Err(invalid(format!(
                "segment {} has {} pieces; a {}+{} scheme needs {}",
                s.segment,
                s.pieces.len(),
                scheme.data,
                scheme.parity,
                scheme.total()
            )));
        }
        if s.len == 0 {
            return Err(invalid(format!("segment {} is empty", s.segment)));
        }
        for p in &s.pieces {
            if p.len == 0 || p.len > MAX_PIECE_BYTES {
                return Err(invalid(format!("piece length {} is outside 1..={MAX_PIECE_BYTES}", p.len)));
            }
        }
    }
    Ok(())
}

fn validate_members(cid: &Hash32, segments: &[SegmentPieces], members: &[PackMember]) -> Result<(), TxError> {
    if members.is_empty() || members.len() > MAX_PACK_MEMBERS {
        return Err(invalid(format!("a pack holds 1 to {MAX_PACK_MEMBERS} objects")));
    }
    if !segments.iter().enumerate().all(|(i, s)| s.segment == i as u32) {
        return Err(invalid("a pack's deal covers all of its segments, in order"));
    }
    let total: u64 = segments.iter().map(|s| s.len).sum();
    let mut next = 0u64;
    for m in members {
        let end = m.offset.checked_add(m.len).ok_or_else(|| invalid("a pack member's range overflows"))?;
        if m.len == 0 || m.offset < next || end > total {
            return Err(invalid(format!(
                "pack member at {}..{end} must be non-empty, after the one before it and inside the pack's {total} bytes",
                m.offset
            )));
        }
        if m.cid == *cid {
            return Err(invalid("a pack cannot be its own member"));
        }
        next = end;
    }
    Ok(())
}

impl StorageMsg {
    pub fn validate_basic(&self) -> Result<(), TxError> {
        match self {
            StorageMsg::CreateDeal(terms) => validate_deal(terms),
            StorageMsg::CreatePack { terms, members } => {
                validate_deal(terms)?;
                validate_members(&terms.cid, &terms.segments, members)
            }
            StorageMsg::ProveStorage { leaves, proof, .. } => {
                if leaves.len() > MAX_PROOF_LEAVES {
                    return Err(invalid(format!("a proof carries at most {MAX_PROOF_LEAVES} leaves")));
                }
                // A sibling per leaf and level at most, in a tree of at most 2^50 leaves.
                if proof.nodes.len() > leaves.len() * 50 {
                    return Err(invalid("a proof carries at most 50 hashes per leaf"));
                }
                if leaves.iter().any(|l| l.len() > LEAF_BYTES) {
                    return Err(invalid(format!("a leaf is at most {LEAF_BYTES} bytes")));
                }
                Ok(())
            }
            StorageMsg::EndDeal { .. } => Ok(()),
        }
    }
}
