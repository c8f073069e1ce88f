//! market execution: orders, bids, awards, escrow streaming and lease closing.

use std::collections::BTreeMap;
use tessera_types::{Address, Amount, Height};

use super::msg::{MarketMsg, OrderSpec, Pricing, Resources};
use super::state::*;
use crate::error::{invalid, TxError};
use crate::events::{Event, Events};
use crate::registry::{self, Hardware, PriceList, Provider, ProviderStatus};
use crate::store::Overlay;
use crate::{bank, BlockContext, Params, TxContext};

pub fn execute(st: &mut Overlay, ctx: &TxContext, params: &Params, msg: &MarketMsg) -> Result<Events, TxError> {
    match msg {
        MarketMsg::CreateOrder { spec } => create_order(st, ctx, params, spec),
        MarketMsg::PlaceBid { order: order_id, price_per_block } => {
            let o = order(st, *order_id).ok_or_else(|| TxError::NotFound(format!("order {order_id}")))?;
            let OrderState::Open { closes_at } = o.state else {
                return Err(invalid(format!("order {order_id} is not open for bids")));
            };
            if o.spec.pricing != Pricing::Auction {
                return Err(invalid(format!("order {order_id} is fixed-price and takes no bids")));
            }
            if *price_per_block > o.spec.max_price_per_block {
                return Err(invalid(format!(
                    "bid {price_per_block} TSR/block is above the order's maximum of {} TSR/block",
                    o.spec.max_price_per_block
                )));
            }
            let p = registry::provider(st, &ctx.sender)
                .ok_or_else(|| TxError::NotFound(format!("provider {} (register before bidding)", ctx.sender)))?;
            check_eligible(&p, &o.spec.resources, ctx.height, params)?;
            let existing = bids_for(st, *order_id);
            let replacing = existing.iter().any(|b| b.provider == ctx.sender);
            if !replacing && existing.len() >= params.market.max_bids_per_order as usize {
                return Err(invalid(format!("order {order_id} already has the maximum number of bids")));
            }
            put_bid(
                st,
                &Bid { order: *order_id, provider: ctx.sender, price_per_block: *price_per_block, placed_at: ctx.height },
            );
            Ok(vec![Event::new("market.bid_placed")
                .attr("order", order_id)
                .attr("provider", ctx.sender)
                .attr("price_per_block", price_per_block)
                .attr("closes_at", closes_at)])
        }
        MarketMsg::CancelOrder { order: order_id } => {
            let o = order(st, *order_id).ok_or_else(|| TxError::NotFound(format!("order {order_id}")))?;
            if o.buyer != ctx.sender {
                return Err(TxError::Unauthorized(format!("only the buyer can cancel order {order_id}")));
            }
            if let Some(job) = crate::jobs::job_of_order(st, *order_id) {
                return Err(invalid(format!("order {order_id} belongs to job {job}; cancel the job instead")));
            }
            cancel_order(st, *order_id)
        }
        MarketMsg::CloseLease { lease: lease_id } => {
            let l = lease(st, *lease_id).ok_or_else(|| TxError::NotFound(format!("lease {lease_id}")))?;
            let reason = if ctx.sender == l.buyer {
                CloseReason::ClosedByBuyer
            } else if ctx.sender == l.provider {
                CloseReason::ClosedByProvider
            } else {
                return Err(TxError::Unauthorized(format!("only the buyer or the provider can close lease {lease_id}")));
            };
            close_lease_by(st, params, *lease_id, reason, ctx.height)
        }
    }
}

/// Cancels an open order and refunds its escrow.
pub(crate) fn cancel_order(st: &mut Overlay, order_id: u64) -> Result<Events, TxError> {
    let mut o = order(st, order_id).ok_or_else(|| TxError::NotFound(format!("order {order_id}")))?;
    let OrderState::Open { closes_at } = o.state else {
        return Err(invalid(format!("order {order_id} is no longer open")));
    };
    unschedule_close(st, closes_at, order_id);
    let mut events = close_bids(st, order_id, None);
    bank::transfer(st, &MARKET_POOL, &o.buyer, o.escrow)?;
    events.push(Event::new("market.order_cancelled").attr("order", order_id).attr("refund", o.escrow));
    o.escrow = Amount::ZERO;
    o.state = OrderState::Cancelled;
    put_order(st, &o);
    Ok(events)
}

pub(crate) fn close_lease_by(st: &mut Overlay, params: &Params, lease_id: u64, reason: CloseReason, height: Height) -> Result<Events, TxError> {
    let l = lease(st, lease_id).ok_or_else(|| TxError::NotFound(format!("lease {lease_id}")))?;
    if l.state != LeaseState::Active {
        return Err(invalid(format!("lease {lease_id} is already closed")));
    }
    close_lease(st, params, l, height, reason)
}

/// Ends a lease whose work is done: at least one block is paid (a job may
/// finish in the block its lease opened), the rest of the escrow is refunded.
pub(crate) fn settle_lease(st: &mut Overlay, params: &Params, lease_id: u64, height: Height) -> Result<Events, TxError> {
    let mut l = lease(st, lease_id).ok_or_else(|| TxError::NotFound(format!("lease {lease_id}")))?;
    if l.state != LeaseState::Active {
        return Err(invalid(format!("lease {lease_id} is already closed")));
    }
    if l.paid.is_zero() {
        let pay = l.price_per_block.min(l.escrow_remaining);
        bank::transfer(st, &MARKET_POOL, &l.provider, pay)?;
        l.escrow_remaining = l.escrow_remaining.checked_sub(pay).ok_or(TxError::Overflow("lease escrow"))?;
        l.paid = pay;
    }
    close_lease(st, params, l, height, CloseReason::Completed)
}

fn create_order(st: &mut Overlay, ctx: &TxContext, params: &Params, spec: &OrderSpec) -> Result<Events, TxError> {
    open_order(st, ctx.sender, ctx.height, params, spec).map(|(_, events)| events)
}

/// Places an order for `buyer`, locking max price x duration in escrow; a
/// fixed-price order is matched at once. Returns the order id.
pub(crate) fn open_order(
    st: &mut Overlay,
    buyer: Address,
    height: Height,
    params: &Params,
    spec: &OrderSpec,
) -> Result<(u64, Events), TxError> {
    let mp = &params.market;
    if spec.duration_blocks > mp.max_duration_blocks {
        return Err(invalid(format!("duration {} blocks is over the limit of {}", spec.duration_blocks, mp.max_duration_blocks)));
    }
    if spec.bid_window_blocks > mp.max_bid_window_blocks {
        return Err(invalid(format!(
            "bid window {} blocks is over the limit of {}",
            spec.bid_window_blocks, mp.max_bid_window_blocks
        )));
    }
    let escrow = spec
        .max_price_per_block
        .checked_mul(spec.duration_blocks as u128)
        .ok_or_else(|| invalid("max price x duration overflows"))?;
    bank::transfer(st, &buyer, &MARKET_POOL, escrow)?;
    let id = next_order_id(st);
    let mut o = Order { id, buyer, spec: spec.clone(), created_at: height, escrow, state: OrderState::Expired };
    let mut events = vec![Event::new("market.order_created")
        .attr("order", id)
        .attr("buyer", buyer)
        .attr("escrow", escrow)];
    match spec.pricing {
        Pricing::Auction => {
            let closes_at = height + spec.bid_window_blocks;
            o.state = OrderState::Open { closes_at };
            schedule_close(st, closes_at, id);
            put_order(st, &o);
            events[0] = events[0].clone().attr("closes_at", closes_at);
        }
        Pricing::Fixed => {
            let offers: Vec<(Address, Amount)> = registry::all_providers(st)
                .into_iter()
                .filter(|p| check_eligible(p, &spec.resources, height, params).is_ok())
                .filter_map(|p| {
                    let price = price_for(&p.info.prices, &spec.resources)?;
                    (!price.is_zero() && price <= spec.max_price_per_block).then_some((p.owner, price))
                })
                .collect();
            let winner = best_offer(st, &offers).ok_or_else(|| {
                invalid("no registered provider offers these resources at or below the max price; raise the price or use an auction")
            })?;
            events.extend(open_lease(st, &mut o, winner.0, winner.1, height)?);
        }
    }
    Ok((id, events))
}

/// Price per block of `resources` under a price list (RAM billed per started GiB).
pub fn price_for(prices: &PriceList, r: &Resources) -> Option<Amount> {
    let ram_gb = r.ram_mb.div_ceil(1024) as u128;
    prices
        .per_cpu_core
        .checked_mul(r.cpu_cores as u128)?
        .checked_add(prices.per_gb_ram.checked_mul(ram_gb)?)?
        .checked_add(prices.per_gb_disk.checked_mul(r.disk_gb as u128)?)?
        .checked_add(prices.per_gpu.checked_mul(r.gpus as u128)?)
}

pub fn satisfies(hw: &Hardware, r: &Resources) -> bool {
    let fitting_gpus = hw.gpus.iter().filter(|g| g.memory_mb >= r.gpu_memory_mb).count() as u64;
    hw.cpu_cores >= r.cpu_cores && hw.ram_mb >= r.ram_mb && hw.disk_gb >= r.disk_gb && fitting_gpus >= r.gpus as u64
}

fn check_eligible(p: &Provider, r: &Resources, height: Height, params: &Params) -> Result<(), TxError> {
    if p.status != ProviderStatus::Active {
        return Err(invalid(format!("provider {} is deregistering", p.owner)));
    }
    if p.last_heartbeat + params.registry.heartbeat_timeout_blocks < height {
        return Err(invalid(format!("provider {} has missed its heartbeats", p.owner)));
    }
    let score = p.reputation.score_ppm();
    if score < params.registry.disqualify_below_ppm {
        return Err(invalid(format!(
            "provider {} has reputation {score} ppm, below the {} ppm needed to bid",
            p.owner, params.registry.disqualify_below_ppm
        )));
    }
    if !satisfies(&p.info.hardware, r) {
        return Err(invalid(format!("provider {} lacks the hardware this order asks for", p.owner)));
    }
    Ok(())
}

/// Lowest price divided by reputation score; ties go to the lower price, then the
/// lower address, so the choice is the same on every node.
fn best_offer(st: &Overlay, offers: &[(Address, Amount)]) -> Option<(Address, Amount)> {
    offers
        .iter()
        .map(|(owner, price)| {
            let score = registry::provider(st, owner).map(|p| p.reputation.score_ppm()).unwrap_or(0).max(1);
            let adjusted = price.micro().saturating_mul(1_000_000) / score as u128;
            (adjusted, *price, *owner)
        })
        .min()
        .map(|(_, price, owner)| (owner, price))
}

fn open_lease(st: &mut Overlay, o: &mut Order, provider: Address, price: Amount, height: Height) -> Result<Events, TxError> {
    let cost = price.checked_mul(o.spec.duration_blocks as u128).ok_or(TxError::Overflow("lease cost"))?;
    let surplus = o.escrow.checked_sub(cost).ok_or(TxError::Overflow("lease escrow"))?;
    bank::transfer(st, &MARKET_POOL, &o.buyer, surplus)?;
    let id = next_lease_id(st);
    let l = Lease {
        id,
        order: o.id,
        buyer: o.buyer,
        provider,
        price_per_block: price,
        start: height,
        end: height + o.spec.duration_blocks,
        paid: Amount::ZERO,
        escrow_remaining: cost,
        state: LeaseState::Active,
    };
    put_lease(st, &l);
    count_leased(st, &o.spec.resources, true);
    if let Some(mut p) = registry::provider(st, &provider) {
        p.active_leases += 1;
        registry::put_provider(st, &p);
    }
    o.escrow = Amount::ZERO;
    o.state = OrderState::Leased { lease: id };
    put_order(st, o);
    let mut events = vec![Event::new("market.lease_opened")
        .attr("lease", id)
        .attr("order", o.id)
        .attr("buyer", o.buyer)
        .attr("provider", provider)
        .attr("price_per_block", price)
        .attr("end", l.end)
        .attr("refund", surplus)];
    events.extend(crate::jobs::on_lease_opened(st, o.id, id, provider, height));
    Ok(events)
}

/// Deletes every bid of an order; all but `winner` are reported closed.
fn close_bids(st: &mut Overlay, order_id: u64, winner: Option<Address>) -> Events {
    let mut events = Vec::new();
    for b in bids_for(st, order_id) {
        delete_bid(st, order_id, &b.provider);
        if Some(b.provider) != winner {
            events.push(Event::new("market.bid_closed").attr("order", order_id).attr("provider", b.provider));
        }
    }
    events
}

fn close_lease(st: &mut Overlay, params: &Params, mut l: Lease, height: Height, reason: CloseReason) -> Result<Events, TxError> {
    let refund = l.escrow_remaining;
    bank::transfer(st, &MARKET_POOL, &l.buyer, refund)?;
    l.escrow_remaining = Amount::ZERO;
    l.state = LeaseState::Closed { at: height, reason };
    put_lease(st, &l);
    if let Some(o) = order(st, l.order) {
        count_leased(st, &o.spec.resources, false);
    }
    if let Some(mut p) = registry::provider(st, &l.provider) {
        p.active_leases = p.active_leases.saturating_sub(1);
        registry::put_provider(st, &p);
    }
    match reason {
        CloseReason::Completed => registry::record_outcome(st, params, &l.provider, true),
        CloseReason::ProviderLost | CloseReason::ClosedByProvider | CloseReason::NoResult => {
            registry::record_outcome(st, params, &l.provider, false)
        }
        CloseReason::ClosedByBuyer => {}
    }
    let mut events = vec![Event::new("market.lease_closed")
        .attr("lease", l.id)
        .attr("reason", format!("{reason:?}"))
        .attr("paid", l.paid)
        .attr("refund", refund)];
    events.extend(crate::jobs::on_lease_closed(st, params, &l, reason, height));
    Ok(events)
}

/// Closes auctions due at this height, streams escrow to providers of active
/// leases and ends leases that are done or whose provider went silent. Returns
/// the events and what each provider earned this block (its work, for rewards).
pub fn end_block(st: &mut Overlay, ctx: &BlockContext, params: &Params) -> (Events, BTreeMap<Address, Amount>) {
    let mut events = Vec::new();
    for order_id in take_closing_at(st, ctx.height) {
        let Some(mut o) = order(st, order_id) else { continue };
        let offers: Vec<(Address, Amount)> = bids_for(st, order_id)
            .into_iter()
            .filter(|b| {
                registry::provider(st, &b.provider)
                    .is_some_and(|p| check_eligible(&p, &o.spec.resources, ctx.height, params).is_ok())
            })
            .map(|b| (b.provider, b.price_per_block))
            .collect();
        match best_offer(st, &offers) {
            Some((winner, price)) => {
                events.extend(close_bids(st, order_id, Some(winner)));
                events.extend(open_lease(st, &mut o, winner, price, ctx.height).expect("invariant: order escrow covers its max price"));
            }
            None => {
                events.extend(close_bids(st, order_id, None));
                bank::transfer(st, &MARKET_POOL, &o.buyer, o.escrow).expect("invariant: market pool holds order escrow");
                events.push(Event::new("market.order_expired").attr("order", order_id).attr("refund", o.escrow));
                o.escrow = Amount::ZERO;
                o.state = OrderState::Expired;
                put_order(st, &o);
                events.extend(crate::jobs::on_order_expired(st, order_id, ctx.height));
            }
        }
    }

    let mut earned: BTreeMap<Address, Amount> = BTreeMap::new();
    for lease_id in active_lease_ids(st) {
        let Some(mut l) = lease(st, lease_id) else { continue };
        if ctx.height <= l.start {
            continue;
        }
        let alive = registry::provider(st, &l.provider)
            .is_some_and(|p| p.last_heartbeat + params.registry.heartbeat_timeout_blocks >= ctx.height);
        if !alive {
            events.extend(close_lease(st, params, l, ctx.height, CloseReason::ProviderLost).expect("invariant: escrow refund"));
            continue;
        }
        let pay = l.price_per_block.min(l.escrow_remaining);
        bank::transfer(st, &MARKET_POOL, &l.provider, pay).expect("invariant: market pool holds lease escrow");
        l.escrow_remaining = l.escrow_remaining.checked_sub(pay).expect("pay <= escrow");
        l.paid = l.paid.checked_add(pay).expect("paid <= escrow");
        let entry = earned.entry(l.provider).or_default();
        *entry = entry.checked_add(pay).expect("earnings overflow");
        if ctx.height >= l.end || l.escrow_remaining.is_zero() {
            // A job lease that runs out before its provider reported delivered nothing.
            let reason = if crate::jobs::job_of_order(st, l.order).is_some() { CloseReason::NoResult } else { CloseReason::Completed };
            events.extend(close_lease(st, params, l, ctx.height, reason).expect("invariant: escrow refund"));
        } else {
            put_lease(st, &l);
        }
    }
    update_base_prices(st, ctx.height, params);
    (events, earned)
}

/// Moves each class's base price toward the target utilisation, EIP-1559 style:
/// by at most `base_price_max_change_ppm` per block, in proportion to how far
/// this block's leased share is from the target. Never below one micro-TSR.
fn update_base_prices(st: &mut Overlay, height: Height, params: &Params) {
    let mp = &params.market;
    let (mut offered_cpu, mut offered_gpu) = (0u64, 0u64);
    for p in registry::all_providers(st) {
        if p.status == ProviderStatus::Active && p.last_heartbeat + params.registry.heartbeat_timeout_blocks >= height {
            offered_cpu += p.info.hardware.cpu_cores as u64;
            offered_gpu += p.info.hardware.gpus.len() as u64;
        }
    }
    let used = leased(st);
    let mut b = base_prices(st).unwrap_or(BasePrices {
        cpu: mp.initial_base_price_cpu,
        gpu: mp.initial_base_price_gpu,
        ..BasePrices::default()
    });
    b.cpu_utilisation_ppm = utilisation_ppm(used.cpu_cores, offered_cpu);
    b.gpu_utilisation_ppm = utilisation_ppm(used.gpus, offered_gpu);
    b.cpu = step_price(b.cpu, b.cpu_utilisation_ppm, mp);
    b.gpu = step_price(b.gpu, b.gpu_utilisation_ppm, mp);
    put_base_prices(st, &b);
}

fn utilisation_ppm(used: u64, offered: u64) -> u32 {
    if offered == 0 {
        return 0;
    }
    (used.min(offered) as u128 * 1_000_000 / offered as u128) as u32
}

fn step_price(price: Amount, utilisation_ppm: u32, mp: &super::MarketParams) -> Amount {
    let target = mp.target_utilisation_ppm.clamp(1, 999_999) as i128;
    let gap = utilisation_ppm as i128 - target;
    let span = if gap >= 0 { 1_000_000 - target } else { target };
    let change_ppm = mp.base_price_max_change_ppm as i128 * gap / span;
    let next = price.micro() as i128 * (1_000_000 + change_ppm) / 1_000_000;
    Amount::from_micro(next.max(1) as u128)
}
