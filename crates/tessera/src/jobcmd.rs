//! `tessera job`: submit a job spec, follow it to settlement, read its logs
//! and fetch its result with every byte checked against the committed hash.

use anyhow::{bail, Context};
use clap::Subcommand;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tessera_client::api::{JobDto, LeaseDto, OrderDto, ProviderDto};
use tessera_client::jobspec::{self, Slot};
use tessera_client::storage::PutOptions;
use tessera_client::s3::{S3Client, S3Url};
use tessera_client::Client;
use tessera_ledger::jobs::{JobMsg, JobOutput};
use tessera_ledger::market::{price_for, satisfies, Pricing};
use tessera_ledger::Msg;
use tessera_types::Amount;

use crate::cli::Ctx;

#[derive(Subcommand)]
pub enum JobCmd {
    /// Submit a job spec (TOML; see examples/jobs/README.md). Inputs too large
    /// to travel in the transaction are stored on the storage network first.
    Submit {
        spec: PathBuf,
        /// Key that pays.
        #[arg(long, default_value = "dev")]
        from: String,
        /// Follow the job until it settles (exit status 1 if it fails).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// S3 endpoint that holds the spec's s3:// inputs and output bucket. The
        /// request is signed with the first access key of `--from` (tessera
        /// storage s3-key create), or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
        #[arg(long, env = "TESSERA_S3_ENDPOINT", default_value = "http://127.0.0.1:7701")]
        s3_endpoint: String,
    },
    /// A job's state, price, provider and result.
    Status { id: u64 },
    /// What the provider logged while running a job (the guest's stderr included).
    Logs { id: u64 },
    /// Fetch a succeeded job's output files into a directory, checking each
    /// against the hash the provider committed to.
    Result {
        id: u64,
        #[arg(short = 'o', long = "out", default_value = ".")]
        out: PathBuf,
        /// Also store each file on the storage network under its own content
        /// id, paid by `--from` (what `[output] storage = true` asks for).
        #[arg(long)]
        store: bool,
        /// Key that pays for `--store`.
        #[arg(long, default_value = "dev")]
        from: String,
    },
    /// Jobs, newest first.
    List {
        /// Only this buyer's jobs (a key name or address).
        #[arg(long)]
        from: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Cancel a queued or running job; a running one pays for the blocks it ran.
    Cancel {
        id: u64,
        #[arg(long, default_value = "dev")]
        from: String,
    },
}

pub fn run(ctx: &Ctx, cmd: JobCmd) -> anyhow::Result<()> {
    let client = ctx.client();
    match cmd {
        JobCmd::Submit { spec, from, wait, timeout, s3_endpoint } => {
            submit(ctx, &client, &spec, &from, &s3_endpoint, wait, Duration::from_secs(timeout))
        }
        JobCmd::Status { id } => {
            let j: JobDto = client.get(&format!("/jobs/{id}"))?;
            let phase = if j.state == "leased" {
                tessera_client::jobs::provider_endpoint(&client, &j).ok().and_then(|e| tessera_client::jobs::fetch_phase(&e, id).ok())
            } else {
                None
            };
            ctx.print(&j, |j| print_job(j, phase.as_deref()));
            Ok(())
        }
        JobCmd::Logs { id } => {
            let j: JobDto = client.get(&format!("/jobs/{id}"))?;
            let endpoint = tessera_client::jobs::provider_endpoint(&client, &j)
                .with_context(|| format!("job {id} is {}; no provider has run it yet", j.state))?;
            print!("{}", tessera_client::jobs::fetch_logs(&endpoint, id)?);
            Ok(())
        }
        JobCmd::Result { id, out, store, from } => {
            let j: JobDto = client.get(&format!("/jobs/{id}"))?;
            let files = fetch_results(&client, &j, &out)?;
            let stored = if store { store_results(&client, &ctx.keyring.get(&from)?, &files)? } else { Vec::new() };
            let written: Vec<serde_json::Value> = files
                .iter()
                .map(|(f, dest)| {
                    let cid = stored.iter().find(|(name, _)| *name == f.name).map(|(_, c)| c.clone());
                    serde_json::json!({ "name": f.name, "path": dest.display().to_string(), "size": f.size, "hash": f.hash, "cid": cid })
                })
                .collect();
            ctx.print(&written, |w| {
                for f in w {
                    println!("{}  {} bytes  (blake3 {} verified)", f["path"].as_str().unwrap_or_default(), f["size"], f["hash"].as_str().unwrap_or_default());
                    if let Some(cid) = f["cid"].as_str() {
                        println!("  stored as {cid}");
                    }
                }
            });
            Ok(())
        }
        JobCmd::List { from, limit } => {
            let mut path = format!("/jobs?limit={limit}");
            if let Some(f) = from {
                path.push_str(&format!("&buyer={}", ctx.resolve_address(&f)?));
            }
            let jobs: Vec<JobDto> = client.get(&path)?;
            ctx.print(&jobs, |jobs| {
                println!("{:>6}  {:<6} {:<10} {:>14}  {:<24}", "JOB", "KIND", "STATE", "PAID (TSR)", "NAME");
                for j in jobs {
                    println!("{:>6}  {:<6} {:<10} {:>14}  {:<24}", j.id, j.kind, j.state, j.paid.to_string(), j.name);
                }
            });
            Ok(())
        }
        JobCmd::Cancel { id, from } => {
            let key = ctx.keyring.get(&from)?;
            let chain_id = client.status()?.chain_id;
            let hash = client.sign_and_submit(&key, &chain_id, Amount::from_micro(1_000), Msg::Jobs(JobMsg::Cancel { job: id }))?;
            let r = client.wait_for_tx(&hash, Duration::from_secs(30))?;
            if r.code != 0 {
                bail!("cancel refused: {}", r.log);
            }
            let j: JobDto = client.get(&format!("/jobs/{id}"))?;
            ctx.print(&j, |j| println!("job {} {}; paid {} TSR", j.id, j.state, j.paid));
            Ok(())
        }
    }
}

fn print_job(j: &JobDto, phase: Option<&str>) {
    println!("job        {} ({} {:?})", j.id, j.kind, j.name);
    println!("buyer      {}", j.buyer);
    match (j.state.as_str(), phase) {
        ("leased", Some(p)) => println!("state      leased: {p}"),
        (s, _) => println!("state      {s}"),
    }
    if let Some(r) = &j.reason {
        println!("reason     {r}");
    }
    if let Some(p) = j.provider {
        println!("provider   {p} (lease {})", j.lease.map(|l| l.to_string()).unwrap_or_default());
    }
    println!("max price  {} TSR/block for {} blocks", j.max_price_per_block, j.duration_blocks);
    println!("paid       {} TSR", j.paid);
    if let Some(r) = j.result {
        println!("result     {r} ({} bytes)", j.result_size.unwrap_or(0));
    }
    if let Some(o) = j.decode_spec().ok().and_then(|s| s.output) {
        match o {
            JobOutput::S3 { .. } => println!("output     {o} (written by the S3 endpoint that holds the bucket)"),
            JobOutput::Storage => println!("output     {o}; stored by `job submit --wait` or `job result --store`"),
        }
    }
    if j.orders.len() > 1 {
        println!("orders     {:?} (re-placed after losing {} provider(s))", j.orders, j.lost_to.len());
    }
}

/// An S3 client for `from`'s first access key, or for the AWS_* variables.
fn s3_client(ctx: &Ctx, from: &str, endpoint: &str) -> anyhow::Result<S3Client> {
    if let Some(k) = ctx.s3_keys().for_key(from) {
        return Ok(S3Client::new(endpoint, &k.access_key, &k.secret_key));
    }
    match (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
        (Ok(a), Ok(s)) => Ok(S3Client::new(endpoint, &a, &s)),
        _ => bail!(
            "the spec names S3 objects, but {from} has no S3 access key: create one with `tessera storage s3-key create --from {from}` \
             (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ),
    }
}

/// How long `job submit` waits for a just-uploaded S3 input to be placed.
const S3_PLACEMENT_WAIT: Duration = Duration::from_secs(300);

/// Turns the spec's `s3://` inputs into the content ids they are stored under
/// and checks that the output bucket exists, before anything is paid.
fn resolve_s3(ctx: &Ctx, from: &str, endpoint: &str, draft: &mut jobspec::Draft) -> anyhow::Result<Option<S3Client>> {
    let inputs = draft.s3_inputs();
    if inputs.is_empty() && !matches!(draft.spec.output, Some(JobOutput::S3 { .. })) {
        return Ok(None);
    }
    let s3 = s3_client(ctx, from, endpoint)?;
    for (slot, url) in inputs {
        let started = Instant::now();
        let mut said = false;
        let head = loop {
            let head = s3.head_object(&url).with_context(|| format!("{slot} {url}"))?.with_context(|| {
                format!("{slot}: there is no object {url} at {endpoint}; upload it first (aws --endpoint-url {endpoint} s3 cp FILE {url})")
            })?;
            // A provider can fetch the content only once the endpoint has placed it.
            if !head.pending {
                break head;
            }
            if started.elapsed() > S3_PLACEMENT_WAIT {
                bail!(
                    "{slot}: {url} is still waiting for the storage network after {} s; see the S3 endpoint's log (can its account pay?)",
                    S3_PLACEMENT_WAIT.as_secs()
                );
            }
            if !said {
                eprintln!("waiting for {url} to reach the storage network...");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        draft.resolve_s3(&slot, head.cid, head.size);
    }
    if let Some(JobOutput::S3 { bucket, .. }) = &draft.spec.output
        && !s3.bucket_exists(bucket).with_context(|| format!("output bucket {bucket}"))?
    {
        bail!("the output bucket {bucket} does not exist at {endpoint}; create it first (aws --endpoint-url {endpoint} s3 mb s3://{bucket})");
    }
    Ok(Some(s3))
}

/// Fetches a succeeded job's result files into `out` (each checked against
/// the hash the provider committed to) with its `manifest.json`; returns
/// each file and where it went.
fn fetch_results(client: &Client, j: &JobDto, out: &std::path::Path) -> anyhow::Result<Vec<(tessera_client::jobs::ResultFile, PathBuf)>> {
    let Some(result) = j.result else {
        bail!("job {} is {}{}; only a succeeded job has a result", j.id, j.state, j.reason.clone().map(|r| format!(" ({r})")).unwrap_or_default())
    };
    let endpoint = tessera_client::jobs::provider_endpoint(client, j)?;
    let manifest = tessera_client::jobs::fetch_manifest(&endpoint, &result)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for f in &manifest.files {
        // Names come from the provider: keep them inside `out`.
        if f.name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            bail!("the result names a file {:?} outside the output directory; refusing it", f.name);
        }
        let dest = out.join(&f.name);
        tessera_client::jobs::fetch_file(&endpoint, f, &dest)?;
        written.push((f.clone(), dest));
    }
    std::fs::write(out.join("manifest.json"), manifest.encode())?;
    Ok(written)
}

/// Stores fetched result files on the storage network (4+2, every file's
/// deals in as few blocks as possible), paid by `key`; returns (file name,
/// content id) for each non-empty file.
fn store_results(client: &Client, key: &tessera_crypto::KeyPair, files: &[(tessera_client::jobs::ResultFile, PathBuf)]) -> anyhow::Result<Vec<(String, String)>> {
    let files: Vec<&(tessera_client::jobs::ResultFile, PathBuf)> = files.iter().filter(|(f, _)| f.size > 0).collect();
    let paths: Vec<&std::path::Path> = files.iter().map(|(_, p)| p.as_path()).collect();
    let opts = job_put_options(100_000);
    let results = tessera_client::storage::put_many(client, key, &paths, &opts, &mut |_, _, _| {});
    files
        .iter()
        .zip(results)
        .map(|((f, _), r)| Ok((f.name.clone(), r.with_context(|| format!("storing result file {}", f.name))?.cid.to_string())))
        .collect()
}

/// How job inputs and results are stored: 4+2 over the default segments for `duration_blocks`.
fn job_put_options(duration_blocks: u64) -> PutOptions {
    PutOptions {
        scheme: tessera_storage::ErasureScheme::DEVNET,
        segment_bytes: tessera_client::storage::DEFAULT_SEGMENT_BYTES,
        duration_blocks,
        max_price_per_gib_block: Amount::parse_tsr("0.01").expect("constant"),
    }
}

/// Waits until the S3 endpoint has written every result file of `job` under
/// its output prefix; returns `(key, content id)` for each.
fn wait_for_export(client: &Client, s3: &S3Client, job: &JobDto, timeout: Duration) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let spec = job.decode_spec().map_err(anyhow::Error::msg)?;
    let Some(JobOutput::S3 { bucket, prefix }) = spec.output else { return Ok(Vec::new()) };
    let result = job.result.context("the job has no result")?;
    let endpoint = tessera_client::jobs::provider_endpoint(client, job)?;
    let manifest = tessera_client::jobs::fetch_manifest(&endpoint, &result)?;
    let started = Instant::now();
    let mut written = Vec::new();
    for f in &manifest.files {
        let url = S3Url { bucket: bucket.clone(), key: format!("{prefix}{}", f.name) };
        loop {
            match s3.head_object(&url)? {
                Some(h) if h.size == f.size => {
                    written.push((url.to_string(), h.cid));
                    break;
                }
                _ if started.elapsed() > timeout => bail!(
                    "the S3 endpoint {} has not written {url} after {} s; is it running, and does it hold bucket {bucket}?",
                    s3.endpoint(),
                    timeout.as_secs()
                ),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    Ok(written)
}

fn submit(ctx: &Ctx, client: &Client, spec_path: &std::path::Path, from: &str, s3_endpoint: &str, wait: bool, timeout: Duration) -> anyhow::Result<()> {
    let key = ctx.keyring.get(from)?;
    let mut draft = jobspec::parse(spec_path).map_err(anyhow::Error::msg)?;
    let s3 = resolve_s3(ctx, from, s3_endpoint, &mut draft)?;
    let order = draft.spec.order.clone();
    let status = client.status().context("cannot reach the node")?;

    // Money and market checks first: nothing is uploaded or paid for a job that cannot run.
    let escrow = order.max_price_per_block.checked_mul(order.duration_blocks as u128).context("max price x duration overflows")?;
    let fee = Amount::from_micro(1_000);
    let balance = client.account(&key.address())?.balance;
    let needed = escrow.checked_add(fee).context("overflow")?;
    if balance < needed {
        bail!(
            "{from} ({}) holds {balance} TSR; this job escrows {escrow} TSR (max price {} x {} blocks) plus a {fee} TSR fee. \
             Fund it (tessera tx transfer) or lower max_price_per_block / duration_blocks",
            key.address(),
            order.max_price_per_block,
            order.duration_blocks
        );
    }
    let providers: Vec<ProviderDto> = client.get("/providers")?;
    let fitting: Vec<&ProviderDto> = providers.iter().filter(|p| satisfies(&p.info.hardware, &order.resources)).collect();
    if fitting.is_empty() {
        bail!("no registered provider has {:?}; ask for less", order.resources);
    }
    if order.pricing == Pricing::Fixed {
        let cheapest = fitting.iter().filter_map(|p| price_for(&p.info.prices, &order.resources)).min();
        if let Some(c) = cheapest
            && c > order.max_price_per_block
        {
            bail!(
                "max_price_per_block {} TSR is below every provider's price for these resources (cheapest {c} TSR); raise it",
                order.max_price_per_block
            );
        }
    }

    // Inputs too large for the transaction go to the storage network.
    let mut stored = Vec::new();
    for (slot, path, size) in draft.to_store().map_err(anyhow::Error::msg)? {
        eprintln!("storing {slot} ({} KiB) on the storage network: {}", size.div_ceil(1024), path.display());
        let opts = job_put_options(order.duration_blocks.max(1_000) * 4);
        let r = tessera_client::storage::put(client, &key, &path, &opts, &mut |_, _, _| {})
            .with_context(|| format!("storing {slot} {}", path.display()))?;
        stored.push((slot, r.cid.to_string(), r.bytes));
    }
    let stored_slots: Vec<Slot> = stored.iter().map(|(s, _, _)| s.clone()).collect();
    let spec = draft.place(&stored).map_err(anyhow::Error::msg)?;

    let started = Instant::now();
    let hash = client.sign_and_submit(&key, &status.chain_id, fee, Msg::Jobs(JobMsg::Submit { spec }))?;
    let r = client.wait_for_tx(&hash, Duration::from_secs(30))?;
    if r.code != 0 {
        bail!("the job was refused: {}", r.log);
    }
    let id = r.event_id("jobs.submitted", "job").context("the submit transaction reported no job id")?;
    if !stored_slots.is_empty() {
        eprintln!("stored inputs: {}", stored_slots.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "));
    }
    if !wait {
        let j: JobDto = client.get(&format!("/jobs/{id}"))?;
        ctx.print(&serde_json::json!({ "job": id, "state": j.state, "tx": hash }), |_| {
            println!("job {id} submitted (tx {hash}); follow it with `tessera job status {id}`")
        });
        return Ok(());
    }
    let j = follow(ctx, client, id, started, timeout)?;
    let lease: Option<LeaseDto> = j.lease.and_then(|l| client.get(&format!("/leases/{l}")).ok());
    let stores = j.decode_spec().ok().and_then(|s| s.output) == Some(JobOutput::Storage);
    let exported = match (&s3, j.state.as_str()) {
        (_, "succeeded") if stores => {
            eprintln!("storing the result files on the storage network...");
            let scratch = tempfile::tempdir()?;
            let files = fetch_results(client, &j, scratch.path())?;
            store_results(client, &key, &files)?.into_iter().map(|(name, cid)| (name, Some(cid))).collect()
        }
        (Some(s3), "succeeded") => wait_for_export(client, s3, &j, Duration::from_secs(120))?,
        _ => Vec::new(),
    };
    let view = serde_json::json!({
        "job": j.id, "state": j.state, "result": j.result, "result_size": j.result_size, "reason": j.reason,
        "provider": j.provider, "paid": j.paid, "orders": j.orders,
        "lease_state": lease.as_ref().map(|l| l.state.clone()),
        "seconds": started.elapsed().as_secs_f64(),
        "outputs": exported
            .iter()
            .map(|(at, cid)| if stores { serde_json::json!({ "name": at, "cid": cid }) } else { serde_json::json!({ "url": at, "cid": cid }) })
            .collect::<Vec<_>>(),
    });
    ctx.print(&view, |_| {
        match j.state.as_str() {
            "succeeded" => println!(
                "job {id} succeeded in {:.1} s; paid {} TSR; fetch it with `tessera job result {id} -o DIR`",
                started.elapsed().as_secs_f64(),
                j.paid
            ),
            s => println!("job {id} {s}: {}; paid {} TSR", j.reason.clone().unwrap_or_default(), j.paid),
        }
        for (url, cid) in &exported {
            match stores {
                true => println!("stored {url} as {}", cid.clone().unwrap_or_default()),
                false => println!("wrote {url}{}", cid.as_ref().map(|c| format!("  ({c})")).unwrap_or_default()),
            }
        }
    });
    if j.state != "succeeded" {
        std::process::exit(1);
    }
    Ok(())
}

/// Shows the job's progress until it settles: ordered, bidding, leased,
/// running, done or failed, settled.
fn follow(ctx: &Ctx, client: &Client, id: u64, started: Instant, timeout: Duration) -> anyhow::Result<JobDto> {
    let tty = std::io::stderr().is_terminal() && ctx.output == crate::cli::Output::Text;
    let spinner = ['|', '/', '-', '\\'];
    let mut last = String::new();
    let mut tick = 0usize;
    // The provider's endpoint, looked up once per provider (a re-placed job changes it).
    let mut endpoint: Option<(tessera_types::Address, String)> = None;
    loop {
        let j: JobDto = client.get(&format!("/jobs/{id}"))?;
        let line = match j.state.as_str() {
            "queued" => {
                let o: Option<OrderDto> = client.get(&format!("/orders/{}", j.order)).ok();
                match o {
                    Some(o) if o.state.starts_with("open") => format!("bidding: order {}, {} bid(s), {}", o.id, o.bids.len(), o.state),
                    _ => format!("ordered: order {}", j.order),
                }
            }
            "leased" => {
                if endpoint.as_ref().map(|(p, _)| Some(*p)) != Some(j.provider) {
                    endpoint = tessera_client::jobs::provider_endpoint(client, &j).ok().zip(j.provider).map(|(e, p)| (p, e));
                }
                let phase = endpoint
                    .as_ref()
                    .and_then(|(_, e)| tessera_client::jobs::fetch_phase(e, id).ok())
                    .unwrap_or_else(|| "starting".into());
                let provider = j.provider.map(|p| p.to_string()).unwrap_or_default();
                format!("leased to {provider}: {phase}")
            }
            _ => {
                let lease: Option<LeaseDto> = j.lease.and_then(|l| client.get(&format!("/leases/{l}")).ok());
                let settled = lease.as_ref().is_none_or(|l| l.state != "active");
                if settled {
                    let phase = if j.state == "succeeded" { "done".to_string() } else { j.state.clone() };
                    if tty {
                        eprintln!("\r{:<100}", format!("{phase}; settled: paid {} TSR", j.paid));
                    } else {
                        eprintln!("{phase}; settled: paid {} TSR", j.paid);
                    }
                    return Ok(j);
                }
                format!("{}: settling", j.state)
            }
        };
        if tty {
            tick += 1;
            let mut shown = format!("{} job {id} {line} ({:.1} s)", spinner[tick % 4], started.elapsed().as_secs_f64());
            shown.truncate(110);
            eprint!("\r{shown:<110}");
        } else if line != last {
            eprintln!("job {id}: {line}");
        }
        last = line;
        if started.elapsed() > timeout {
            if tty {
                eprintln!();
            }
            bail!("job {id} is still {} after {} s; it goes on: follow it with `tessera job status {id}`", j.state, timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}
