//! Persistent state: a redb database holding the ledger's key-value state, a
//! Jellyfish Merkle tree over it (the app hash), committed blocks and the
//! transaction index. One redb write transaction commits a whole block, with
//! immediate durability, so a crash leaves either all of a block or none.

mod commitment;
mod redb_store;

pub use commitment::{key_hash, verify_proof, ProofError, StateProof};
pub use redb_store::{CommitBatch, Snapshot, Store, StoreError, TxLocation};
