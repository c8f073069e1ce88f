//! bank parameters.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct BankParams {
    /// Smallest fee a transaction may carry; fees go to the block's proposer.
    pub min_fee: Amount,
}

impl Default for BankParams {
    fn default() -> Self {
        BankParams { min_fee: Amount::from_micro(1_000) }
    }
}
