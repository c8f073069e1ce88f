//! registry transactions and the provider description they carry.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

use crate::error::{invalid, TxError};
use crate::tx::{check_positive, check_text};

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct Gpu {
    pub model: String,
    pub memory_mb: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct Hardware {
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub gpus: Vec<Gpu>,
}

/// A provider's standing prices, per block, per unit of each resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct PriceList {
    pub per_cpu_core: Amount,
    pub per_gb_ram: Amount,
    pub per_gb_disk: Amount,
    pub per_gpu: Amount,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct ProviderInfo {
    pub hardware: Hardware,
    pub region: String,
    pub endpoints: Vec<String>,
    pub prices: PriceList,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum RegistryMsg {
    Register { info: ProviderInfo, stake: Amount },
    Update { info: ProviderInfo },
    /// Starts the unbonding of the provider's stake; it may not bid meanwhile.
    Deregister,
    /// Proves liveness; leases of a provider silent past the timeout end.
    Heartbeat,
}

impl ProviderInfo {
    pub fn validate(&self) -> Result<(), TxError> {
        check_text("region", &self.region, 64)?;
        if self.endpoints.len() > 8 {
            return Err(invalid("at most 8 endpoints"));
        }
        for e in &self.endpoints {
            check_text("endpoint", e, 256)?;
        }
        if self.hardware.gpus.len() > 64 {
            return Err(invalid("at most 64 GPUs per provider"));
        }
        for g in &self.hardware.gpus {
            check_text("GPU model", &g.model, 64)?;
        }
        if self.hardware.cpu_cores == 0 && self.hardware.gpus.is_empty() && self.hardware.disk_gb == 0 {
            return Err(invalid("a provider must offer CPU cores, GPUs or disk"));
        }
        Ok(())
    }
}

impl RegistryMsg {
    pub fn validate_basic(&self) -> Result<(), TxError> {
        match self {
            RegistryMsg::Register { info, stake } => {
                info.validate()?;
                check_positive("provider stake", *stake)
            }
            RegistryMsg::Update { info } => info.validate(),
            RegistryMsg::Deregister | RegistryMsg::Heartbeat => Ok(()),
        }
    }
}
