//! `Address`: an account's 20-byte id, the blake3 hash of its ed25519 public key.

use borsh::{BorshDeserialize, BorshSerialize};
use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "tsr1";

/// Account address: the first 20 bytes of blake3(public key), or of a module's
/// name for module accounts. Written as `tsr1` followed by 40 hex digits.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Address(pub [u8; 20]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address {0:?} must start with \"tsr1\" followed by 40 hex digits")]
    Malformed(String),
}

impl Address {
    pub fn from_public_key(public_key: &[u8; 32]) -> Address {
        let digest = blake3::hash(public_key);
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&digest.as_bytes()[..20]);
        Address(bytes)
    }

    /// The account that holds a ledger module's funds (escrow, stake). No key
    /// can sign for it: its bytes are a hash of a name, not of a public key.
    pub fn module(name: &str) -> Address {
        let digest = blake3::hash(format!("tessera-module:{name}").as_bytes());
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&digest.as_bytes()[..20]);
        Address(bytes)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || AddressError::Malformed(text.to_string());
        let hex_part = text.trim().strip_prefix(PREFIX).ok_or_else(malformed)?;
        let raw = hex::decode(hex_part).map_err(|_| malformed())?;
        let bytes: [u8; 20] = raw.try_into().map_err(|_| malformed())?;
        Ok(Address(bytes))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let a = Address::from_public_key(&[7u8; 32]);
        assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        assert!("tsr1zz".parse::<Address>().is_err());
        assert!("abc".parse::<Address>().is_err());
        assert!(format!("tsr1{}", "00".repeat(19)).parse::<Address>().is_err());
        assert_ne!(Address::module("market"), Address::module("staking"));
    }
}
