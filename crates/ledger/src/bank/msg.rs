//! bank transactions.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::{Address, Amount};

use crate::error::TxError;
use crate::tx::check_positive;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum BankMsg {
    Transfer { to: Address, amount: Amount },
}

impl BankMsg {
    pub fn validate_basic(&self) -> Result<(), TxError> {
        match self {
            BankMsg::Transfer { amount, .. } => check_positive("transfer amount", *amount),
        }
    }
}
