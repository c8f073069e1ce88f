//! Storage core: erasure coding of segments into pieces, content ids, piece
//! Merkle trees and proofs, and storage challenges. Pure: bytes in, bytes out;
//! no clock, no randomness (challenge indices come from a beacon), no I/O
//! beyond the `Read` a caller hands to [`SegmentReader`]. Segment buffers and
//! codecs are reused across readers (a bounded process-wide pool).

mod challenge;
mod erasure;
mod lanes;
mod manifest;
mod merkle;
mod pool;

pub use challenge::{challenge_indices, escape_probability_ppm, proof_bytes};
pub use erasure::{ErasureError, ErasureScheme, SegmentCodec, Shards};
pub use manifest::{Cid, EncodedSegment, Manifest, PieceEntry, SegmentEntry, SegmentReader, MANIFEST_VERSION};
pub use merkle::{leaf_count, piece_hash, MerkleProof, MultiProof, PieceTree, UpperTree, LEAF_BYTES};
