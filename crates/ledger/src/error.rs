//! Why a transaction was rejected. Each variant has a stable result code that is
//! recorded in the block; the message names the problem and how to fix it.

use tessera_types::{Address, Amount, DecodeError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("transaction is for chain {found:?} but this chain is {expected:?}")]
    WrongChain { expected: String, found: String },
    #[error("signature does not verify for signer {0}")]
    BadSignature(Address),
    #[error("wrong nonce for {address}: expected {expected}, got {found}")]
    WrongNonce { address: Address, expected: u64, found: u64 },
    #[error("fee {offered} TSR is below the minimum fee of {min} TSR")]
    FeeTooLow { min: Amount, offered: Amount },
    #[error("insufficient funds in {address}: balance {balance} TSR, needs {needed} TSR")]
    InsufficientFunds { address: Address, balance: Amount, needed: Amount },
    #[error("invalid transaction: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not allowed: {0}")]
    Unauthorized(String),
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
}

impl TxError {
    /// Stable numeric code; 0 means success and is never used here.
    pub fn code(&self) -> u32 {
        match self {
            TxError::Decode(_) => 1,
            TxError::WrongChain { .. } => 2,
            TxError::BadSignature(_) => 3,
            TxError::WrongNonce { .. } => 4,
            TxError::FeeTooLow { .. } => 5,
            TxError::InsufficientFunds { .. } => 6,
            TxError::Invalid(_) => 7,
            TxError::NotFound(_) => 8,
            TxError::Unauthorized(_) => 9,
            TxError::Overflow(_) => 10,
        }
    }
}

pub fn invalid(message: impl Into<String>) -> TxError {
    TxError::Invalid(message.into())
}
