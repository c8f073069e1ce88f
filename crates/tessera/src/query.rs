//! `tessera query ...` and `tessera status`.

use anyhow::Context;
use clap::Subcommand;
use tessera_client::api::*;
use tessera_types::Hash32;

use crate::cli::Ctx;

#[derive(Subcommand)]
pub enum QueryCmd {
    /// Balance of an address or keyring name.
    Balance {
        who: String,
        /// Also fetch a Merkle proof and check it against the block header's app hash.
        #[arg(long)]
        prove: bool,
    },
    /// Balance and nonces of an address or keyring name.
    Account { who: String },
    /// A block (latest when no height is given).
    Block { height: Option<u64> },
    /// A committed transaction by hash.
    Tx { hash: Hash32 },
    Validators,
    /// Unbonding entries of an address or keyring name.
    Unbonding { who: String },
    Providers,
    Provider { who: String },
    Orders,
    Order { id: u64 },
    Leases,
    Lease { id: u64 },
    Params,
    /// Total supply, genesis supply, issued and burned.
    Supply,
}

pub fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let s = ctx.client().status()?;
    ctx.print(&s, |s| {
        println!("chain      {}", s.chain_id);
        println!("height     {}", s.height);
        println!("app hash   {}", s.app_hash);
        println!("block      {}", s.latest_block_hash);
        println!("peers      {}", s.peers);
        println!("validator  {} (voting power {})", s.validator.consensus_key, s.validator.voting_power);
        println!("mempool    {} pending", s.mempool_size);
    });
    Ok(())
}

/// Checks that `block`'s header hashes to the value its commit certificate
/// signs, and that the signatures carry more than 2/3 of the validators' power.
fn verify_header(c: &tessera_client::Client, block: &BlockDto) -> anyhow::Result<()> {
    let h = &block.header;
    let hash = tessera_node::block::Header::from(h).hash();
    anyhow::ensure!(hash == block.hash && hash == block.commit.value_id, "block {} header does not hash to its committed id", h.height);
    anyhow::ensure!(block.commit.height == h.height, "commit certificate is for another height");
    let validators: Vec<ValidatorDto> = c.get("/validators")?;
    let set: Vec<_> = validators.iter().filter(|v| v.in_active_set).map(|v| (v.consensus_key, v.voting_power)).collect();
    block.commit.verify(&h.chain_id, &set).map_err(|e| anyhow::anyhow!("commit certificate of block {}: {e}", h.height))
}

fn print_json_text<T: serde::Serialize>(ctx: &Ctx, v: &T) {
    // Lists and records without a dedicated layout read fine as indented JSON.
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
    let _ = ctx;
}

pub fn run(ctx: &Ctx, cmd: QueryCmd) -> anyhow::Result<()> {
    let c = ctx.client();
    match cmd {
        QueryCmd::Balance { who, prove } => {
            let address = ctx.resolve_address(&who)?;
            if prove {
                let p = c.balance_proof(&address)?;
                if p.height > 0 {
                    let block = c.block(Some(p.height))?;
                    verify_header(&c, &block)?;
                    anyhow::ensure!(
                        block.header.app_hash == p.app_hash,
                        "proof root {} differs from block {} app hash {}",
                        p.app_hash,
                        p.height,
                        block.header.app_hash
                    );
                }
                let value = p.value.as_deref().map(hex::decode).transpose().context("value is not hex")?;
                let key = hex::decode(&p.key).context("key is not hex")?;
                let expected_key = tessera_ledger::bank::account_key(&address);
                anyhow::ensure!(key == expected_key, "node proved a different key than this address's account");
                if let Some(v) = &value {
                    let acct: tessera_ledger::bank::Account = borsh::from_slice(v).context("account does not decode")?;
                    anyhow::ensure!(acct.balance == p.balance, "proved value does not match the reported balance");
                }
                tessera_state::verify_proof(p.app_hash.0, &key, value.as_deref(), &hex::decode(&p.proof)?)
                    .context("balance proof failed")?;
                ctx.print(&p, |p| {
                    println!("{} TSR  {}", p.balance, p.address);
                    println!("verified against app hash {} of block {} (header signed by the validator set)", p.app_hash, p.height);
                });
            } else {
                let a = c.account(&address)?;
                ctx.print(&a, |a| println!("{} TSR  {}  (height {})", a.balance, a.address, a.height));
            }
        }
        QueryCmd::Account { who } => {
            let a = c.account(&ctx.resolve_address(&who)?)?;
            ctx.print(&a, |a| {
                println!("address     {}", a.address);
                println!("balance     {} TSR", a.balance);
                println!("nonce       {} (next to sign: {})", a.nonce, a.next_nonce);
            });
        }
        QueryCmd::Block { height } => {
            let b = c.block(height)?;
            ctx.print(&b, |b| {
                println!("block {}  {}", b.header.height, b.hash);
                println!("  time      {} ms", b.header.time_ms);
                println!("  prev      {}", b.header.prev_hash);
                println!("  app hash  {}", b.header.app_hash);
                println!("  proposer  {}", b.header.proposer);
                println!("  txs       {}", b.txs.len());
                for t in &b.txs {
                    let verdict = if t.code == 0 { "ok".into() } else { format!("failed: {}", t.log) };
                    println!("    {}  {}  {}", t.hash, t.msg, verdict);
                }
                for e in &b.end_events {
                    let attrs: Vec<String> = e.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("  {}  {}", e.kind, attrs.join(" "));
                }
            });
        }
        QueryCmd::Tx { hash } => {
            let t = c.tx(&hash)?;
            ctx.print(&t, crate::txcmd::print_result);
        }
        QueryCmd::Validators => {
            let v: Vec<ValidatorDto> = c.get("/validators")?;
            ctx.print(&v, |v| {
                for x in v {
                    println!("{}  {:<20} {} TSR bonded  power {}", x.operator, x.moniker, x.tokens, x.voting_power);
                }
            });
        }
        QueryCmd::Unbonding { who } => {
            let v: Vec<UnbondingDto> = c.get(&format!("/accounts/{}/unbonding", ctx.resolve_address(&who)?))?;
            ctx.print(&v, |v| {
                if v.is_empty() {
                    println!("no unbonding entries");
                }
                for u in v {
                    println!("{} TSR from {} returns at height {}", u.amount, u.validator, u.completes_at);
                }
            });
        }
        QueryCmd::Providers => {
            let v: Vec<ProviderDto> = c.get("/providers")?;
            ctx.print(&v, |v| print_json_text(ctx, v));
        }
        QueryCmd::Provider { who } => {
            let v: ProviderDto = c.get(&format!("/providers/{}", ctx.resolve_address(&who)?))?;
            ctx.print(&v, |v| print_json_text(ctx, v));
        }
        QueryCmd::Orders => {
            let v: Vec<OrderDto> = c.get("/orders")?;
            ctx.print(&v, |v| print_json_text(ctx, v));
        }
        QueryCmd::Order { id } => {
            let v: OrderDto = c.get(&format!("/orders/{id}"))?;
            ctx.print(&v, |v| print_json_text(ctx, v));
        }
        QueryCmd::Leases => {
            let v: Vec<LeaseDto> = c.get("/leases")?;
            ctx.print(&v, |v| print_json_text(ctx, v));
        }
        QueryCmd::Lease { id } => {
            let v: LeaseDto = c.get(&format!("/leases/{id}"))?;
            ctx.print(&v, |v| print_json_text(ctx, v));
        }
        QueryCmd::Params => {
            let v: tessera_ledger::Params = c.get("/params")?;
            ctx.print(&v, |v| print_json_text(ctx, v));
        }
        QueryCmd::Supply => {
            let v: SupplyDto = c.get("/supply")?;
            ctx.print(&v, |v| {
                println!("supply          {} TSR (height {})", v.supply, v.height);
                println!("genesis supply  {} TSR", v.genesis_supply);
                println!("issued          {} TSR", v.issued);
                println!("burned          {} TSR", v.burned);
            });
        }
    }
    Ok(())
}
