//! market parameters (DESIGN.md section 3: bid window, dynamic price).

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct MarketParams {
    /// Bid window when an order does not name one (devnet: 2 blocks).
    pub default_bid_window_blocks: u64,
    pub max_bid_window_blocks: u64,
    pub max_duration_blocks: u64,
    /// Bids kept per order; a full order takes a new bid only below its highest.
    pub max_bids_per_order: u32,
    /// Dynamic pricing: largest move of a class's base price per block (12.5%).
    pub base_price_max_change_ppm: u32,
    /// Dynamic pricing: utilisation the base price steers toward (50%).
    pub target_utilisation_ppm: u32,
    /// Dynamic pricing: starting base price of one CPU core and of one GPU per block.
    pub initial_base_price_cpu: Amount,
    pub initial_base_price_gpu: Amount,
    /// Orders placed for one job before it fails (re-placement after lost providers).
    pub max_job_attempts: u32,
}

impl Default for MarketParams {
    fn default() -> Self {
        MarketParams {
            default_bid_window_blocks: 2,
            max_bid_window_blocks: 100,
            max_duration_blocks: 10_000_000,
            max_bids_per_order: 64,
            base_price_max_change_ppm: 125_000,
            target_utilisation_ppm: 500_000,
            initial_base_price_cpu: Amount::from_micro(1_000),
            initial_base_price_gpu: Amount::from_micro(50_000),
            max_job_attempts: 3,
        }
    }
}
