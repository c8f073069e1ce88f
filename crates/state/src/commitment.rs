//! State commitment: a SHA-256 Jellyfish Merkle tree keyed by the hash of each
//! state key. A proof shows that a key has a value (or none) under an app hash.

use borsh::{BorshDeserialize, BorshSerialize};
use jmt::proof::SparseMerkleProof;
use jmt::{KeyHash, RootHash};
use sha2::Sha256;

pub fn key_hash(key: &[u8]) -> KeyHash {
    KeyHash::with::<Sha256>(key)
}

/// A membership or non-membership proof, in its canonical byte form.
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct StateProof(pub SparseMerkleProof<Sha256>);

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("proof does not decode: {0}")]
    Decode(String),
    #[error("proof does not match the app hash: {0}")]
    Mismatch(String),
}

impl StateProof {
    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("Vec write")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<StateProof, ProofError> {
        borsh::from_slice(bytes).map_err(|e| ProofError::Decode(e.to_string()))
    }
}

/// Checks that `key` maps to `value` (or to nothing) in the state with root `app_hash`.
pub fn verify_proof(app_hash: [u8; 32], key: &[u8], value: Option<&[u8]>, proof: &[u8]) -> Result<(), ProofError> {
    let proof = StateProof::from_bytes(proof)?;
    proof.0.verify(RootHash(app_hash), key_hash(key), value).map_err(|e| ProofError::Mismatch(e.to_string()))
}
