//! The provider's market decisions, pure: market events in, actions out.
//! No clock, no I/O; the agent feeds it what the node's event stream and its
//! own runners report, and carries out what it returns.

use std::collections::{BTreeMap, BTreeSet};
use tessera_ledger::market::{price_for, satisfies, BasePrices, Pricing, Resources};
use tessera_ledger::registry::{Hardware, PriceList};
use tessera_types::{Address, Amount};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Bid the price list.
    Fixed,
    /// Bid cost plus `margin_ppm`; when outbid, undercut the best rival by one
    /// micro-TSR as long as the bid stays at or above cost plus `min_margin_ppm`.
    Auction { margin_ppm: u32, min_margin_ppm: u32 },
    /// Follow the ledger's base price per resource class, scaled by this
    /// provider's own utilisation (from 0.75x idle to 1.25x full), never below cost.
    Dynamic,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Strategy, String> {
        match s {
            "fixed" => Ok(Strategy::Fixed),
            "auction" => Ok(Strategy::Auction { margin_ppm: 200_000, min_margin_ppm: 20_000 }),
            "dynamic" => Ok(Strategy::Dynamic),
            other => Err(format!("unknown price strategy {other:?}: use fixed, auction or dynamic")),
        }
    }
}

/// What an open auction looks like to a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOrder {
    pub id: u64,
    pub resources: Resources,
    pub max_price_per_block: Amount,
    pub pricing: Pricing,
    /// Only job orders are bid on: this agent runs jobs, it does not rent out raw machines.
    pub job: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An order opened (or was found open when the agent connected).
    OrderOpened(OpenOrder),
    /// Another provider bid on an order.
    RivalBid { order: u64, provider: Address, price: Amount },
    /// An order closed (awarded, expired or cancelled): no more bids.
    OrderClosed { order: u64 },
    /// A job was leased to this provider.
    JobLeased { job: u64, lease: u64 },
    /// A job left this provider: its lease closed, it was cancelled or re-placed.
    JobGone { job: u64 },
    /// A local run ended and its report was sent.
    JobDone { job: u64 },
    /// The ledger's base prices after a block.
    BasePrices(BasePrices),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Bid { order: u64, price: Amount },
    Run { job: u64, lease: u64 },
    Abort { job: u64 },
}

pub struct Decider {
    pub me: Address,
    pub strategy: Strategy,
    pub hardware: Hardware,
    /// What the provider charges (fixed) or what it costs to run (auction, dynamic).
    pub prices: PriceList,
    pub max_jobs: usize,
    running: BTreeMap<u64, u64>,
    /// Orders bid on and not yet closed, with the standing bid.
    bids: BTreeMap<u64, (OpenOrder, Amount)>,
    done: BTreeSet<u64>,
    base: Option<BasePrices>,
}

impl Decider {
    pub fn new(me: Address, strategy: Strategy, hardware: Hardware, prices: PriceList, max_jobs: usize) -> Decider {
        Decider {
            me,
            strategy,
            hardware,
            prices,
            max_jobs,
            running: BTreeMap::new(),
            bids: BTreeMap::new(),
            done: BTreeSet::new(),
            base: None,
        }
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Jobs running plus auctions this provider may still win.
    fn committed(&self) -> usize {
        self.running.len() + self.bids.len()
    }

    pub fn step(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::OrderOpened(o) => {
                if o.pricing != Pricing::Auction
                    || o.job.is_none()
                    || self.bids.contains_key(&o.id)
                    || self.committed() >= self.max_jobs
                    || !satisfies(&self.hardware, &o.resources)
                {
                    return Vec::new();
                }
                let Some(price) = self.opening_price(&o.resources) else { return Vec::new() };
                if price.is_zero() || price > o.max_price_per_block {
                    return Vec::new();
                }
                let id = o.id;
                self.bids.insert(id, (o, price));
                vec![Action::Bid { order: id, price }]
            }
            Input::RivalBid { order, provider, price } => {
                if provider == self.me {
                    return Vec::new();
                }
                let Strategy::Auction { min_margin_ppm, .. } = self.strategy else { return Vec::new() };
                let Some((o, mine)) = self.bids.get(&order).cloned() else { return Vec::new() };
                if price >= mine {
                    return Vec::new();
                }
                let Some(cost) = price_for(&self.prices, &o.resources) else { return Vec::new() };
                let floor = with_margin(cost, min_margin_ppm);
                let undercut = Amount::from_micro(price.micro().saturating_sub(1));
                if undercut < floor || undercut.is_zero() {
                    return Vec::new();
                }
                self.bids.insert(order, (o, undercut));
                vec![Action::Bid { order, price: undercut }]
            }
            Input::OrderClosed { order } => {
                self.bids.remove(&order);
                Vec::new()
            }
            Input::JobLeased { job, lease } => {
                // The auction for this job is over whichever order it was.
                self.bids.retain(|_, (o, _)| o.job != Some(job));
                if self.done.contains(&job) || self.running.get(&job) == Some(&lease) {
                    return Vec::new();
                }
                self.running.insert(job, lease);
                vec![Action::Run { job, lease }]
            }
            Input::JobGone { job } => {
                self.bids.retain(|_, (o, _)| o.job != Some(job));
                match self.running.remove(&job) {
                    Some(_) => vec![Action::Abort { job }],
                    None => Vec::new(),
                }
            }
            Input::JobDone { job } => {
                self.running.remove(&job);
                self.done.insert(job);
                Vec::new()
            }
            Input::BasePrices(b) => {
                self.base = Some(b);
                Vec::new()
            }
        }
    }

    fn opening_price(&self, r: &Resources) -> Option<Amount> {
        let list = price_for(&self.prices, r)?;
        match self.strategy {
            Strategy::Fixed => Some(list),
            Strategy::Auction { margin_ppm, .. } => Some(with_margin(list, margin_ppm)),
            Strategy::Dynamic => {
                let Some(b) = self.base else { return Some(list) };
                let base = b
                    .cpu
                    .checked_mul(r.cpu_cores as u128)?
                    .checked_add(b.gpu.checked_mul(r.gpus as u128)?)?;
                // 0.75x when idle, 1.25x when every slot is taken.
                let used_ppm = (self.committed() as u128 * 1_000_000) / self.max_jobs.max(1) as u128;
                let factor_ppm = 750_000 + used_ppm / 2;
                let scaled = Amount::from_micro(base.micro().saturating_mul(factor_ppm) / 1_000_000);
                Some(scaled.max(list))
            }
        }
    }
}

fn with_margin(cost: Amount, margin_ppm: u32) -> Amount {
    Amount::from_micro(cost.micro().saturating_mul(1_000_000 + margin_ppm as u128) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Address {
        Address::module("me")
    }

    fn rival() -> Address {
        Address::module("rival")
    }

    fn hw() -> Hardware {
        Hardware { cpu_cores: 4, ram_mb: 8192, disk_gb: 10, gpus: vec![] }
    }

    fn prices(per_core: u128) -> PriceList {
        PriceList { per_cpu_core: Amount::from_micro(per_core), ..PriceList::default() }
    }

    fn order(id: u64, cores: u32, max: u128) -> OpenOrder {
        OpenOrder {
            id,
            resources: Resources { cpu_cores: cores, ram_mb: 512, ..Resources::default() },
            max_price_per_block: Amount::from_micro(max),
            pricing: Pricing::Auction,
            job: Some(id + 100),
        }
    }

    fn bid(order: u64, price: u128) -> Action {
        Action::Bid { order, price: Amount::from_micro(price) }
    }

    #[test]
    fn fixed_bids_the_price_list_when_it_fits() {
        let mut d = Decider::new(me(), Strategy::Fixed, hw(), prices(100), 4);
        assert_eq!(d.step(Input::OrderOpened(order(1, 2, 1_000))), vec![bid(1, 200)]);
        assert_eq!(d.step(Input::OrderOpened(order(1, 2, 1_000))), vec![], "one bid per order");
        assert_eq!(d.step(Input::OrderOpened(order(2, 2, 150))), vec![], "over the buyer's max");
        assert_eq!(d.step(Input::OrderOpened(order(3, 8, 10_000))), vec![], "more cores than this machine has");
        let mut plain = order(4, 1, 1_000);
        plain.job = None;
        assert_eq!(d.step(Input::OrderOpened(plain)), vec![], "not a job");
        let mut fixed = order(5, 1, 1_000);
        fixed.pricing = Pricing::Fixed;
        assert_eq!(d.step(Input::OrderOpened(fixed)), vec![], "fixed orders match the price list on the ledger");
    }

    #[test]
    fn capacity_limits_bids_and_frees_when_jobs_end() {
        let mut d = Decider::new(me(), Strategy::Fixed, hw(), prices(100), 2);
        assert_eq!(d.step(Input::OrderOpened(order(1, 1, 1_000))).len(), 1);
        assert_eq!(d.step(Input::OrderOpened(order(2, 1, 1_000))).len(), 1);
        assert_eq!(d.step(Input::OrderOpened(order(3, 1, 1_000))), vec![], "two slots, two bids");
        assert_eq!(d.step(Input::OrderClosed { order: 2 }), vec![]);
        assert_eq!(d.step(Input::JobLeased { job: 101, lease: 7 }), vec![Action::Run { job: 101, lease: 7 }]);
        assert_eq!(d.running(), 1);
        assert_eq!(d.step(Input::OrderOpened(order(3, 1, 1_000))).len(), 1, "a slot is free again");
        assert_eq!(d.step(Input::OrderOpened(order(4, 1, 1_000))), vec![]);
        assert_eq!(d.step(Input::JobDone { job: 101 }), vec![]);
        assert_eq!(d.step(Input::JobLeased { job: 101, lease: 7 }), vec![], "a finished job is not run again");
        assert_eq!(d.step(Input::OrderOpened(order(4, 1, 1_000))).len(), 1);
    }

    #[test]
    fn auction_bids_cost_plus_margin_and_undercuts_down_to_its_floor() {
        let strategy = Strategy::Auction { margin_ppm: 200_000, min_margin_ppm: 50_000 };
        let mut d = Decider::new(me(), strategy, hw(), prices(1_000), 4);
        assert_eq!(d.step(Input::OrderOpened(order(1, 1, 5_000))), vec![bid(1, 1_200)]);
        let rival_bid = |price| Input::RivalBid { order: 1, provider: rival(), price: Amount::from_micro(price) };
        assert_eq!(d.step(rival_bid(1_300)), vec![], "still the lowest");
        assert_eq!(d.step(rival_bid(1_100)), vec![bid(1, 1_099)]);
        assert_eq!(d.step(rival_bid(1_050)), vec![], "1049 is below cost + 5%");
        assert_eq!(d.step(Input::RivalBid { order: 1, provider: me(), price: Amount::from_micro(1) }), vec![]);
        assert_eq!(d.step(Input::OrderClosed { order: 1 }), vec![]);
        assert_eq!(d.step(rival_bid(1_060)), vec![], "closed orders take no bids");
    }

    #[test]
    fn dynamic_follows_the_base_price_and_its_own_load() {
        let mut d = Decider::new(me(), Strategy::Dynamic, hw(), prices(10), 2);
        let base = BasePrices { cpu: Amount::from_micro(1_000), ..BasePrices::default() };
        d.step(Input::BasePrices(base));
        assert_eq!(d.step(Input::OrderOpened(order(1, 2, 10_000))), vec![bid(1, 1_500)], "idle: 0.75 x 2 x 1000");
        assert_eq!(d.step(Input::OrderOpened(order(2, 2, 10_000))), vec![bid(2, 2_000)], "half busy: 1.0x");
        let mut d = Decider::new(me(), Strategy::Dynamic, hw(), prices(5_000), 2);
        d.step(Input::BasePrices(base));
        assert_eq!(d.step(Input::OrderOpened(order(1, 1, 10_000))), vec![bid(1, 5_000)], "never below cost");
    }

    #[test]
    fn leased_jobs_run_once_and_abort_when_gone() {
        let mut d = Decider::new(me(), Strategy::Fixed, hw(), prices(100), 2);
        assert_eq!(d.step(Input::JobLeased { job: 9, lease: 3 }), vec![Action::Run { job: 9, lease: 3 }]);
        assert_eq!(d.step(Input::JobLeased { job: 9, lease: 3 }), vec![], "a restart's resync does not run it twice");
        assert_eq!(d.step(Input::JobGone { job: 9 }), vec![Action::Abort { job: 9 }]);
        assert_eq!(d.step(Input::JobGone { job: 9 }), vec![]);
        assert_eq!(d.running(), 0);
    }
}
