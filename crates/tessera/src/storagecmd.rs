//! `tessera storage ...` and `tessera provider run`.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tessera_client::api::DealDto;
use tessera_client::storage::PutOptions;
use tessera_storage::{Cid, ErasureScheme};
use tessera_types::Amount;

use crate::cli::Ctx;

fn parse_amount(s: &str) -> Result<Amount, String> {
    Amount::parse_positive_tsr(s).map_err(|e| e.to_string())
}


#[derive(Subcommand)]
pub enum StorageCmd {
    /// Erasure-code a file (or every file under a directory), open storage
    /// deals and upload the pieces; prints the content id of each file.
    Put {
        path: PathBuf,
        /// Key that pays for the deals.
        #[arg(long, default_value = "dev")]
        from: String,
        /// K data + M parity pieces per segment; any K rebuild it.
        #[arg(long, default_value = "4+2")]
        erasure: ErasureScheme,
        /// How long to store, in blocks.
        #[arg(long, default_value_t = 100_000)]
        duration: u64,
        /// Segment size in KiB; each of its K+M pieces is challenged every
        /// epoch, at about the same cost whatever its size. Default: 4096 for
        /// files up to 1 GiB, then about 256 segments a file (at most 65536).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
        segment_kib: Option<u64>,
        /// Highest price per GiB per block, TSR.
        #[arg(long, default_value = "0.01", value_parser = parse_amount)]
        max_price: Amount,
    },
    /// Fetch content by id, verify every byte, and write it to a file.
    Get {
        cid: Cid,
        /// File to write (written whole or not at all).
        #[arg(short = 'o', long = "out", id = "out_path")]
        out_path: PathBuf,
    },
    /// Content stored by a key.
    Ls {
        #[arg(long, default_value = "dev")]
        from: String,
    },
    /// Where each piece of some content is, its proofs and faults.
    Status { cid: Cid },
    /// End the deals of some content; unspent escrow returns.
    Rm {
        cid: Cid,
        #[arg(long, default_value = "dev")]
        from: String,
    },
    /// S3 access keys for the S3 endpoint.
    #[command(subcommand)]
    S3Key(S3KeyCmd),
}

#[derive(Subcommand)]
pub enum S3KeyCmd {
    /// Create an access key whose objects are stored and paid for by a keyring key.
    Create {
        #[arg(long, default_value = "dev")]
        from: String,
    },
}

/// Regular files under `dir`, in path order.
fn collect_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        let ft = std::fs::symlink_metadata(&p)?.file_type();
        if ft.is_dir() {
            collect_files(&p, out)?;
        } else if ft.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn progress_printer() -> impl FnMut(&str, u64, u64) {
    let tty = std::io::stderr().is_terminal();
    let mut last_step = u64::MAX;
    let mut last_label = String::new();
    move |label: &str, done: u64, total: u64| {
        let pct = if total == 0 { 100 } else { done * 100 / total };
        if tty {
            eprint!("\r{label:<12} {:>8.1} / {:.1} MiB  {pct:>3}%", done as f64 / 1048576.0, total as f64 / 1048576.0);
            if done >= total {
                eprintln!();
            }
        } else if label != last_label || pct / 25 != last_step {
            eprintln!("{label} {pct}%");
        }
        last_step = pct / 25;
        last_label = label.to_string();
    }
}

pub fn run(ctx: &Ctx, cmd: StorageCmd) -> anyhow::Result<()> {
    let client = ctx.client();
    match cmd {
        StorageCmd::Put { path, from, erasure, duration, segment_kib, max_price } => {
            let key = ctx.keyring.get(&from)?;
            let opts_for = |len: u64| {
                let segment_bytes = match segment_kib {
                    Some(kib) => tessera_client::storage::round_segment_bytes((kib as usize) << 10, erasure),
                    None => tessera_client::storage::segment_bytes_for(len, erasure),
                };
                PutOptions { scheme: erasure, segment_bytes, duration_blocks: duration, max_price_per_gib_block: max_price }
            };
            let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_dir() {
                let mut files = Vec::new();
                collect_files(&path, &mut files)?;
                anyhow::ensure!(!files.is_empty(), "{} holds no files to store", path.display());
                let mut stored = Vec::new();
                for f in &files {
                    let rel = f.strip_prefix(&path).unwrap_or(f).display().to_string();
                    let len = std::fs::metadata(f)?.len();
                    if len == 0 {
                        eprintln!("skipping empty file {rel}");
                        continue;
                    }
                    eprintln!("{rel}");
                    let r = tessera_client::storage::put(&client, &key, f, &opts_for(len), &mut progress_printer())?;
                    stored.push(serde_json::json!({ "path": rel, "cid": r.cid.to_string(), "bytes": r.bytes, "deals": r.deals }));
                }
                ctx.print(&stored, |stored| {
                    for s in stored {
                        println!("{}  {}", s["cid"].as_str().unwrap_or_default(), s["path"].as_str().unwrap_or_default());
                    }
                });
                return Ok(());
            }
            let r = tessera_client::storage::put(&client, &key, &path, &opts_for(meta.len()), &mut progress_printer())?;
            let view = serde_json::json!({
                "cid": r.cid.to_string(), "bytes": r.bytes, "deals": r.deals, "missed_pieces": r.missed_pieces,
            });
            ctx.print(&view, |_| {
                println!("{}", r.cid);
                println!("  {} bytes in deal(s) {:?}, erasure {}+{}", r.bytes, r.deals, erasure.data, erasure.parity);
                if r.missed_pieces > 0 {
                    println!("  {} piece(s) did not reach their provider; the provider rebuilds them", r.missed_pieces);
                }
            });
        }
        StorageCmd::Get { cid, out_path } => {
            let n = tessera_client::storage::get(&client, &cid, &out_path, &mut progress_printer())?;
            ctx.print(&serde_json::json!({ "cid": cid.to_string(), "bytes": n, "output": out_path }), |_| {
                println!("wrote {n} bytes to {} (every segment verified)", out_path.display())
            });
        }
        StorageCmd::Ls { from } => {
            let owner = ctx.resolve_address(&from)?;
            let deals: Vec<DealDto> = client.get::<Vec<DealDto>>("/deals")?.into_iter().filter(|d| d.owner == owner).collect();
            ctx.print(&deals, |deals| {
                if deals.is_empty() {
                    println!("{owner} stores nothing");
                }
                for d in deals {
                    let bytes: u64 = d.segments.iter().map(|(_, l, _)| l).sum();
                    let state = if d.active { format!("active until {}", d.end) } else { "ended".into() };
                    println!("tcid1{}  deal {}  {} bytes  {}  {state}", d.cid, d.id, bytes, d.erasure);
                }
            });
        }
        StorageCmd::Status { cid } => {
            // Its own deals, and each pack it lies in.
            let tessera_client::storage::Holders { own, packs } = tessera_client::storage::holders(&client, &cid)?;
            let mut views = Vec::new();
            if !own.is_empty() || packs.is_empty() {
                views.push((None, cid, tessera_client::storage::manifest_from(&cid, own)?));
            }
            for (pack, member) in packs {
                let manifest = tessera_client::storage::pack_manifest(&pack)?;
                views.push((Some((pack.clone(), member)), Cid(pack.cid), manifest));
            }
            let deals: Vec<&DealDto> = views.iter().flat_map(|(_, _, (_, deals))| deals).collect();
            ctx.print(&deals, |_| {
                for (packed, shown, (manifest, deals)) in &views {
                    if let Some((pack, m)) = packed {
                        println!(
                            "{cid}: {} bytes, packed with {} other object(s) in deal {} at offset {}",
                            m.len,
                            pack.packed.saturating_sub(1),
                            pack.id,
                            m.offset
                        );
                    }
                    print_segments(shown, manifest, deals);
                }
            });
        }
        StorageCmd::S3Key(S3KeyCmd::Create { from }) => {
            ctx.keyring.get(&from)?;
            let k = ctx.s3_keys().create(&from)?;
            ctx.print(&k, |k| {
                println!("access key  {}", k.access_key);
                println!("secret key  {}", k.secret_key);
                println!("account     {from}");
                println!("use with: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY=... aws --endpoint-url http://127.0.0.1:7701 s3 ls", k.access_key);
            });
        }
        StorageCmd::Rm { cid, from } => {
            let key = ctx.keyring.get(&from)?;
            let n = tessera_client::storage::remove(&client, &key, &cid)?;
            ctx.print(&serde_json::json!({ "cid": cid.to_string(), "deals_ended": n }), |_| println!("ended {n} deal(s) of {cid}"));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ProviderRunArgs {
    /// Keyring key the provider signs with (needs TSR for its stake and fees).
    #[arg(long)]
    pub key: String,
    /// Where pieces are kept (default: <home>/providers/<key>).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the piece server.
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,
    /// Disk offered, GiB.
    #[arg(long, default_value_t = 10)]
    pub storage_gb: u64,
    #[arg(long, default_value = "100", value_parser = parse_amount)]
    pub stake: Amount,
    #[arg(long, default_value = "local")]
    pub region: String,
    /// Price per GiB of disk per block, TSR.
    #[arg(long, default_value = "0.001", value_parser = parse_amount)]
    pub price_per_gb: Amount,
    /// Price per CPU core per block, TSR: what `fixed` bids and fixed-price
    /// orders match; `auction` and `dynamic` treat it as cost.
    #[arg(long, default_value = "0.001", value_parser = parse_amount)]
    pub price_per_core: Amount,
    /// Price per GiB of RAM per block, TSR.
    #[arg(long, default_value = "0", value_parser = parse_amount_or_zero)]
    pub price_per_gb_ram: Amount,
    /// Price per GPU per block, TSR.
    #[arg(long, default_value = "0.05", value_parser = parse_amount)]
    pub price_per_gpu: Amount,
    /// How auction bids are priced: `fixed` (the price list), `auction` (cost
    /// plus 20%, undercutting rivals down to cost plus 2%) or `dynamic` (the
    /// ledger's base price per resource class, scaled by this provider's load).
    #[arg(long, default_value = "fixed", value_parser = |s: &str| s.parse::<tessera_provider::decide::Strategy>())]
    pub price_strategy: tessera_provider::decide::Strategy,
    /// Jobs run at the same time.
    #[arg(long, default_value_t = 2)]
    pub max_jobs: usize,
    /// Offer this many CPU cores instead of all the machine has.
    #[arg(long)]
    pub cpu_cores: Option<u32>,
    /// Offer this much RAM (MiB) instead of all the machine has.
    #[arg(long)]
    pub ram_mb: Option<u64>,
    /// Where model files for embedding jobs come from when they are not cached
    /// yet: a directory (any file in it, matched by blake3) or an http(s) URL
    /// serving `<url>/<blake3>`. Repeatable. Every file is checked against the
    /// hash the job names.
    #[arg(long = "model-source", value_parser = |s: &str| s.parse::<tessera_runtime::models::Source>())]
    pub model_sources: Vec<tessera_runtime::models::Source>,
    /// Run the whole agent (piece intake, proofs, jobs) at this Unix nice
    /// value, 0 (normal) to 19 (lowest), on a machine whose other services
    /// should come first. A devnet runs its providers at 10: they stand for
    /// other machines, and the node and the S3 endpoint answer the user.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub nice: u8,
    /// Stop when this process id is gone.
    #[arg(long, hide = true)]
    pub parent_pid: Option<u32>,
}

fn parse_amount_or_zero(s: &str) -> Result<Amount, String> {
    Amount::parse_tsr(s).map_err(|e| e.to_string())
}

pub fn provider_run(ctx: &Ctx, home: &std::path::Path, a: ProviderRunArgs) -> anyhow::Result<()> {
    let key = ctx.keyring.get(&a.key)?;
    let cfg = tessera_provider::agent::AgentConfig {
        key,
        rpc: ctx.client().base_url().to_string(),
        data_dir: a.data_dir.unwrap_or_else(|| home.join("providers").join(&a.key)),
        listen: a.listen,
        storage_gb: a.storage_gb,
        stake: a.stake,
        region: a.region,
        price_per_gb_disk: a.price_per_gb,
        price_per_cpu_core: a.price_per_core,
        price_per_gb_ram: a.price_per_gb_ram,
        price_per_gpu: a.price_per_gpu,
        strategy: a.price_strategy,
        max_jobs: a.max_jobs,
        cpu_cores: a.cpu_cores,
        ram_mb: a.ram_mb,
        model_sources: a.model_sources,
        parent_pid: a.parent_pid,
        nice: a.nice,
    };
    run_until_stopped(None, |stop| async move { tessera_provider::agent::run(cfg, stop).await.context("provider stopped") })
}

#[derive(Args)]
pub struct S3ServeArgs {
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub listen: SocketAddr,
    /// Index and spool directory (default: <home>/s3).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Local read cache of recently stored and read objects, in MiB (0: none).
    #[arg(long, default_value_t = tessera_s3::service::DEFAULT_CACHE_BYTES >> 20)]
    pub cache_mib: u64,
    /// Bound, in MiB, on acknowledged objects not yet on the storage network.
    /// A PUT is acknowledged once its body is durable here and placed in the
    /// background (HEAD shows x-amz-meta-tessera-state: pending until then).
    /// 0: every PUT waits until its deals are committed and its pieces uploaded.
    #[arg(long, default_value_t = tessera_s3::placer::DEFAULT_STAGING_BYTES >> 20)]
    pub staging_mib: u64,
    /// Stop when this process id is gone.
    #[arg(long, hide = true)]
    pub parent_pid: Option<u32>,
}

pub fn s3_serve(ctx: &Ctx, home: &std::path::Path, a: S3ServeArgs) -> anyhow::Result<()> {
    let data = a.data_dir.unwrap_or_else(|| home.join("s3"));
    std::fs::create_dir_all(&data)?;
    // A predecessor that was just killed may hold the index's lock for a moment longer.
    let started = std::time::Instant::now();
    let index = loop {
        match tessera_s3::index::Index::open(&data.join("index.redb")) {
            Err(e) if e.to_string().contains("already open") && started.elapsed() < std::time::Duration::from_secs(5) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            r => break r.with_context(|| format!("opening {} (is another S3 endpoint using it?)", data.display()))?,
        }
    };
    let keys = ctx.s3_keys();
    let keyring = tessera_client::Keyring::new(ctx.keyring.dir().to_path_buf());
    let gateway = tessera_s3::service::Gateway::new(index, keys, keyring, ctx.client().base_url().to_string(), data.join("work"), a.cache_mib << 20, a.staging_mib << 20)?;
    let listen = a.listen;
    run_until_stopped(a.parent_pid, |stop| tessera_s3::server::serve(gateway, listen, stop))
}

/// Runs `work` on a small runtime with a stop flag that Ctrl-C, SIGTERM or
/// the end of process `parent_pid` sets.
fn run_until_stopped<F, Fut>(parent_pid: Option<u32>, work: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            s.store(true, Ordering::Relaxed);
        });
        #[cfg(unix)]
        {
            let s = stop.clone();
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::spawn(async move {
                term.recv().await;
                s.store(true, Ordering::Relaxed);
            });
        }
        if let Some(pid) = parent_pid {
            let s = stop.clone();
            tokio::spawn(async move {
                while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                s.store(true, Ordering::Relaxed);
            });
        }
        work(stop).await
    })
}

/// Where each segment's pieces are, and how healthy the segment is.
fn print_segments(cid: &Cid, manifest: &tessera_storage::Manifest, deals: &[DealDto]) {
    println!("{cid}: {} bytes, {} segment(s), erasure {}+{}", manifest.total_len, manifest.segments.len(), manifest.scheme.data, manifest.scheme.parity);
    for d in deals {
        for (n, len, _) in &d.segments {
            let pieces: Vec<_> = d.pieces.iter().filter(|p| p.segment == *n).collect();
            let healthy = pieces.iter().filter(|p| !p.lost).count();
            let health = if healthy >= pieces.len() { "healthy" } else if healthy >= manifest.scheme.data as usize { "degraded" } else { "unreadable" };
            println!("  segment {n} ({len} bytes, deal {}): {healthy}/{} pieces, {health}", d.id, pieces.len());
            for p in pieces {
                println!("    piece {} on {}  proven {} epoch(s)  faults {}{}", p.index, p.provider, p.proven_epochs, p.faults, if p.lost { "  LOST" } else { "" });
            }
        }
    }
}
