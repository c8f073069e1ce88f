//! market state: orders, bids, leases and their indexes.
//!
//! Escrow sits in the `MARKET_POOL` module account. Invariant: its balance equals
//! the escrow of open orders plus the unspent escrow of active leases.

use borsh::{BorshDeserialize, BorshSerialize};
use std::sync::LazyLock;
use tessera_types::{Address, Amount, Height};

use super::msg::OrderSpec;
use crate::store::{key, u64_at, Overlay};

pub static MARKET_POOL: LazyLock<Address> = LazyLock::new(|| Address::module("market"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum OrderState {
    Open { closes_at: Height },
    Leased { lease: u64 },
    Expired,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Order {
    pub id: u64,
    pub buyer: Address,
    pub spec: OrderSpec,
    pub created_at: Height,
    /// Escrow still held for this order (zero once a lease took it over).
    pub escrow: Amount,
    pub state: OrderState,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Bid {
    pub order: u64,
    pub provider: Address,
    pub price_per_block: Amount,
    pub placed_at: Height,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum CloseReason {
    Completed,
    ClosedByBuyer,
    ClosedByProvider,
    /// The provider stopped heartbeating past the timeout.
    ProviderLost,
    /// A job's lease ran out before its provider reported a result.
    NoResult,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum LeaseState {
    Active,
    Closed { at: Height, reason: CloseReason },
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Lease {
    pub id: u64,
    pub order: u64,
    pub buyer: Address,
    pub provider: Address,
    pub price_per_block: Amount,
    pub start: Height,
    /// Last block paid for: `start + duration`.
    pub end: Height,
    pub paid: Amount,
    pub escrow_remaining: Amount,
    pub state: LeaseState,
}

const NEXT_ORDER_KEY: &str = "market/next_order";
const NEXT_LEASE_KEY: &str = "market/next_lease";
const ORDER_PREFIX: &str = "market/order/";
const CLOSE_PREFIX: &str = "market/close/";
const BID_PREFIX: &str = "market/bid/";
const LEASE_PREFIX: &str = "market/lease/";
const ACTIVE_PREFIX: &str = "market/active/";

pub fn next_order_id(st: &mut Overlay) -> u64 {
    st.next_counter(NEXT_ORDER_KEY)
}

pub fn next_lease_id(st: &mut Overlay) -> u64 {
    st.next_counter(NEXT_LEASE_KEY)
}

pub fn order(st: &Overlay, id: u64) -> Option<Order> {
    st.get_obj(&key(ORDER_PREFIX, &[&id.to_be_bytes()]))
}

pub fn put_order(st: &mut Overlay, o: &Order) {
    st.put_obj(key(ORDER_PREFIX, &[&o.id.to_be_bytes()]), o);
}

pub fn all_orders(st: &Overlay) -> Vec<Order> {
    st.scan_objs::<Order>(ORDER_PREFIX.as_bytes()).into_iter().map(|(_, o)| o).collect()
}

fn close_key(at: Height, order: u64) -> Vec<u8> {
    key(CLOSE_PREFIX, &[&at.to_be_bytes(), &order.to_be_bytes()])
}

pub fn schedule_close(st: &mut Overlay, at: Height, order: u64) {
    st.put(close_key(at, order), Vec::new());
}

pub fn unschedule_close(st: &mut Overlay, at: Height, order: u64) {
    st.delete(close_key(at, order));
}

/// Orders whose bid window closes at `at`, removed from the index.
pub fn take_closing_at(st: &mut Overlay, at: Height) -> Vec<u64> {
    st.take_prefix(&key(CLOSE_PREFIX, &[&at.to_be_bytes()])).into_iter().map(|(rest, _)| u64_at(&rest)).collect()
}

fn bid_key(order: u64, provider: &Address) -> Vec<u8> {
    key(BID_PREFIX, &[&order.to_be_bytes(), &provider.0])
}

pub fn put_bid(st: &mut Overlay, b: &Bid) {
    st.put_obj(bid_key(b.order, &b.provider), b);
}

pub fn delete_bid(st: &mut Overlay, order: u64, provider: &Address) {
    st.delete(bid_key(order, provider));
}

pub fn bids_for(st: &Overlay, order: u64) -> Vec<Bid> {
    st.scan_objs::<Bid>(&key(BID_PREFIX, &[&order.to_be_bytes()])).into_iter().map(|(_, b)| b).collect()
}

pub fn lease(st: &Overlay, id: u64) -> Option<Lease> {
    st.get_obj(&key(LEASE_PREFIX, &[&id.to_be_bytes()]))
}

/// Stores a lease and keeps the active index in step with its state.
pub fn put_lease(st: &mut Overlay, l: &Lease) {
    st.put_obj(key(LEASE_PREFIX, &[&l.id.to_be_bytes()]), l);
    let active_key = key(ACTIVE_PREFIX, &[&l.id.to_be_bytes()]);
    match l.state {
        LeaseState::Active => st.put(active_key, Vec::new()),
        LeaseState::Closed { .. } => st.delete(active_key),
    }
}

pub fn active_lease_ids(st: &Overlay) -> Vec<u64> {
    let prefix = ACTIVE_PREFIX.as_bytes();
    st.scan_prefix(prefix).into_iter().map(|(k, _)| u64_at(&k[prefix.len()..])).collect()
}

pub fn all_leases(st: &Overlay) -> Vec<Lease> {
    st.scan_objs::<Lease>(LEASE_PREFIX.as_bytes()).into_iter().map(|(_, l)| l).collect()
}

/// Per-block base price of one unit of each resource class (DESIGN.md section 3):
/// the reference the `dynamic` provider strategy prices against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct BasePrices {
    /// One CPU core per block.
    pub cpu: Amount,
    /// One GPU per block.
    pub gpu: Amount,
    /// Leased share of what active providers offer, in parts per million, as of the last block.
    pub cpu_utilisation_ppm: u32,
    pub gpu_utilisation_ppm: u32,
}

const BASE_PRICES_KEY: &str = "market/base_prices";
const LEASED_KEY: &str = "market/leased";

/// CPU cores and GPUs held by active leases, kept as leases open and close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Leased {
    pub cpu_cores: u64,
    pub gpus: u64,
}

pub fn leased(st: &Overlay) -> Leased {
    st.get_obj(LEASED_KEY.as_bytes()).unwrap_or_default()
}

/// Adds (`opening`) or removes the resources of a lease from the running totals.
pub fn count_leased(st: &mut Overlay, r: &super::msg::Resources, opening: bool) {
    let mut l = leased(st);
    let (cpu, gpu) = (r.cpu_cores as u64, r.gpus as u64);
    if opening {
        l.cpu_cores += cpu;
        l.gpus += gpu;
    } else {
        l.cpu_cores = l.cpu_cores.saturating_sub(cpu);
        l.gpus = l.gpus.saturating_sub(gpu);
    }
    st.put_obj(LEASED_KEY.as_bytes().to_vec(), &l);
}

pub fn base_prices(st: &Overlay) -> Option<BasePrices> {
    st.get_obj(BASE_PRICES_KEY.as_bytes())
}

pub fn put_base_prices(st: &mut Overlay, b: &BasePrices) {
    st.put_obj(BASE_PRICES_KEY.as_bytes().to_vec(), b);
}
