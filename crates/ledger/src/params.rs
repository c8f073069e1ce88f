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

/// Checks that the state's parameters decode as this version's `Params`: a
/// state written by a version with other parameters (or other state layouts)
/// is refused with a reason instead of failing inside a block.
pub fn check_params(st: &Overlay) -> Result<(), String> {
    let bytes = st.get(PARAMS_KEY.as_bytes()).ok_or("the state has no parameters: its genesis was never applied")?;
    borsh::from_slice::<Params>(&bytes)
        .map(|_| ())
        .map_err(|e| format!("the state's parameters do not decode as this version's ({e}): it was written by another version"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn parameters_of_another_version_are_refused_with_a_reason() {
        let base = MemStore::default();
        let mut st = Overlay::new(&base);
        assert!(check_params(&st).unwrap_err().contains("never applied"));
        set_params(&mut st, &Params::default());
        assert_eq!(check_params(&st), Ok(()));
        // An older version's parameters: one field fewer at the end.
        let mut old = borsh::to_vec(&Params::default()).unwrap();
        old.truncate(old.len() - 8);
        st.put(PARAMS_KEY.as_bytes().to_vec(), old);
        assert!(check_params(&st).unwrap_err().contains("another version"));
    }
}
