//! Blocks: header (with the post-state app hash), transactions, and the record
//! stored per height (block, commit certificate, results).

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_consensus::CommitCertificate;
use tessera_ledger::{Events, TxOutcome};
use tessera_types::{decode_versioned, encode_versioned, Address, DecodeError, Hash32, Height};

pub const BLOCK_VERSION: u8 = 1;
/// Largest block a node accepts from consensus.
pub const MAX_BLOCK_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Header {
    pub chain_id: String,
    pub height: Height,
    pub time_ms: u64,
    pub prev_hash: Hash32,
    /// blake3 over the transaction hashes in order.
    pub tx_root: Hash32,
    /// Merkle root of the state after this block.
    pub app_hash: Hash32,
    pub proposer: Address,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: Header,
    /// Encoded signed transactions.
    pub txs: Vec<Vec<u8>>,
}

impl Header {
    pub fn hash(&self) -> Hash32 {
        Hash32::blake3(&encode_versioned(BLOCK_VERSION, self))
    }
}

impl Block {
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(BLOCK_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        decode_versioned(BLOCK_VERSION, bytes, MAX_BLOCK_BYTES)
    }
}

pub fn tx_root(hashes: &[Hash32]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    for t in hashes {
        h.update(&t.0);
    }
    Hash32(*h.finalize().as_bytes())
}

/// What the store keeps for each height.
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct BlockRecord {
    pub block: Block,
    pub certificate: CommitCertificate,
    pub outcomes: Vec<TxOutcome>,
    pub end_events: Events,
}

impl BlockRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(BLOCK_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<BlockRecord, DecodeError> {
        decode_versioned(BLOCK_VERSION, bytes, MAX_BLOCK_BYTES * 2)
    }
}
