//! Genesis: the chain id, parameters and initial accounts, validators and providers.

use tessera_types::{Address, Amount, PublicKey};

use crate::error::TxError;
use crate::events::Events;
use crate::registry::{ProviderInfo, RegistryMsg};
use crate::staking::StakingMsg;
use crate::store::Overlay;
use crate::{bank, params, registry, staking, Params, TxContext};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenesisAccount {
    pub address: Address,
    pub balance: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenesisValidator {
    pub operator: Address,
    pub consensus_key: PublicKey,
    pub moniker: String,
    /// Bonded from the operator's genesis balance.
    pub self_bond: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenesisProvider {
    pub owner: Address,
    pub info: ProviderInfo,
    /// Staked from the owner's genesis balance.
    pub stake: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_ms: u64,
    pub params: Params,
    pub accounts: Vec<GenesisAccount>,
    pub validators: Vec<GenesisValidator>,
    #[serde(default)]
    pub providers: Vec<GenesisProvider>,
}

const GENESIS_SUPPLY_KEY: &str = "genesis/supply";

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis account {0} appears twice")]
    DuplicateAccount(Address),
    #[error("genesis validator {operator}: {source}")]
    Validator { operator: Address, source: TxError },
    #[error("genesis provider {owner}: {source}")]
    Provider { owner: Address, source: TxError },
    #[error("genesis has no validator; a chain needs at least one")]
    NoValidators,
    #[error("genesis: {0}")]
    Invalid(TxError),
}

/// Supply right after genesis.
pub fn genesis_supply(st: &Overlay) -> Amount {
    st.get_obj(GENESIS_SUPPLY_KEY.as_bytes()).unwrap_or_default()
}

/// Writes the genesis state. Runs once, on an empty store.
pub fn init_genesis(st: &mut Overlay, g: &Genesis) -> Result<Events, GenesisError> {
    crate::tx::check_text("chain id", &g.chain_id, 64).map_err(GenesisError::Invalid)?;
    if g.validators.is_empty() {
        return Err(GenesisError::NoValidators);
    }
    params::set_chain_id(st, &g.chain_id);
    params::set_params(st, &g.params);
    let mut seen = std::collections::BTreeSet::new();
    for a in &g.accounts {
        if !seen.insert(a.address) {
            return Err(GenesisError::DuplicateAccount(a.address));
        }
        bank::mint(st, &a.address, a.balance).map_err(GenesisError::Invalid)?;
    }
    let supply = bank::supply(st);
    st.put_obj(GENESIS_SUPPLY_KEY.as_bytes().to_vec(), &supply);
    let mut events = Vec::new();
    for v in &g.validators {
        let ctx = TxContext { sender: v.operator, height: 0, time_ms: g.genesis_time_ms };
        let msg = StakingMsg::CreateValidator {
            consensus_key: v.consensus_key,
            moniker: v.moniker.clone(),
            self_bond: v.self_bond,
        };
        let e = msg
            .validate_basic()
            .and_then(|_| staking::execute(st, &ctx, &g.params, &msg))
            .map_err(|source| GenesisError::Validator { operator: v.operator, source })?;
        events.extend(e);
    }
    for p in &g.providers {
        let ctx = TxContext { sender: p.owner, height: 0, time_ms: g.genesis_time_ms };
        let msg = RegistryMsg::Register { info: p.info.clone(), stake: p.stake };
        let e = msg
            .validate_basic()
            .and_then(|_| registry::execute(st, &ctx, &g.params, &msg))
            .map_err(|source| GenesisError::Provider { owner: p.owner, source })?;
        events.extend(e);
    }
    st.commit_tx();
    Ok(events)
}
