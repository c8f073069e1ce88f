//! params: every number the modules use, fixed at genesis (DESIGN.md section 3).

use borsh::{BorshDeserialize, BorshSerialize};

use crate::bank::BankParams;
use crate::market::MarketParams;
use crate::registry::RegistryParams;
use crate::rewards::RewardsParams;
use crate::staking::StakingParams;
use crate::storage::StorageParams;
use crate::store::Overlay;

#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct Params {
    pub bank: BankParams,
    pub staking: StakingParams,
    pub registry: RegistryParams,
    pub market: MarketParams,
    pub rewards: RewardsParams,
    pub storage: StorageParams,
}

const PARAMS_KEY: &str = "params";
const CHAIN_ID_KEY: &str = "chain_id";

/// The chain's parameters; a state without them was never initialised.
pub fn params(st: &Overlay) -> Params {
    st.get_obj(PARAMS_KEY.as_bytes()).expect("state has no params: genesis was not applied")
}

pub(crate) fn set_params(st: &mut Overlay, p: &Params) {
    st.put_obj(PARAMS_KEY.as_bytes().to_vec(), p);
}

pub fn chain_id(st: &Overlay) -> String {
    st.get_obj(CHAIN_ID_KEY.as_bytes()).expect("state has no chain id: genesis was not applied")
}

pub(crate) fn set_chain_id(st: &mut Overlay, id: &str) {
    st.put_obj(CHAIN_ID_KEY.as_bytes().to_vec(), &id.to_string());
}
