//! registry: compute and storage providers, their stake, hardware, prices,
//! heartbeats and reputation.

mod exec;
mod msg;
mod params;
mod reputation;
mod state;

pub use exec::{claw_back, end_block, execute, record_outcome, slash_provider};
pub use msg::{Gpu, Hardware, PriceList, ProviderInfo, RegistryMsg};
pub use params::RegistryParams;
pub use reputation::Reputation;
pub use state::{all_providers, provider, put_provider, Provider, ProviderStatus, REGISTRY_POOL};
