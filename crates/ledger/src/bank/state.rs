//! bank state: `bank/acct/<address>` -> Account, `bank/supply`, `bank/burned`.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::{Address, Amount};

use crate::store::{address_at, key, Overlay};

/// Balance and replay counter of one address. Absent means zero and nonce 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Account {
    pub nonce: u64,
    pub balance: Amount,
}

pub const ACCOUNT_PREFIX: &str = "bank/acct/";
const SUPPLY_KEY: &str = "bank/supply";
const BURNED_KEY: &str = "bank/burned";

pub fn account_key(address: &Address) -> Vec<u8> {
    key(ACCOUNT_PREFIX, &[&address.0])
}

pub fn account(st: &Overlay, address: &Address) -> Account {
    st.get_obj(&account_key(address)).unwrap_or_default()
}

pub fn put_account(st: &mut Overlay, address: &Address, acct: Account) {
    if acct == Account::default() {
        st.delete(account_key(address));
    } else {
        st.put_obj(account_key(address), &acct);
    }
}

/// Every account with a balance or a nonce, in address order.
pub fn all_accounts(st: &Overlay) -> Vec<(Address, Account)> {
    st.scan_objs::<Account>(ACCOUNT_PREFIX.as_bytes())
        .into_iter()
        .map(|(k, a)| (address_at(&k[ACCOUNT_PREFIX.len()..]), a))
        .collect()
}

pub fn supply(st: &Overlay) -> Amount {
    st.get_obj(SUPPLY_KEY.as_bytes()).unwrap_or_default()
}

pub(crate) fn set_supply(st: &mut Overlay, value: Amount) {
    st.put_obj(SUPPLY_KEY.as_bytes().to_vec(), &value);
}

/// Total burned since genesis (slashes and fault fees).
pub fn burned(st: &Overlay) -> Amount {
    st.get_obj(BURNED_KEY.as_bytes()).unwrap_or_default()
}

pub(crate) fn set_burned(st: &mut Overlay, value: Amount) {
    st.put_obj(BURNED_KEY.as_bytes().to_vec(), &value);
}
