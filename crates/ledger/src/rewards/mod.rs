//! rewards: per-block emission with halvings, split between validators (by
//! voting power) and providers (by the work they were paid for this block).
//!
//! Supply invariant: supply = genesis supply + issued - burned, at every height.

use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeMap;
use tessera_types::{Address, Amount};

use crate::events::{Event, Events};
use crate::staking::Validator;
use crate::store::Overlay;
use crate::{bank, BlockContext, Params};

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct RewardsParams {
    /// Reward of a block before the first halving.
    pub initial_block_reward: Amount,
    /// Most that emission can ever add to supply; the reward halves as issuance
    /// crosses 1/2, 3/4, 7/8, ... of it.
    pub emission_cap: Amount,
    /// Validators' share of each block reward, parts per million; providers get the rest.
    pub validator_share_ppm: u32,
}

impl Default for RewardsParams {
    fn default() -> Self {
        RewardsParams {
            initial_block_reward: Amount::from_tsr(10),
            emission_cap: Amount::from_tsr(100_000_000),
            validator_share_ppm: 300_000,
        }
    }
}

const ISSUED_KEY: &str = "rewards/issued";

/// Total emitted since genesis.
pub fn issued(st: &Overlay) -> Amount {
    st.get_obj(ISSUED_KEY.as_bytes()).unwrap_or_default()
}

/// The reward of the next block after `issued` tokens were emitted.
pub fn block_reward(p: &RewardsParams, issued: Amount) -> Amount {
    let cap = p.emission_cap.micro();
    let done = issued.micro();
    if done >= cap {
        return Amount::ZERO;
    }
    let mut era = 0u32;
    while era < 127 && done >= cap - (cap >> (era + 1)) {
        era += 1;
    }
    Amount(p.initial_block_reward.micro() >> era).min(Amount(cap - done))
}

/// Splits `total` pro rata over `weights`, rounding down; the dust is not minted.
fn pro_rata(total: Amount, weights: &BTreeMap<Address, u128>) -> Vec<(Address, Amount)> {
    let sum: u128 = weights.values().sum();
    if sum == 0 {
        return Vec::new();
    }
    weights
        .iter()
        .filter_map(|(a, w)| total.mul_div(*w, sum).map(|share| (*a, share)))
        .filter(|(_, share)| !share.is_zero())
        .collect()
}

pub fn end_block(
    st: &mut Overlay,
    ctx: &BlockContext,
    params: &Params,
    validators: &[(Validator, u64)],
    provider_work: &BTreeMap<Address, Amount>,
) -> Events {
    let rp = &params.rewards;
    let reward = block_reward(rp, issued(st));
    let validator_part = reward.mul_div(rp.validator_share_ppm as u128, 1_000_000).unwrap_or_default();
    let provider_part = reward.checked_sub(validator_part).unwrap_or_default();
    let validator_weights: BTreeMap<Address, u128> = validators.iter().map(|(v, p)| (v.operator, *p as u128)).collect();
    let work_weights: BTreeMap<Address, u128> = provider_work.iter().map(|(a, w)| (*a, w.micro())).collect();
    let mut minted = Amount::ZERO;
    let mut events = Vec::new();
    for (role, shares) in [("validator", pro_rata(validator_part, &validator_weights)), ("provider", pro_rata(provider_part, &work_weights))] {
        for (to, amount) in shares {
            bank::mint(st, &to, amount).expect("emission is capped far below u128");
            minted = minted.checked_add(amount).expect("emission is capped");
            events.push(Event::new("rewards.paid").attr("to", to).attr("role", role).attr("amount", amount));
        }
    }
    let total = issued(st).checked_add(minted).expect("emission is capped");
    st.put_obj(ISSUED_KEY.as_bytes().to_vec(), &total);
    if !minted.is_zero() {
        events.push(Event::new("rewards.emitted").attr("height", ctx.height).attr("amount", minted));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_halves_at_each_threshold_and_stops_at_the_cap() {
        let p = RewardsParams { initial_block_reward: Amount(100), emission_cap: Amount(1_000), validator_share_ppm: 0 };
        assert_eq!(block_reward(&p, Amount(0)), Amount(100));
        assert_eq!(block_reward(&p, Amount(499)), Amount(100));
        assert_eq!(block_reward(&p, Amount(500)), Amount(50));
        assert_eq!(block_reward(&p, Amount(750)), Amount(25));
        assert_eq!(block_reward(&p, Amount(900)), Amount(12));
        assert_eq!(block_reward(&p, Amount(999)), Amount(0), "halved below one micro-unit");
        assert_eq!(block_reward(&p, Amount(1_000)), Amount(0));
    }
}
