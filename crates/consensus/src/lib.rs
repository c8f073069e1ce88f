//! Consensus boundary, shaped like Malachite's app channel: the engine asks the
//! application to propose a value for a height, then tells it which value was
//! decided with a commit certificate; the application commits it and replies
//! before the engine moves on. `solo` is the single-validator engine behind
//! this boundary; a BFT engine replaces it without touching the node.

pub mod solo;

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::{Hash32, Height, PublicKey};
use tokio::sync::oneshot;

/// A validator's signature over a decided value.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct CommitSignature {
    pub validator: PublicKey,
    #[serde(with = "sig_hex")]
    pub signature: [u8; 64],
}

/// Proof that a value was decided at a height: signatures of more than two
/// thirds of the voting power.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct CommitCertificate {
    pub height: Height,
    pub round: u32,
    pub value_id: Hash32,
    pub signatures: Vec<CommitSignature>,
}

/// Bytes a validator signs to commit `value_id` at `height` and `round`.
pub fn commit_sign_bytes(chain_id: &str, height: Height, round: u32, value_id: &Hash32) -> Vec<u8> {
    let mut out = b"tessera-commit-v1".to_vec();
    out.extend_from_slice(&(chain_id.len() as u32).to_be_bytes());
    out.extend_from_slice(chain_id.as_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&round.to_be_bytes());
    out.extend_from_slice(&value_id.0);
    out
}

impl CommitCertificate {
    /// Checks the signatures against a validator set of (key, power): valid
    /// signatures of distinct validators must carry more than 2/3 of the power.
    pub fn verify(&self, chain_id: &str, validators: &[(PublicKey, u64)]) -> Result<(), String> {
        let total: u128 = validators.iter().map(|(_, p)| *p as u128).sum();
        let message = commit_sign_bytes(chain_id, self.height, self.round, &self.value_id);
        let mut seen = std::collections::BTreeSet::new();
        let mut signed: u128 = 0;
        for s in &self.signatures {
            let Some((_, power)) = validators.iter().find(|(k, _)| *k == s.validator) else {
                return Err(format!("signature by {} who is not a validator", s.validator));
            };
            if !seen.insert(s.validator) {
                return Err(format!("validator {} signed twice", s.validator));
            }
            if !tessera_crypto::verify(&s.validator.0, &message, &s.signature) {
                return Err(format!("bad commit signature by {}", s.validator));
            }
            signed += *power as u128;
        }
        if signed * 3 <= total * 2 {
            return Err(format!("commit carries {signed} of {total} voting power; more than 2/3 is needed"));
        }
        Ok(())
    }
}

/// A value the application proposes: its id (the block hash) and its bytes.
pub struct ProposedValue {
    pub height: Height,
    pub round: u32,
    pub value_id: Hash32,
    pub value: Vec<u8>,
}

/// Where the application is when the engine starts.
pub struct StartInfo {
    /// First height to decide (last committed + 1).
    pub height: Height,
    pub validators: Vec<(PublicKey, u64)>,
}

/// Messages from the engine to the application.
pub enum AppMsg {
    ConsensusReady { reply: oneshot::Sender<StartInfo> },
    GetValue { height: Height, round: u32, reply: oneshot::Sender<ProposedValue> },
    /// `reply` carries the next height's validator set once the value is durable,
    /// or an error that stops the engine.
    Decided { certificate: CommitCertificate, value: Vec<u8>, reply: oneshot::Sender<Result<Vec<(PublicKey, u64)>, String>> },
}

mod sig_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(sig))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        let raw = hex::decode(text).map_err(serde::de::Error::custom)?;
        raw.try_into().map_err(|_| serde::de::Error::custom("signature must be 64 bytes"))
    }
}
