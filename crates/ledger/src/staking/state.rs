//! staking state: validators, delegations and unbonding entries.
//!
//! Bonded and unbonding tokens sit in the `STAKING_POOL` module account;
//! invariant: its balance equals the sum of validator tokens plus unbonding
//! entries.

use borsh::{BorshDeserialize, BorshSerialize};
use std::sync::LazyLock;
use tessera_types::{Address, Amount, Height, PublicKey};

use crate::store::{address_at, key, Overlay};

pub static STAKING_POOL: LazyLock<Address> = LazyLock::new(|| Address::module("staking"));

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Validator {
    pub operator: Address,
    pub consensus_key: PublicKey,
    pub moniker: String,
    /// Sum of all delegations to this validator, self bond included.
    pub tokens: Amount,
    pub jailed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Unbonding {
    pub delegator: Address,
    pub validator: Address,
    pub amount: Amount,
    pub completes_at: Height,
}

const VALIDATOR_PREFIX: &str = "staking/val/";
const DELEGATION_PREFIX: &str = "staking/del/";
const UNBONDING_PREFIX: &str = "staking/unb/";

pub fn validator_key(operator: &Address) -> Vec<u8> {
    key(VALIDATOR_PREFIX, &[&operator.0])
}

pub fn validator(st: &Overlay, operator: &Address) -> Option<Validator> {
    st.get_obj(&validator_key(operator))
}

pub fn put_validator(st: &mut Overlay, v: &Validator) {
    st.put_obj(validator_key(&v.operator), v);
}

pub fn all_validators(st: &Overlay) -> Vec<Validator> {
    st.scan_objs::<Validator>(VALIDATOR_PREFIX.as_bytes()).into_iter().map(|(_, v)| v).collect()
}

fn delegation_key(validator: &Address, delegator: &Address) -> Vec<u8> {
    key(DELEGATION_PREFIX, &[&validator.0, &delegator.0])
}

pub fn delegation(st: &Overlay, validator: &Address, delegator: &Address) -> Amount {
    st.get_obj(&delegation_key(validator, delegator)).unwrap_or_default()
}

pub fn put_delegation(st: &mut Overlay, validator: &Address, delegator: &Address, amount: Amount) {
    if amount.is_zero() {
        st.delete(delegation_key(validator, delegator));
    } else {
        st.put_obj(delegation_key(validator, delegator), &amount);
    }
}

/// Delegations to one validator: (delegator, amount).
pub fn delegations_to(st: &Overlay, validator: &Address) -> Vec<(Address, Amount)> {
    let prefix = key(DELEGATION_PREFIX, &[&validator.0]);
    st.scan_objs::<Amount>(&prefix)
        .into_iter()
        .map(|(k, amount)| (address_at(&k[prefix.len()..]), amount))
        .collect()
}

fn unbonding_key(at: Height, delegator: &Address, validator: &Address) -> Vec<u8> {
    key(UNBONDING_PREFIX, &[&at.to_be_bytes(), &delegator.0, &validator.0])
}

/// Adds to the unbonding entry of (delegator, validator) maturing at `at`.
pub fn add_unbonding(st: &mut Overlay, entry: Unbonding) -> Option<()> {
    let k = unbonding_key(entry.completes_at, &entry.delegator, &entry.validator);
    let mut merged = entry;
    if let Some(existing) = st.get_obj::<Unbonding>(&k) {
        merged.amount = merged.amount.checked_add(existing.amount)?;
    }
    st.put_obj(k, &merged);
    Some(())
}

/// Entries maturing exactly at `at`, removed from state.
pub fn take_unbondings_at(st: &mut Overlay, at: Height) -> Vec<Unbonding> {
    st.take_prefix(&key(UNBONDING_PREFIX, &[&at.to_be_bytes()]))
        .into_iter()
        .map(|(_, v)| borsh::from_slice(&v).expect("state corrupted: unbonding entry does not decode"))
        .collect()
}

/// All unbonding entries of one delegator (a full scan: queries only).
pub fn unbondings_of(st: &Overlay, delegator: &Address) -> Vec<Unbonding> {
    st.scan_objs::<Unbonding>(UNBONDING_PREFIX.as_bytes())
        .into_iter()
        .map(|(_, u)| u)
        .filter(|u| u.delegator == *delegator)
        .collect()
}
