//! registry parameters (DESIGN.md section 3: reputation, heartbeats).

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct RegistryParams {
    pub min_provider_stake: Amount,
    /// Blocks between a deregistration and the stake's return.
    pub unbonding_blocks: u64,
    /// A provider silent for more blocks than this loses its leases.
    pub heartbeat_timeout_blocks: u64,
    /// Beta reputation forgetting factor lambda, parts per million (0.999).
    pub reputation_lambda_ppm: u32,
    /// Providers scoring below this (ppm) may not bid (0.96).
    pub disqualify_below_ppm: u32,
    /// Initial pseudo-counts of a new provider (alpha, beta), in micro-units.
    pub initial_alpha_micro: u64,
    pub initial_beta_micro: u64,
}

impl Default for RegistryParams {
    fn default() -> Self {
        RegistryParams {
            min_provider_stake: Amount::from_tsr(100),
            unbonding_blocks: 120,
            heartbeat_timeout_blocks: 20,
            reputation_lambda_ppm: 999_000,
            disqualify_below_ppm: 960_000,
            initial_alpha_micro: 49_000_000,
            initial_beta_micro: 1_000_000,
        }
    }
}
