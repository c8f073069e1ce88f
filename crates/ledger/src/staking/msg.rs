//! staking transactions.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::{Address, Amount, PublicKey};

use crate::error::TxError;
use crate::tx::{check_positive, check_text};

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum StakingMsg {
    /// Makes the signer a validator operator signing blocks with `consensus_key`.
    CreateValidator { consensus_key: PublicKey, moniker: String, self_bond: Amount },
    /// Bonds the signer's tokens to a validator.
    Bond { validator: Address, amount: Amount },
    /// Starts unbonding; the tokens return after the unbonding period.
    Unbond { validator: Address, amount: Amount },
}

impl StakingMsg {
    pub fn validate_basic(&self) -> Result<(), TxError> {
        match self {
            StakingMsg::CreateValidator { moniker, self_bond, .. } => {
                check_text("moniker", moniker, 64)?;
                check_positive("self bond", *self_bond)
            }
            StakingMsg::Bond { amount, .. } => check_positive("bond amount", *amount),
            StakingMsg::Unbond { amount, .. } => check_positive("unbond amount", *amount),
        }
    }
}
