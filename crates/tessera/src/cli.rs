//! Command-line shape and dispatch.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tessera_client::{Client, Keyring};
use tessera_types::Address;

use crate::query::QueryCmd;
use crate::txcmd::TxCmd;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera: rent and provide GPUs, CPUs and storage on one verified network")]
pub struct Cli {
    /// Home directory: keyring in <home>/keys, devnet data in <home>/devnet.
    #[arg(long, global = true, env = "TESSERA_HOME", default_value = ".tessera")]
    pub home: PathBuf,
    /// Node RPC address: where `devnet` listens and where other commands connect.
    #[arg(long, global = true, env = "TESSERA_RPC", default_value = "127.0.0.1:7700")]
    pub rpc: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a whole local network (one validator, RPC, event stream) until Ctrl-C.
    Devnet(DevnetArgs),
    /// Manage named keys in the local keyring.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Sign and send a transaction.
    #[command(subcommand)]
    Tx(TxCmd),
    /// Read chain state.
    #[command(subcommand)]
    Query(QueryCmd),
    /// Height, app hash, peers and validator of the node.
    Status,
    /// Store and fetch content on the storage network.
    #[command(subcommand)]
    Storage(crate::storagecmd::StorageCmd),
    /// Run work on the network: WebAssembly programs and embedding jobs.
    #[command(subcommand)]
    Job(crate::jobcmd::JobCmd),
    /// Run a provider agent.
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// The S3-compatible endpoint.
    #[command(subcommand)]
    S3(S3Cmd),
    /// Benchmarks that print a ratio against a peer measured in the same run.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Args)]
pub struct DevnetArgs {
    /// Data directory (default: <home>/devnet).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Milliseconds between blocks.
    #[arg(long, default_value_t = tessera_node::devnet::DEVNET_BLOCK_MS, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub block_time_ms: u64,
    #[arg(long, default_value = "tessera-devnet")]
    pub chain_id: String,
    /// Funded test accounts (test1, test2, ...) created in the keyring.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub test_accounts: u32,
    /// Provider agents that run jobs (each its own process, key and data dir,
    /// with its own hardware profile, prices and price strategy: fixed,
    /// auction, dynamic in turn).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub providers: u32,
    /// Provider agents that offer disk (the first of them are the compute
    /// providers too; the default 4+2 erasure scheme needs at least 6).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub storage_providers: u32,
    /// Jobs each compute provider runs at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub provider_max_jobs: u64,
    /// Directory the providers fetch model files from (matched by blake3);
    /// default: the one scripts/fetch-model.sh fills, when present.
    #[arg(long)]
    pub model_source: Option<PathBuf>,
    /// Address of the S3 endpoint (default: the RPC port plus one, 127.0.0.1:7701).
    #[arg(long)]
    pub s3: Option<SocketAddr>,
    /// The S3 endpoint's local read cache of objects by content id, in MiB (0: none).
    #[arg(long, default_value_t = tessera_s3::service::DEFAULT_CACHE_BYTES >> 20)]
    pub s3_cache_mib: u64,
    /// Bound, in MiB, on S3 objects acknowledged but not yet on the storage
    /// network (0: every PUT waits for its deals and pieces).
    #[arg(long, default_value_t = tessera_s3::placer::DEFAULT_STAGING_BYTES >> 20)]
    pub s3_staging_mib: u64,
    /// Block records kept, the latest ones (0: all). State is always whole;
    /// older blocks and their transactions' results are deleted. Storage
    /// proofs make blocks large: about 36 KB per stored MiB-piece per epoch.
    #[arg(long, default_value_t = tessera_node::devnet::DEFAULT_RETAIN_BLOCKS)]
    pub retain_blocks: u64,
    /// Seconds in a proof epoch: every stored piece is challenged once in
    /// each, at a block of its own. Shorter epochs find a lost piece sooner;
    /// each proof (about 36 KB a MiB-piece) goes into a block once an epoch,
    /// so they also fill blocks and disk faster. Set when a chain is created;
    /// a data dir keeps its genesis.
    #[arg(long, default_value_t = tessera_node::devnet::DEFAULT_PROOF_EPOCH.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub proof_epoch_secs: u64,
}

#[derive(Subcommand)]
pub enum S3Cmd {
    /// Serve buckets and objects over the storage network (SigV4 with `storage s3-key` keys).
    Serve(crate::storagecmd::S3ServeArgs),
}

#[derive(Subcommand)]
pub enum ProviderCmd {
    /// Offer this machine: register its hardware and prices, heartbeat, bid on
    /// jobs and run them, store and serve pieces, answer storage challenges.
    Run(crate::storagecmd::ProviderRunArgs),
    /// Print what this machine would offer: CPU cores, RAM, NVIDIA GPUs (NVML).
    Detect,
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a new key.
    New { name: String },
    /// List keys and their addresses.
    List,
    /// Show one key's address and public key.
    Show { name: String },
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Signed transfers through decode, signature check, execute and redb commit,
    /// against the raw ed25519 batch-verify rate on one core.
    Ledger {
        #[arg(long, default_value_t = 50_000)]
        txs: usize,
        /// Transactions per block (the devnet's proposal limit is 5,000).
        #[arg(long, default_value_t = 5_000)]
        block_size: usize,
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
    },
    /// Erasure encode and decode throughput against the raw reed-solomon-simd
    /// crate on the same shards.
    Storage {
        /// Data to encode, MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: usize,
        /// Segment size, KiB (each segment is split into the data shards).
        #[arg(long, default_value_t = 4096)]
        segment_kib: usize,
        /// Erasure scheme K+M.
        #[arg(long, default_value = "4+2")]
        erasure: tessera_storage::ErasureScheme,
    },
    /// No-op wasm jobs through the whole market path on a devnet (order,
    /// award, run, report, settle): jobs/s and submit-to-running/result
    /// latency, next to Ray's task round trip when Ray is installed.
    Dispatch {
        /// Jobs in the throughput burst: enough that the two block intervals
        /// a job needs from submit to result are a small part of the burst.
        #[arg(long, default_value_t = 8_000)]
        jobs: usize,
        /// Jobs sent one at a time for the latency figures.
        #[arg(long, default_value_t = 30)]
        latency_jobs: usize,
        /// Buyer accounts submitting at once.
        #[arg(long, default_value_t = 64)]
        buyers: u32,
        #[arg(long, default_value_t = 500)]
        block_time_ms: u64,
        /// Jobs each of the 3 providers runs at once.
        #[arg(long, default_value_t = 256)]
        max_jobs: usize,
        /// `fixed` (matched at once) or `auction` (one-block bid window).
        #[arg(long, default_value = "fixed")]
        pricing: String,
    },
    /// Sentence embeddings through the network against the same model called
    /// directly with candle in this process.
    Embed {
        #[arg(long, default_value_t = 2_000)]
        sentences: usize,
        /// Model directory (default: where scripts/fetch-model.sh puts it).
        #[arg(long)]
        model_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 500)]
        block_time_ms: u64,
    },
}


pub struct Ctx {
    pub keyring: Keyring,
    pub rpc: String,
    pub output: Output,
}

impl Ctx {
    pub fn client(&self) -> Client {
        let url = if self.rpc.starts_with("http://") || self.rpc.starts_with("https://") {
            self.rpc.clone()
        } else {
            format!("http://{}", self.rpc)
        };
        Client::new(&url)
    }

    /// A keyring name or a `tsr1...` address.
    pub fn resolve_address(&self, who: &str) -> anyhow::Result<Address> {
        if who.starts_with("tsr1") {
            return Ok(who.parse()?);
        }
        Ok(self.keyring.get(who).with_context(|| format!("{who:?} is neither an address (tsr1...) nor a key name"))?.address())
    }

    /// Prints `value` as JSON, or runs `text` for humans.
    /// The S3 access keys, `<home>/s3-keys` (home: the keyring's parent).
    pub fn s3_keys(&self) -> tessera_s3::keys::AccessKeys {
        tessera_s3::keys::AccessKeys::new(self.keyring.dir().parent().unwrap_or(std::path::Path::new(".")).join("s3-keys"))
    }

    pub fn print<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value).expect("serialisable")),
            Output::Text => text(value),
        }
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx { keyring: Keyring::new(cli.home.join("keys")), rpc: cli.rpc.clone(), output: cli.output };
    match cli.command {
        Command::Devnet(a) => devnet(&cli.home, &ctx, a),
        Command::Keys(k) => keys(&ctx, k),
        Command::Tx(t) => crate::txcmd::run(&ctx, t),
        Command::Query(q) => crate::query::run(&ctx, q),
        Command::Status => crate::query::status(&ctx),
        Command::Storage(s) => crate::storagecmd::run(&ctx, s),
        Command::Job(j) => crate::jobcmd::run(&ctx, j),
        Command::Provider(ProviderCmd::Detect) => {
            let free = tessera_provider::hardware::free_disk_gb(&cli.home);
            let d = tessera_provider::hardware::detect(free.unwrap_or(0));
            ctx.print(&serde_json::json!({ "hardware": d.hardware, "gpus": d.gpu_note }), |_| {
                println!("CPU cores  {}", d.hardware.cpu_cores);
                println!("RAM        {} MiB", d.hardware.ram_mb);
                println!("disk       {} GB free under {}", d.hardware.disk_gb, cli.home.display());
                println!("GPUs       {}", d.gpu_note);
            });
            Ok(())
        }
        Command::Provider(ProviderCmd::Run(a)) => crate::storagecmd::provider_run(&ctx, &cli.home, a),
        Command::S3(S3Cmd::Serve(a)) => crate::storagecmd::s3_serve(&ctx, &cli.home, a),
        Command::Bench(BenchCmd::Dispatch { jobs, latency_jobs, buyers, block_time_ms, max_jobs, pricing }) => {
            let pricing = match pricing.as_str() {
                "fixed" => tessera_ledger::market::Pricing::Fixed,
                "auction" => tessera_ledger::market::Pricing::Auction,
                other => anyhow::bail!("--pricing {other:?}: use fixed or auction"),
            };
            crate::benchjobs::dispatch(&ctx, crate::benchjobs::DispatchArgs {
                jobs,
                latency_jobs,
                buyers: buyers.clamp(1, 100),
                block_ms: block_time_ms,
                max_jobs,
                pricing,
            })
        }
        Command::Bench(BenchCmd::Embed { sentences, model_dir, block_time_ms }) => {
            let model_dir = model_dir.or_else(tessera_runtime::models::default_model_dir).context("no --model-dir and no HOME")?;
            crate::benchjobs::embed(&ctx, crate::benchjobs::EmbedArgs { sentences: sentences.max(1), model_dir, block_ms: block_time_ms })
        }
        Command::Bench(BenchCmd::Ledger { txs, block_size, accounts }) => bench_ledger(&ctx, txs, block_size, accounts),
        Command::Bench(BenchCmd::Storage { size_mib, segment_kib, erasure }) => {
            bench_storage(&ctx, size_mib, segment_kib, erasure)
        }
    }
}

fn devnet(home: &std::path::Path, ctx: &Ctx, a: DevnetArgs) -> anyhow::Result<()> {
    let listen = ctx.rpc.trim_start_matches("http://").trim_end_matches('/');
    let rpc: SocketAddr = listen.parse().with_context(|| format!("--rpc {listen:?} is not an address like 127.0.0.1:7700"))?;
    let cfg = tessera_node::devnet::DevnetConfig {
        dir: a.dir.unwrap_or_else(|| home.join("devnet")),
        keyring: Keyring::new(ctx.keyring.dir().to_path_buf()),
        rpc,
        block_time: Duration::from_millis(a.block_time_ms),
        chain_id: a.chain_id,
        test_accounts: a.test_accounts,
        providers: a.providers,
        provider_max_jobs: a.provider_max_jobs as usize,
        storage_providers: a.storage_providers,
        model_source: a.model_source.or_else(tessera_runtime::models::default_model_dir).filter(|d| d.is_dir()),
        s3: a.s3.unwrap_or_else(|| tessera_node::devnet::s3_address(rpc)),
        s3_cache_mib: a.s3_cache_mib,
        s3_staging_mib: a.s3_staging_mib,
        retain_blocks: a.retain_blocks,
        proof_epoch: Duration::from_secs(a.proof_epoch_secs),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(tessera_node::devnet::run(cfg))
}

#[derive(Serialize)]
struct KeyView {
    name: String,
    address: Address,
    public_key: String,
}

fn keys(ctx: &Ctx, cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::New { name } => {
            let key = ctx.keyring.create(&name)?;
            let view = KeyView { name, address: key.address(), public_key: hex::encode(key.public_key()) };
            ctx.print(&view, |v| {
                println!("created key {:?}", v.name);
                println!("address     {}", v.address);
                println!("public key  {}", v.public_key);
                println!("stored in   {}", ctx.keyring.dir().display());
            });
        }
        KeysCmd::List => {
            let list: Vec<KeyView> = ctx
                .keyring
                .list()?
                .into_iter()
                .map(|(name, address)| {
                    let public_key = ctx.keyring.get(&name).map(|k| hex::encode(k.public_key())).unwrap_or_default();
                    KeyView { name, address, public_key }
                })
                .collect();
            ctx.print(&list, |l| {
                if l.is_empty() {
                    println!("no keys in {} (create one with `tessera keys new NAME`)", ctx.keyring.dir().display());
                }
                for k in l {
                    println!("{:<16} {}", k.name, k.address);
                }
            });
        }
        KeysCmd::Show { name } => {
            let key = ctx.keyring.get(&name)?;
            let view = KeyView { name, address: key.address(), public_key: hex::encode(key.public_key()) };
            ctx.print(&view, |v| println!("{}  {}  public key {}", v.name, v.address, v.public_key));
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct BenchView {
    txs: usize,
    blocks: usize,
    ledger_tx_per_s: f64,
    raw_ed25519_batch_verify_per_s_one_core: f64,
    ratio: f64,
    ingress_busy_ms: u128,
    execute_busy_ms: u128,
    merkle_root_busy_ms: u128,
    commit_busy_ms: u128,
    peak_rss_mib: f64,
}

fn bench_ledger(ctx: &Ctx, txs: usize, block_size: usize, accounts: usize) -> anyhow::Result<()> {
    let cfg = tessera_node::bench::LedgerBenchConfig { txs, block_size, accounts };
    let mut progress = |m: &str| eprintln!("bench: {m}");
    let r = tessera_node::bench::run_ledger_bench(&cfg, &mut progress)?;
    let view = BenchView {
        txs: r.txs,
        blocks: r.blocks,
        ledger_tx_per_s: r.ledger_tps,
        raw_ed25519_batch_verify_per_s_one_core: r.raw_verify_per_s,
        ratio: r.ratio,
        ingress_busy_ms: r.ingress_busy.as_millis(),
        execute_busy_ms: r.execute_busy.as_millis(),
        merkle_root_busy_ms: r.root_busy.as_millis(),
        commit_busy_ms: r.commit_busy.as_millis(),
        peak_rss_mib: r.peak_rss_mib,
    };
    ctx.print(&view, |v| {
        println!("ledger bench: {} signed transfers in {} blocks", v.txs, v.blocks);
        println!("  real path (decode, verify | execute, Merkle root, durable commit): {:>10.0} tx/s", v.ledger_tx_per_s);
        println!("  raw ed25519 batch verify, one core (same txs, same run):          {:>10.0} sig/s", v.raw_ed25519_batch_verify_per_s_one_core);
        println!("  ratio: {:.2} (target >= 0.50)", v.ratio);
        println!(
            "  stage busy time: ingress (decode + batch verify) {} ms | execute {} ms | Merkle root {} ms | commit {} ms",
            v.ingress_busy_ms, v.execute_busy_ms, v.merkle_root_busy_ms, v.commit_busy_ms
        );
        println!("  peak RSS: {:.1} MiB", v.peak_rss_mib);
    });
    Ok(())
}

#[derive(Serialize)]
struct StorageBenchView {
    segments: usize,
    erasure: String,
    encode_gib_s: f64,
    raw_encode_gib_s: f64,
    encode_ratio: f64,
    decode_gib_s: f64,
    raw_decode_gib_s: f64,
    decode_ratio: f64,
    tree_gib_s: f64,
    flat_blake3_gib_s: f64,
    tree_ratio: f64,
    peak_rss_mib: f64,
}

fn bench_storage(ctx: &Ctx, size_mib: usize, segment_kib: usize, scheme: tessera_storage::ErasureScheme) -> anyhow::Result<()> {
    let cfg = tessera_node::bench::StorageBenchConfig {
        total_bytes: size_mib.max(1) << 20,
        segment_bytes: segment_kib.max(1) << 10,
        scheme,
    };
    let mut progress = |m: &str| eprintln!("bench: {m}");
    let r = tessera_node::bench::run_storage_bench(&cfg, &mut progress)?;
    let view = StorageBenchView {
        segments: r.segments,
        erasure: scheme.to_string(),
        encode_gib_s: r.encode_gib_s,
        raw_encode_gib_s: r.raw_encode_gib_s,
        encode_ratio: r.encode_gib_s / r.raw_encode_gib_s,
        decode_gib_s: r.decode_gib_s,
        raw_decode_gib_s: r.raw_decode_gib_s,
        decode_ratio: r.decode_gib_s / r.raw_decode_gib_s,
        tree_gib_s: r.tree_gib_s,
        flat_blake3_gib_s: r.flat_blake3_gib_s,
        tree_ratio: r.tree_gib_s / r.flat_blake3_gib_s,
        peak_rss_mib: r.peak_rss_mib,
    };
    ctx.print(&view, |v| {
        println!("storage bench: {} segments, erasure {}", v.segments, v.erasure);
        println!("  encode: {:.2} GiB/s vs raw reed-solomon-simd {:.2} GiB/s, ratio {:.2} (goal >= 0.90)", v.encode_gib_s, v.raw_encode_gib_s, v.encode_ratio);
        println!("  decode: {:.2} GiB/s vs raw reed-solomon-simd {:.2} GiB/s, ratio {:.2} (goal >= 0.90)", v.decode_gib_s, v.raw_decode_gib_s, v.decode_ratio);
        println!(
            "  piece Merkle trees: {:.2} GiB/s vs flat blake3 of the same pieces {:.2} GiB/s, ratio {:.2}",
            v.tree_gib_s, v.flat_blake3_gib_s, v.tree_ratio
        );
        println!("  peak RSS: {:.1} MiB", v.peak_rss_mib);
    });
    Ok(())
}
