//! staking: validators, bonding and unbonding, the validator set, slashing.

mod exec;
mod msg;
mod params;
mod state;

pub use exec::{end_block, execute, slash, validator_set};
pub use msg::StakingMsg;
pub use params::StakingParams;
pub use state::{all_validators, delegation, unbondings_of, validator, Unbonding, Validator, STAKING_POOL};
