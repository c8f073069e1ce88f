//! `tessera tx ...`: build, sign, submit and (by default) wait for inclusion.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::time::Duration;
use tessera_client::api::TxResultDto;
use tessera_ledger::bank::BankMsg;
use tessera_ledger::market::{MarketMsg, OrderSpec, Pricing, Resources};
use tessera_ledger::registry::{Gpu, Hardware, PriceList, ProviderInfo, RegistryMsg};
use tessera_ledger::staking::StakingMsg;
use tessera_ledger::Msg;
use tessera_types::{Amount, PublicKey};

use crate::cli::Ctx;

#[derive(Args)]
pub struct Common {
    /// Key (from the keyring) that signs and pays.
    #[arg(long)]
    pub from: String,
    /// Fee in TSR.
    #[arg(long, default_value = "0.001", value_parser = parse_amount)]
    pub fee: Amount,
    /// Return after the node accepts the transaction, without waiting for a block.
    #[arg(long)]
    pub no_wait: bool,
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    Amount::parse_tsr(s).map_err(|e| e.to_string())
}

fn parse_positive(s: &str) -> Result<Amount, String> {
    Amount::parse_positive_tsr(s).map_err(|e| e.to_string())
}

fn parse_gpu(s: &str) -> Result<Gpu, String> {
    let (model, mem) = s.rsplit_once(':').ok_or_else(|| format!("GPU {s:?} must be MODEL:MEMORY_MB, e.g. A100:81920"))?;
    let memory_mb = mem.parse().map_err(|_| format!("GPU memory {mem:?} is not a number of MB"))?;
    Ok(Gpu { model: model.to_string(), memory_mb })
}

#[derive(Subcommand)]
pub enum TxCmd {
    /// Send TSR to an address or a keyring name.
    Transfer {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        to: String,
        /// Amount in TSR, up to 6 decimals (e.g. 25.5).
        #[arg(long, allow_hyphen_values = true, value_parser = parse_positive)]
        amount: Amount,
    },
    /// Become a validator with a consensus key and a self bond.
    CreateValidator {
        #[command(flatten)]
        common: Common,
        /// Hex ed25519 public key the validator signs blocks with.
        #[arg(long)]
        consensus_key: PublicKey,
        #[arg(long)]
        moniker: String,
        #[arg(long, allow_hyphen_values = true, value_parser = parse_positive)]
        self_bond: Amount,
    },
    /// Bond TSR to a validator.
    Bond {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        validator: String,
        #[arg(long, allow_hyphen_values = true, value_parser = parse_positive)]
        amount: Amount,
    },
    /// Start unbonding; the TSR returns after the unbonding period.
    Unbond {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        validator: String,
        #[arg(long, allow_hyphen_values = true, value_parser = parse_positive)]
        amount: Amount,
    },
    /// Register as a provider with a stake, hardware, region, endpoints and prices.
    ProviderRegister {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        info: ProviderArgs,
        #[arg(long, allow_hyphen_values = true, value_parser = parse_positive)]
        stake: Amount,
    },
    /// Replace a provider's hardware, region, endpoints and prices.
    ProviderUpdate {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        info: ProviderArgs,
    },
    /// Deregister; the stake returns after the unbonding period.
    ProviderDeregister {
        #[command(flatten)]
        common: Common,
    },
    /// Prove a provider is alive.
    Heartbeat {
        #[command(flatten)]
        common: Common,
    },
    /// Post an order for resources; escrow locks max price x duration.
    Order {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 0)]
        cpu_cores: u32,
        #[arg(long, default_value_t = 0)]
        ram_mb: u64,
        #[arg(long, default_value_t = 0)]
        disk_gb: u64,
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        #[arg(long, default_value_t = 0)]
        gpu_memory_mb: u64,
        /// Highest price per block, in TSR.
        #[arg(long, allow_hyphen_values = true, value_parser = parse_positive)]
        max_price: Amount,
        /// Lease length in blocks.
        #[arg(long)]
        duration: u64,
        /// Blocks the auction stays open (default: the chain's parameter, 2 on devnet).
        #[arg(long)]
        bid_window: Option<u64>,
        /// Match the cheapest standing price list at once instead of an auction.
        #[arg(long)]
        fixed: bool,
    },
    /// Bid on an open order as a provider.
    Bid {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        order: u64,
        /// Price per block, in TSR.
        #[arg(long, allow_hyphen_values = true, value_parser = parse_positive)]
        price: Amount,
    },
    /// Cancel an open order and get its escrow back.
    CancelOrder {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        order: u64,
    },
    /// Close a lease early; the unspent escrow returns to the buyer.
    CloseLease {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        lease: u64,
    },
}

#[derive(Args)]
pub struct ProviderArgs {
    #[arg(long, default_value_t = 0)]
    pub cpu_cores: u32,
    #[arg(long, default_value_t = 0)]
    pub ram_mb: u64,
    #[arg(long, default_value_t = 0)]
    pub disk_gb: u64,
    /// A GPU as MODEL:MEMORY_MB; repeat for several.
    #[arg(long = "gpu", value_parser = parse_gpu)]
    pub gpus: Vec<Gpu>,
    #[arg(long, default_value = "local")]
    pub region: String,
    /// An endpoint URL; repeat for several.
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// Price per CPU core per block, TSR.
    #[arg(long, default_value = "0.001", value_parser = parse_amount)]
    pub price_cpu: Amount,
    /// Price per GiB of RAM per block, TSR.
    #[arg(long, default_value = "0.0005", value_parser = parse_amount)]
    pub price_ram_gb: Amount,
    /// Price per GB of disk per block, TSR.
    #[arg(long, default_value = "0.00001", value_parser = parse_amount)]
    pub price_disk_gb: Amount,
    /// Price per GPU per block, TSR.
    #[arg(long, default_value = "0.01", value_parser = parse_amount)]
    pub price_gpu: Amount,
}

impl ProviderArgs {
    fn info(self) -> ProviderInfo {
        ProviderInfo {
            hardware: Hardware { cpu_cores: self.cpu_cores, ram_mb: self.ram_mb, disk_gb: self.disk_gb, gpus: self.gpus },
            region: self.region,
            endpoints: self.endpoints,
            prices: PriceList {
                per_cpu_core: self.price_cpu,
                per_gb_ram: self.price_ram_gb,
                per_gb_disk: self.price_disk_gb,
                per_gpu: self.price_gpu,
            },
        }
    }
}

pub fn run(ctx: &Ctx, cmd: TxCmd) -> anyhow::Result<()> {
    let (common, msg) = match cmd {
        TxCmd::Transfer { common, to, amount } => {
            let to = ctx.resolve_address(&to)?;
            (common, Msg::Bank(BankMsg::Transfer { to, amount }))
        }
        TxCmd::CreateValidator { common, consensus_key, moniker, self_bond } => {
            (common, Msg::Staking(StakingMsg::CreateValidator { consensus_key, moniker, self_bond }))
        }
        TxCmd::Bond { common, validator, amount } => {
            let validator = ctx.resolve_address(&validator)?;
            (common, Msg::Staking(StakingMsg::Bond { validator, amount }))
        }
        TxCmd::Unbond { common, validator, amount } => {
            let validator = ctx.resolve_address(&validator)?;
            (common, Msg::Staking(StakingMsg::Unbond { validator, amount }))
        }
        TxCmd::ProviderRegister { common, info, stake } => {
            (common, Msg::Registry(RegistryMsg::Register { info: info.info(), stake }))
        }
        TxCmd::ProviderUpdate { common, info } => (common, Msg::Registry(RegistryMsg::Update { info: info.info() })),
        TxCmd::ProviderDeregister { common } => (common, Msg::Registry(RegistryMsg::Deregister)),
        TxCmd::Heartbeat { common } => (common, Msg::Registry(RegistryMsg::Heartbeat)),
        TxCmd::Order { common, cpu_cores, ram_mb, disk_gb, gpus, gpu_memory_mb, max_price, duration, bid_window, fixed } => {
            let bid_window_blocks = match bid_window {
                Some(w) => w,
                None => ctx.client().get::<tessera_ledger::Params>("/params")?.market.default_bid_window_blocks,
            };
            let spec = OrderSpec {
                resources: Resources { cpu_cores, ram_mb, disk_gb, gpus, gpu_memory_mb },
                max_price_per_block: max_price,
                duration_blocks: duration,
                bid_window_blocks,
                pricing: if fixed { Pricing::Fixed } else { Pricing::Auction },
            };
            (common, Msg::Market(MarketMsg::CreateOrder { spec }))
        }
        TxCmd::Bid { common, order, price } => {
            (common, Msg::Market(MarketMsg::PlaceBid { order, price_per_block: price }))
        }
        TxCmd::CancelOrder { common, order } => (common, Msg::Market(MarketMsg::CancelOrder { order })),
        TxCmd::CloseLease { common, lease } => (common, Msg::Market(MarketMsg::CloseLease { lease })),
    };
    send(ctx, &common, msg)
}

fn send(ctx: &Ctx, common: &Common, msg: Msg) -> anyhow::Result<()> {
    let key = ctx.keyring.get(&common.from)?;
    let client = ctx.client();
    let chain_id = client.status()?.chain_id;
    let hash = client.sign_and_submit(&key, &chain_id, common.fee, msg).context("the node refused the transaction")?;
    if common.no_wait {
        ctx.print(&serde_json::json!({ "hash": hash }), |_| println!("submitted {hash}"));
        return Ok(());
    }
    let result = client.wait_for_tx(&hash, Duration::from_secs(30))?;
    ctx.print(&result, print_result);
    if result.code != 0 {
        anyhow::bail!("transaction failed in block {} (code {}): {}", result.height, result.code, result.log);
    }
    Ok(())
}

pub fn print_result(r: &TxResultDto) {
    let verdict = if r.code == 0 { "ok".to_string() } else { format!("FAILED (code {}): {}", r.code, r.log) };
    println!("tx {}  {}", r.hash, r.msg);
    println!("  block {} index {}  fee {} TSR  {}", r.height, r.index, r.fee, verdict);
    for e in &r.events {
        let attrs: Vec<String> = e.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  {}  {}", e.kind, attrs.join(" "));
    }
}
