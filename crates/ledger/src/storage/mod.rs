//! storage: storage deals over erasure-coded pieces, placement on distinct
//! providers, proofs of storage each epoch, fault fees, slashing and repair.

mod exec;
mod msg;
mod params;
mod state;

pub use exec::{deal_escrow, end_block, execute, place_pieces, Placement};
pub use msg::{DealTerms, PackMember, PieceMeta, SegmentPieces, StorageMsg, MAX_PACK_MEMBERS, MAX_PIECE_BYTES, MAX_SEGMENTS_PER_DEAL};
pub use params::StorageParams;
pub use state::{all_deals, beacon, challenge_slot, deal, deals_of_cid, deals_of_provider, pack_member_count, pack_members, pending_challenges, proof_load, used_bytes, Deal, Piece, PendingChallenge, STORAGE_POOL};
