//! staking execution, end-of-block unbonding, validator set and slashing.

use tessera_types::{Address, Amount};

use super::msg::StakingMsg;
use super::state::*;
use crate::bank;
use crate::error::{invalid, TxError};
use crate::events::{Event, Events};
use crate::store::Overlay;
use crate::{BlockContext, Params, TxContext};

pub fn execute(st: &mut Overlay, ctx: &TxContext, params: &Params, msg: &StakingMsg) -> Result<Events, TxError> {
    match msg {
        StakingMsg::CreateValidator { consensus_key, moniker, self_bond } => {
            if validator(st, &ctx.sender).is_some() {
                return Err(invalid(format!("{} is already a validator", ctx.sender)));
            }
            if all_validators(st).iter().any(|v| v.consensus_key == *consensus_key) {
                return Err(invalid("consensus key is already used by another validator"));
            }
            if *self_bond < params.staking.min_self_bond {
                return Err(invalid(format!(
                    "self bond {self_bond} TSR is below the minimum of {} TSR",
                    params.staking.min_self_bond
                )));
            }
            let v = Validator {
                operator: ctx.sender,
                consensus_key: *consensus_key,
                moniker: moniker.clone(),
                tokens: Amount::ZERO,
                jailed: false,
            };
            put_validator(st, &v);
            bond(st, &ctx.sender, &ctx.sender, *self_bond)?;
            Ok(vec![Event::new("staking.validator_created")
                .attr("operator", ctx.sender)
                .attr("moniker", moniker)
                .attr("self_bond", self_bond)])
        }
        StakingMsg::Bond { validator: operator, amount } => {
            bond(st, operator, &ctx.sender, *amount)?;
            Ok(vec![Event::new("staking.bonded")
                .attr("delegator", ctx.sender)
                .attr("validator", operator)
                .attr("amount", amount)])
        }
        StakingMsg::Unbond { validator: operator, amount } => {
            let mut v = validator(st, operator).ok_or_else(|| TxError::NotFound(format!("validator {operator}")))?;
            let bonded = delegation(st, operator, &ctx.sender);
            let remaining = bonded.checked_sub(*amount).ok_or_else(|| {
                invalid(format!("cannot unbond {amount} TSR: {} has {bonded} TSR bonded to {operator}", ctx.sender))
            })?;
            put_delegation(st, operator, &ctx.sender, remaining);
            v.tokens = v.tokens.checked_sub(*amount).ok_or(TxError::Overflow("validator tokens"))?;
            put_validator(st, &v);
            let completes_at = ctx.height + params.staking.unbonding_blocks;
            add_unbonding(
                st,
                Unbonding { delegator: ctx.sender, validator: *operator, amount: *amount, completes_at },
            )
            .ok_or(TxError::Overflow("unbonding"))?;
            Ok(vec![Event::new("staking.unbonding")
                .attr("delegator", ctx.sender)
                .attr("validator", operator)
                .attr("amount", amount)
                .attr("completes_at", completes_at)])
        }
    }
}

fn bond(st: &mut Overlay, operator: &Address, delegator: &Address, amount: Amount) -> Result<(), TxError> {
    let mut v = validator(st, operator).ok_or_else(|| TxError::NotFound(format!("validator {operator}")))?;
    bank::transfer(st, delegator, &STAKING_POOL, amount)?;
    let d = delegation(st, operator, delegator).checked_add(amount).ok_or(TxError::Overflow("delegation"))?;
    put_delegation(st, operator, delegator, d);
    v.tokens = v.tokens.checked_add(amount).ok_or(TxError::Overflow("validator tokens"))?;
    put_validator(st, &v);
    Ok(())
}

/// Releases unbonding entries that mature at this height.
pub fn end_block(st: &mut Overlay, ctx: &BlockContext) -> Events {
    let mut events = Vec::new();
    for u in take_unbondings_at(st, ctx.height) {
        bank::transfer(st, &STAKING_POOL, &u.delegator, u.amount)
            .expect("invariant: staking pool holds every unbonding entry");
        events.push(
            Event::new("staking.unbonded")
                .attr("delegator", u.delegator)
                .attr("validator", u.validator)
                .attr("amount", u.amount),
        );
    }
    events
}

/// The active set: unjailed validators with at least the minimum self bond's
/// worth of tokens, highest tokens first (ties by operator address), at most
/// `max_validators`. Voting power is whole TSR bonded.
pub fn validator_set(st: &Overlay, params: &Params) -> Vec<(Validator, u64)> {
    let mut vals: Vec<Validator> = all_validators(st)
        .into_iter()
        .filter(|v| !v.jailed && v.tokens >= params.staking.min_self_bond)
        .collect();
    vals.sort_by(|a, b| b.tokens.cmp(&a.tokens).then(a.operator.cmp(&b.operator)));
    vals.truncate(params.staking.max_validators as usize);
    vals.into_iter()
        .map(|v| {
            let power = u64::try_from(v.tokens.micro() / tessera_types::MICRO_PER_TSR).unwrap_or(u64::MAX);
            (v, power)
        })
        .collect()
}

/// Burns `fraction_ppm` of every delegation to `operator` (the slashing hook
/// later modules call on proven misbehaviour). Returns the amount burned.
pub fn slash(st: &mut Overlay, operator: &Address, fraction_ppm: u32, reason: &str) -> Result<(Amount, Events), TxError> {
    let mut v = validator(st, operator).ok_or_else(|| TxError::NotFound(format!("validator {operator}")))?;
    let mut total = Amount::ZERO;
    for (delegator, amount) in delegations_to(st, operator) {
        let cut = amount.mul_div(fraction_ppm as u128, 1_000_000).ok_or(TxError::Overflow("slash"))?;
        let left = amount.checked_sub(cut).ok_or(TxError::Overflow("slash"))?;
        put_delegation(st, operator, &delegator, left);
        total = total.checked_add(cut).ok_or(TxError::Overflow("slash"))?;
    }
    v.tokens = v.tokens.checked_sub(total).ok_or(TxError::Overflow("slash"))?;
    put_validator(st, &v);
    bank::burn(st, &STAKING_POOL, total)?;
    let event = Event::new("staking.slashed").attr("validator", operator).attr("amount", total).attr("reason", reason);
    Ok((total, vec![event]))
}
