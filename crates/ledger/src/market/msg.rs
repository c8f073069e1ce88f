//! market transactions and the order description they carry.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

use crate::error::{invalid, TxError};
use crate::tx::check_positive;

/// What a buyer needs from one provider for the length of a lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub gpus: u32,
    /// Minimum memory of each GPU.
    pub gpu_memory_mb: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pricing {
    /// Providers bid during the bid window; the lowest reputation-adjusted bid wins.
    Auction,
    /// Matches the cheapest standing price list at once.
    Fixed,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct OrderSpec {
    pub resources: Resources,
    pub max_price_per_block: Amount,
    pub duration_blocks: u64,
    pub bid_window_blocks: u64,
    pub pricing: Pricing,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum MarketMsg {
    CreateOrder { spec: OrderSpec },
    PlaceBid { order: u64, price_per_block: Amount },
    CancelOrder { order: u64 },
    CloseLease { lease: u64 },
}

impl MarketMsg {
    pub fn validate_basic(&self) -> Result<(), TxError> {
        match self {
            MarketMsg::CreateOrder { spec } => {
                check_positive("max price per block", spec.max_price_per_block)?;
                if spec.duration_blocks == 0 {
                    return Err(invalid("duration must be at least one block"));
                }
                let r = &spec.resources;
                if r.cpu_cores == 0 && r.gpus == 0 && r.disk_gb == 0 {
                    return Err(invalid("an order must ask for CPU cores, GPUs or disk"));
                }
                if spec.pricing == Pricing::Auction && spec.bid_window_blocks == 0 {
                    return Err(invalid("an auction needs a bid window of at least one block"));
                }
                Ok(())
            }
            MarketMsg::PlaceBid { price_per_block, .. } => check_positive("bid price", *price_per_block),
            MarketMsg::CancelOrder { .. } | MarketMsg::CloseLease { .. } => Ok(()),
        }
    }
}
