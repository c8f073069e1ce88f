//! storage transactions.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_storage::{ErasureScheme, MerkleProof, LEAF_BYTES};
use tessera_types::{Amount, Hash32};

use crate::error::{invalid, TxError};
use crate::tx::check_positive;

/// Largest piece a deal may name (a 4+2 scheme over 64 MiB segments).
pub const MAX_PIECE_BYTES: u64 = 64 * 1024 * 1024;
/// Segments one deal may cover; a larger file is stored as several deals.
pub const MAX_SEGMENTS_PER_DEAL: usize = 32;
/// Most leaves one proof may carry.
pub const MAX_PROOF_LEAVES: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct PieceMeta {
    pub hash: Hash32,
    pub merkle_root: Hash32,
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

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum StorageMsg {
    /// Stores pieces of content `cid` for `duration_blocks`; the ledger picks a
    /// distinct provider for each piece of a segment and locks
    /// `max_price_per_gib_block` x bytes x duration in escrow.
    CreateDeal {
        cid: Hash32,
        scheme: ErasureScheme,
        /// Segment size of the content's manifest (the last segment may be shorter).
        segment_bytes: u64,
        segments: Vec<SegmentPieces>,
        duration_blocks: u64,
        max_price_per_gib_block: Amount,
    },
    /// A provider's answer to this epoch's challenge of one piece.
    ProveStorage { deal: u64, piece: u32, epoch: u64, leaves: Vec<Vec<u8>>, proofs: Vec<MerkleProof> },
    /// The owner ends a deal early; unspent escrow returns.
    EndDeal { deal: u64 },
}

impl StorageMsg {
    pub fn validate_basic(&self) -> Result<(), TxError> {
        match self {
            StorageMsg::CreateDeal { scheme, segments, duration_blocks, max_price_per_gib_block, .. } => {
                scheme.validate().map_err(|e| invalid(e.to_string()))?;
                check_positive("max price per GiB per block", *max_price_per_gib_block)?;
                if *duration_blocks == 0 {
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
            StorageMsg::ProveStorage { leaves, proofs, .. } => {
                if leaves.len() != proofs.len() || leaves.len() > MAX_PROOF_LEAVES {
                    return Err(invalid("a proof carries one Merkle path per leaf, at most 64"));
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
