//! market: orders, reverse auctions, fixed-price matching, leases and escrow.

mod exec;
mod msg;
mod params;
mod state;

pub use exec::{end_block, execute, price_for, satisfies};
pub(crate) use exec::{cancel_order, close_lease_by, open_order, settle_lease};
pub use msg::{MarketMsg, OrderSpec, Pricing, Resources};
pub use params::MarketParams;
pub use state::{
    all_leases, all_orders, base_prices, bids_for, BasePrices, lease, order, Bid, CloseReason, Lease, LeaseState, Order, OrderState, MARKET_POOL,
};
