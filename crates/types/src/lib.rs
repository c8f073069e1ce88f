//! Shared value types of Tessera: amounts, addresses, hashes, heights and the
//! canonical versioned encoding every persisted or wire type goes through.

mod address;
mod amount;
mod encoding;
mod hash;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError, MICRO_PER_TSR};
pub use encoding::{decode_versioned, encode_versioned, DecodeError};
pub use hash::Hash32;
pub use hash::PublicKey;

/// Block height. Genesis state is height 0; the first block is height 1.
pub type Height = u64;
