//! Signatures (ed25519 with ZIP-215 rules, batch verification) and hashing.
//!
//! Batch verification needs random coefficients; to keep the ledger free of
//! randomness they are drawn from a blake3 stream keyed by the whole batch, so
//! every node computes the same verdict while a forger cannot choose them.

use ed25519_consensus::{batch, Signature, SigningKey, VerificationKey, VerificationKeyBytes};
use rand_core::{CryptoRng, RngCore};
use tessera_types::Address;

pub use tessera_types::Hash32;

/// An account or validator key pair.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("secret key must be 64 hex digits")]
    BadSecret,
}

impl KeyPair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> KeyPair {
        KeyPair { signing: SigningKey::new(rand_core::OsRng) }
    }

    /// A key derived from a seed: for tests, benchmarks and simulations only.
    pub fn from_seed(seed: &[u8]) -> KeyPair {
        KeyPair { signing: SigningKey::from(*blake3::hash(seed).as_bytes()) }
    }

    pub fn from_secret_hex(text: &str) -> Result<KeyPair, KeyError> {
        let raw = hex::decode(text.trim()).map_err(|_| KeyError::BadSecret)?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| KeyError::BadSecret)?;
        Ok(KeyPair { signing: SigningKey::from(bytes) })
    }

    pub fn secret_hex(&self) -> String {
        hex::encode(self.signing.to_bytes())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verification_key().to_bytes()
    }

    pub fn address(&self) -> Address {
        Address::from_public_key(&self.public_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// Verifies one signature.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    match VerificationKey::try_from(*public_key) {
        Ok(key) => key.verify(&Signature::from(*signature), message).is_ok(),
        Err(_) => false,
    }
}

/// One signature to check in a batch.
pub struct SignedMessage<'a> {
    pub public_key: [u8; 32],
    pub message: &'a [u8],
    pub signature: [u8; 64],
}

/// Verifies many signatures at once. Returns one verdict per item, in order.
/// A batch that fails is re-checked one by one to find the bad items, so the
/// verdicts are the same as individual verification.
pub fn verify_batch(items: &[SignedMessage<'_>]) -> Vec<bool> {
    if items.is_empty() {
        return Vec::new();
    }
    let mut transcript = blake3::Hasher::new();
    transcript.update(b"tessera-batch-verify-v1");
    let mut verifier = batch::Verifier::new();
    for item in items {
        transcript.update(&item.public_key);
        transcript.update(&item.signature);
        transcript.update(&(item.message.len() as u64).to_le_bytes());
        transcript.update(item.message);
        verifier.queue((
            VerificationKeyBytes::from(item.public_key),
            Signature::from(item.signature),
            item.message,
        ));
    }
    let rng = TranscriptRng(transcript.finalize_xof());
    if verifier.verify(rng).is_ok() {
        return vec![true; items.len()];
    }
    items.iter().map(|i| verify(&i.public_key, i.message, &i.signature)).collect()
}

/// Deterministic coefficient source for batch verification (see module doc).
struct TranscriptRng(blake3::OutputReader);

impl RngCore for TranscriptRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoRng for TranscriptRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_matches_single_verdicts() {
        let keys: Vec<KeyPair> = (0..8u8).map(|i| KeyPair::from_seed(&[i])).collect();
        let messages: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<[u8; 64]> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        sigs[3][0] ^= 1;
        let items: Vec<SignedMessage> = keys
            .iter()
            .zip(&messages)
            .zip(&sigs)
            .map(|((k, m), s)| SignedMessage { public_key: k.public_key(), message: m, signature: *s })
            .collect();
        let verdicts = verify_batch(&items);
        assert_eq!(verdicts, vec![true, true, true, false, true, true, true, true]);
        assert!(verify_batch(&items[4..]).iter().all(|v| *v));
    }

    #[test]
    fn secret_round_trip() {
        let k = KeyPair::generate();
        let again = KeyPair::from_secret_hex(&k.secret_hex()).unwrap();
        assert_eq!(k.address(), again.address());
        assert!(KeyPair::from_secret_hex("zz").is_err());
    }
}
