//! registry state: `registry/prov/<owner>` -> Provider, unbonding index by height.
//! Provider stakes sit in the `REGISTRY_POOL` module account.

use borsh::{BorshDeserialize, BorshSerialize};
use std::sync::LazyLock;
use tessera_types::{Address, Amount, Height};

use super::msg::ProviderInfo;
use super::reputation::Reputation;
use crate::store::{address_at, key, Overlay};

pub static REGISTRY_POOL: LazyLock<Address> = LazyLock::new(|| Address::module("registry"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ProviderStatus {
    Active,
    /// Deregistered; the stake returns at `until`.
    Unbonding { until: Height },
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Provider {
    pub owner: Address,
    pub info: ProviderInfo,
    pub stake: Amount,
    pub status: ProviderStatus,
    pub registered_at: Height,
    pub last_heartbeat: Height,
    pub reputation: Reputation,
    pub active_leases: u32,
    pub completed_leases: u64,
    pub failed_leases: u64,
}

const PROVIDER_PREFIX: &str = "registry/prov/";
const UNBONDING_PREFIX: &str = "registry/unb/";

fn provider_key(owner: &Address) -> Vec<u8> {
    key(PROVIDER_PREFIX, &[&owner.0])
}

pub fn provider(st: &Overlay, owner: &Address) -> Option<Provider> {
    st.get_obj(&provider_key(owner))
}

pub fn put_provider(st: &mut Overlay, p: &Provider) {
    st.put_obj(provider_key(&p.owner), p);
}

pub fn remove_provider(st: &mut Overlay, owner: &Address) {
    st.delete(provider_key(owner));
}

pub fn all_providers(st: &Overlay) -> Vec<Provider> {
    st.scan_objs::<Provider>(PROVIDER_PREFIX.as_bytes()).into_iter().map(|(_, p)| p).collect()
}

pub fn add_unbonding(st: &mut Overlay, at: Height, owner: &Address) {
    st.put(key(UNBONDING_PREFIX, &[&at.to_be_bytes(), &owner.0]), Vec::new());
}

pub fn take_unbondings_at(st: &mut Overlay, at: Height) -> Vec<Address> {
    st.take_prefix(&key(UNBONDING_PREFIX, &[&at.to_be_bytes()])).into_iter().map(|(rest, _)| address_at(&rest)).collect()
}
