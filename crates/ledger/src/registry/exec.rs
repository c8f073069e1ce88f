//! registry execution, stake release and the reputation and slashing hooks.

use tessera_types::{Address, Amount};

use super::msg::RegistryMsg;
use super::reputation::Reputation;
use super::state::*;
use crate::bank;
use crate::error::{invalid, TxError};
use crate::events::{Event, Events};
use crate::store::Overlay;
use crate::{BlockContext, Params, TxContext};

pub fn execute(st: &mut Overlay, ctx: &TxContext, params: &Params, msg: &RegistryMsg) -> Result<Events, TxError> {
    let rp = &params.registry;
    match msg {
        RegistryMsg::Register { info, stake } => {
            if provider(st, &ctx.sender).is_some() {
                return Err(invalid(format!("{} is already a registered provider", ctx.sender)));
            }
            if *stake < rp.min_provider_stake {
                return Err(invalid(format!(
                    "provider stake {stake} TSR is below the minimum of {} TSR",
                    rp.min_provider_stake
                )));
            }
            bank::transfer(st, &ctx.sender, &REGISTRY_POOL, *stake)?;
            put_provider(
                st,
                &Provider {
                    owner: ctx.sender,
                    info: info.clone(),
                    stake: *stake,
                    status: ProviderStatus::Active,
                    registered_at: ctx.height,
                    last_heartbeat: ctx.height,
                    reputation: Reputation { alpha_micro: rp.initial_alpha_micro, beta_micro: rp.initial_beta_micro },
                    active_leases: 0,
                    completed_leases: 0,
                    failed_leases: 0,
                },
            );
            Ok(vec![Event::new("registry.provider_registered")
                .attr("provider", ctx.sender)
                .attr("stake", stake)
                .attr("region", &info.region)])
        }
        RegistryMsg::Update { info } => {
            let mut p = active_provider(st, &ctx.sender)?;
            p.info = info.clone();
            p.last_heartbeat = ctx.height;
            put_provider(st, &p);
            Ok(vec![Event::new("registry.provider_updated").attr("provider", ctx.sender)])
        }
        RegistryMsg::Deregister => {
            let mut p = active_provider(st, &ctx.sender)?;
            if p.active_leases > 0 {
                return Err(invalid(format!(
                    "provider has {} active lease(s); close them before deregistering",
                    p.active_leases
                )));
            }
            let until = ctx.height + rp.unbonding_blocks;
            p.status = ProviderStatus::Unbonding { until };
            put_provider(st, &p);
            add_unbonding(st, until, &ctx.sender);
            Ok(vec![Event::new("registry.provider_deregistering")
                .attr("provider", ctx.sender)
                .attr("stake_returns_at", until)])
        }
        RegistryMsg::Heartbeat => {
            let mut p = provider(st, &ctx.sender)
                .ok_or_else(|| TxError::NotFound(format!("provider {}", ctx.sender)))?;
            p.last_heartbeat = ctx.height;
            put_provider(st, &p);
            Ok(Vec::new())
        }
    }
}

fn active_provider(st: &Overlay, owner: &Address) -> Result<Provider, TxError> {
    let p = provider(st, owner).ok_or_else(|| TxError::NotFound(format!("provider {owner}")))?;
    if p.status != ProviderStatus::Active {
        return Err(invalid(format!("provider {owner} is deregistering")));
    }
    Ok(p)
}

/// Returns the stake of providers whose unbonding ends at this height.
pub fn end_block(st: &mut Overlay, ctx: &BlockContext) -> Events {
    let mut events = Vec::new();
    for owner in take_unbondings_at(st, ctx.height) {
        let Some(p) = provider(st, &owner) else { continue };
        bank::transfer(st, &REGISTRY_POOL, &owner, p.stake).expect("invariant: registry pool holds provider stakes");
        remove_provider(st, &owner);
        events.push(Event::new("registry.provider_removed").attr("provider", owner).attr("stake_returned", p.stake));
    }
    events
}

/// Records a lease outcome in the provider's reputation.
pub fn record_outcome(st: &mut Overlay, params: &Params, owner: &Address, success: bool) {
    if let Some(mut p) = provider(st, owner) {
        p.reputation = p.reputation.record(success, params.registry.reputation_lambda_ppm);
        if success {
            p.completed_leases += 1;
        } else {
            p.failed_leases += 1;
        }
        put_provider(st, &p);
    }
}

/// Burns up to `amount` of a provider's stake (proven wrong results, lost data).
pub fn slash_provider(st: &mut Overlay, owner: &Address, amount: Amount, reason: &str) -> Result<Events, TxError> {
    let mut p = provider(st, owner).ok_or_else(|| TxError::NotFound(format!("provider {owner}")))?;
    let cut = amount.min(p.stake);
    p.stake = p.stake.checked_sub(cut).ok_or(TxError::Overflow("provider stake"))?;
    put_provider(st, &p);
    bank::burn(st, &REGISTRY_POOL, cut)?;
    Ok(vec![Event::new("registry.provider_slashed").attr("provider", owner).attr("amount", cut).attr("reason", reason)])
}

/// Moves up to `amount` of a provider's stake to `to` (pay back a buyer for work
/// that was paid but never delivered). Returns what moved.
pub fn claw_back(st: &mut Overlay, owner: &Address, to: &Address, amount: Amount) -> Amount {
    let Some(mut p) = provider(st, owner) else { return Amount::ZERO };
    let cut = amount.min(p.stake);
    p.stake = p.stake.checked_sub(cut).expect("cut <= stake");
    put_provider(st, &p);
    bank::transfer(st, &REGISTRY_POOL, to, cut).expect("invariant: registry pool holds provider stakes");
    cut
}
