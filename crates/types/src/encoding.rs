//! Canonical encoding: one version byte, then the value in borsh (deterministic,
//! length-prefixed, no maps with undefined order). Every persisted or wire type
//! goes through here so that a format change is visible as a new version tag.

use borsh::{BorshDeserialize, BorshSerialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty input")]
    Empty,
    #[error("unsupported encoding version {found} (this node reads version {expected})")]
    Version { found: u8, expected: u8 },
    #[error("input is {len} bytes, over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed encoding: {0}")]
    Malformed(String),
}

pub fn encode_versioned<T: BorshSerialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    value.serialize(&mut out).expect("writing to a Vec cannot fail");
    out
}

/// Decodes `bytes` that must be exactly one versioned value of at most `limit` bytes;
/// trailing bytes are an error so that every value has a single encoding.
pub fn decode_versioned<T: BorshDeserialize>(version: u8, bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { len: bytes.len(), limit });
    }
    let (&found, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if found != version {
        return Err(DecodeError::Version { found, expected: version });
    }
    borsh::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))
}
