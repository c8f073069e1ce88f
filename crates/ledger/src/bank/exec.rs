//! bank execution and the money functions every other module calls.

use tessera_types::{Address, Amount};

use super::msg::BankMsg;
use super::state::{account, burned, put_account, set_burned, set_supply, supply};
use crate::error::TxError;
use crate::events::{Event, Events};
use crate::store::Overlay;
use crate::TxContext;

pub fn execute(st: &mut Overlay, ctx: &TxContext, msg: &BankMsg) -> Result<Events, TxError> {
    match msg {
        BankMsg::Transfer { to, amount } => {
            transfer(st, &ctx.sender, to, *amount)?;
            Ok(vec![Event::new("bank.transfer")
                .attr("from", ctx.sender)
                .attr("to", to)
                .attr("amount", amount)])
        }
    }
}

pub fn debit(st: &mut Overlay, address: &Address, amount: Amount) -> Result<(), TxError> {
    let mut acct = account(st, address);
    acct.balance = acct.balance.checked_sub(amount).ok_or(TxError::InsufficientFunds {
        address: *address,
        balance: acct.balance,
        needed: amount,
    })?;
    put_account(st, address, acct);
    Ok(())
}

pub fn credit(st: &mut Overlay, address: &Address, amount: Amount) -> Result<(), TxError> {
    let mut acct = account(st, address);
    acct.balance = acct.balance.checked_add(amount).ok_or(TxError::Overflow("credit"))?;
    put_account(st, address, acct);
    Ok(())
}

pub fn transfer(st: &mut Overlay, from: &Address, to: &Address, amount: Amount) -> Result<(), TxError> {
    if amount.is_zero() {
        return Ok(());
    }
    debit(st, from, amount)?;
    credit(st, to, amount)
}

/// Creates new tokens (block rewards only).
pub fn mint(st: &mut Overlay, to: &Address, amount: Amount) -> Result<(), TxError> {
    let new_supply = supply(st).checked_add(amount).ok_or(TxError::Overflow("supply"))?;
    credit(st, to, amount)?;
    set_supply(st, new_supply);
    Ok(())
}

/// Destroys tokens held by `from` (slashing, fault fees).
pub fn burn(st: &mut Overlay, from: &Address, amount: Amount) -> Result<(), TxError> {
    debit(st, from, amount)?;
    let new_supply = supply(st).checked_sub(amount).ok_or(TxError::Overflow("supply"))?;
    set_supply(st, new_supply);
    let total_burned = burned(st).checked_add(amount).ok_or(TxError::Overflow("burned"))?;
    set_burned(st, total_burned);
    Ok(())
}
