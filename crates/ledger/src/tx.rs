//! Transactions: canonical encoding (version tag + borsh), signing bytes, and the
//! checks that need no state (`validate_basic`).

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_crypto::KeyPair;
use tessera_types::{decode_versioned, encode_versioned, Address, Amount, DecodeError, Hash32, PublicKey};

use crate::error::{invalid, TxError};
use crate::{bank, jobs, market, registry, staking, storage};

/// Encoding version of [`SignedTx`]. 2: a storage deal's pieces carry one
/// hash, their Merkle root (1 also had a flat blake3).
pub const TX_VERSION: u8 = 2;
/// Largest encoded transaction a node accepts.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// A transaction's signature covers this domain and the blake3 hash of its
/// body: ed25519 hashes what it signs with SHA-512 twice (and verification
/// once more), and a storage proof's body is tens of KB.
const SIGN_DOMAIN: &[u8] = b"tessera-tx-v2";

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Msg {
    Bank(bank::BankMsg),
    Staking(staking::StakingMsg),
    Registry(registry::RegistryMsg),
    Market(market::MarketMsg),
    Storage(storage::StorageMsg),
    Jobs(jobs::JobMsg),
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct TxBody {
    pub chain_id: String,
    pub signer: PublicKey,
    /// Must equal the signer's account nonce; each included transaction bumps it.
    pub nonce: u64,
    pub fee: Amount,
    pub msg: Msg,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedTx {
    pub body: TxBody,
    pub signature: [u8; 64],
}

impl TxBody {
    pub fn sign_bytes(&self) -> Vec<u8> {
        let body = borsh::to_vec(self).expect("Vec write");
        [SIGN_DOMAIN, &Hash32::blake3(&body).0].concat()
    }

    pub fn sign(self, key: &KeyPair) -> SignedTx {
        let signature = key.sign(&self.sign_bytes());
        SignedTx { body: self, signature }
    }

    pub fn signer_address(&self) -> Address {
        Address::from_public_key(&self.signer.0)
    }
}

impl SignedTx {
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(TX_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedTx, DecodeError> {
        decode_versioned(TX_VERSION, bytes, MAX_TX_BYTES)
    }

    /// The transaction id: blake3 of its encoding.
    pub fn hash(&self) -> Hash32 {
        Hash32::blake3(&self.encode())
    }

    pub fn verify_signature(&self) -> bool {
        tessera_crypto::verify(&self.body.signer.0, &self.body.sign_bytes(), &self.signature)
    }

    /// Checks that need no state: bounded fields and sane values.
    pub fn validate_basic(&self) -> Result<(), TxError> {
        check_text("chain id", &self.body.chain_id, 64)?;
        match &self.body.msg {
            Msg::Bank(m) => m.validate_basic(),
            Msg::Staking(m) => m.validate_basic(),
            Msg::Registry(m) => m.validate_basic(),
            Msg::Market(m) => m.validate_basic(),
            Msg::Storage(m) => m.validate_basic(),
            Msg::Jobs(m) => m.validate_basic(),
        }
    }
}

/// Rejects empty, oversized or control-character text fields.
pub fn check_text(what: &str, text: &str, max_len: usize) -> Result<(), TxError> {
    if text.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if text.len() > max_len {
        return Err(invalid(format!("{what} is {} bytes, over the limit of {max_len}", text.len())));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(format!("{what} contains control characters")));
    }
    Ok(())
}

pub fn check_positive(what: &str, amount: Amount) -> Result<(), TxError> {
    if amount.is_zero() {
        return Err(invalid(format!("{what} must be greater than zero")));
    }
    Ok(())
}
