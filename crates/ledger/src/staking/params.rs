//! staking parameters (DESIGN.md section 3: Cosmos defaults as a start).

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct StakingParams {
    /// Blocks between an unbond and the tokens becoming liquid.
    pub unbonding_blocks: u64,
    pub max_validators: u32,
    pub min_self_bond: Amount,
    /// Share of stake burned for a double sign, in parts per million (5%).
    pub slash_double_sign_ppm: u32,
    /// Share of stake burned for downtime, in parts per million (1%).
    pub slash_downtime_ppm: u32,
}

impl Default for StakingParams {
    fn default() -> Self {
        StakingParams {
            unbonding_blocks: 120,
            max_validators: 100,
            min_self_bond: Amount::from_tsr(1_000),
            slash_double_sign_ppm: 50_000,
            slash_downtime_ppm: 10_000,
        }
    }
}
