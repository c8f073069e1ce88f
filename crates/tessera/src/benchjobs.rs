//! `tessera bench dispatch` and `tessera bench embed`: jobs through a real
//! devnet (its own processes, on loopback), against a peer measured in the
//! same run: Ray's task round trip, and candle called directly in-process.

use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_client::api::{JobDto, ProviderDto};
use tessera_client::events::{BlockStream, StreamItem};
use tessera_client::{Client, Keyring};
use tessera_ledger::jobs::{EmbedJob, Input, JobKind, JobMsg, JobSpec, VectorFormat, WasmJob};
use tessera_ledger::market::{OrderSpec, Pricing, Resources};
use tessera_ledger::Msg;
use tessera_types::{Amount, Hash32};

use crate::cli::Ctx;

/// `(module (func (export "_start")))`: a WASI command that does nothing.
const NOOP_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x07, 0x0a,
    0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
];

/// A devnet started for a benchmark, stopped when dropped.
struct BenchNet {
    child: Child,
    home: PathBuf,
    rpc: String,
    _dir: tempfile::TempDir,
}

impl BenchNet {
    fn start(block_ms: u64, extra: &[&str]) -> anyhow::Result<BenchNet> {
        let dir = tempfile::tempdir()?;
        let home = dir.path().to_path_buf();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let s3 = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let rpc = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(home.join("devnet.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["--home", home.to_str().unwrap_or("."), "--rpc", &rpc, "devnet", "--block-time-ms", &block_ms.to_string()])
            .args(["--s3", &format!("127.0.0.1:{s3}")])
            .args(extra)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the devnet")?;
        let net = BenchNet { child, home, rpc, _dir: dir };
        let client = net.client();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = client.get::<Vec<ProviderDto>>("/providers").is_ok_and(|p| p.iter().filter(|p| p.info.hardware.cpu_cores > 0).count() >= 3);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("the devnet's providers did not register; log:\n{}", std::fs::read_to_string(net.home.join("devnet.log")).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(net)
    }

    fn client(&self) -> Client {
        Client::new(&format!("http://{}", self.rpc))
    }

    fn key(&self, name: &str) -> anyhow::Result<tessera_crypto::KeyPair> {
        Ok(Keyring::new(self.home.join("keys")).get(name)?)
    }

    /// Peak resident memory of the devnet and every process it started, MiB.
    fn tree_peak_rss_mib(&self) -> f64 {
        let root = self.child.id();
        let mut pids = vec![root];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(root) {
                    pids.push(pid);
                }
            }
        }
        pids.iter().map(|p| status_kib(*p, "VmHWM:") as f64 / 1024.0).sum()
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

impl Drop for BenchNet {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wall-clock times at which the event stream showed each job leased and
/// finished, and the job each submit transaction created.
#[derive(Default)]
struct Seen {
    submitted: HashMap<Hash32, u64>,
    leased: HashMap<u64, Instant>,
    finished: HashMap<u64, Instant>,
}

fn watch_events(rpc: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let Ok(stream) = BlockStream::connect(&format!("http://{rpc}")) else { return };
    for item in stream {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let StreamItem::Block(block) = item else { continue };
        let now = Instant::now();
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        for t in &block.txs {
            if let Some(job) = t.event_id("jobs.submitted", "job") {
                s.submitted.insert(t.hash, job);
            }
        }
        for e in block.txs.iter().flat_map(|t| t.events.iter()).chain(block.end_events.iter()) {
            let Some(job) = e.get("job").and_then(|j| j.parse::<u64>().ok()) else { continue };
            match e.kind.as_str() {
                "jobs.leased" => {
                    s.leased.entry(job).or_insert(now);
                }
                "jobs.succeeded" | "jobs.failed" => {
                    s.finished.entry(job).or_insert(now);
                }
                _ => {}
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn noop_spec(pricing: Pricing) -> JobSpec {
    JobSpec {
        name: "noop".into(),
        kind: JobKind::Wasm(WasmJob {
            module: Input::Inline(NOOP_WASM.to_vec()),
            args: vec![],
            env: vec![],
            stdin: None,
            files: vec![],
            fuel: 1_000_000,
            memory_mb: 16,
            wall_secs: 10,
            max_output_mb: 1,
        }),
        order: bench_order(64, 200, pricing),
        output: None,
    }
}

/// One core at up to 0.01 TSR a block, a one-block bid window.
fn bench_order(ram_mb: u64, duration_blocks: u64, pricing: Pricing) -> OrderSpec {
    OrderSpec {
        resources: Resources { cpu_cores: 1, ram_mb, ..Resources::default() },
        max_price_per_block: Amount::parse_tsr("0.01").expect("constant"),
        duration_blocks,
        bid_window_blocks: 1,
        pricing,
    }
}

/// Ray's synchronous and asynchronous task rates on this machine, if Ray is installed.
fn ray_rates(tasks: usize) -> Option<(f64, f64)> {
    let script = format!(
        r#"
import json, time, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
@ray.remote
def f():
    return None
ray.get([f.remote() for _ in range(100)])
n = {tasks}
t = time.perf_counter()
for _ in range(n):
    ray.get(f.remote())
sync = n / (time.perf_counter() - t)
t = time.perf_counter()
ray.get([f.remote() for _ in range(n * 3)])
asyn = n * 3 / (time.perf_counter() - t)
print(json.dumps({{"sync": sync, "async": asyn}}))
ray.shutdown()
"#
    );
    let out = Command::new("python3").args(["-c", &script]).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    Some((v["sync"].as_f64()?, v["async"].as_f64()?))
}

pub struct DispatchArgs {
    pub jobs: usize,
    pub latency_jobs: usize,
    pub buyers: u32,
    pub block_ms: u64,
    pub max_jobs: usize,
    pub pricing: Pricing,
}

/// Submits one job without waiting for its block; returns the tx hash.
fn submit_job(client: &Client, key: &tessera_crypto::KeyPair, chain_id: &str, spec: &JobSpec) -> Option<Hash32> {
    let msg = Msg::Jobs(JobMsg::Submit { spec: spec.clone() });
    client.sign_and_submit(key, chain_id, Amount::from_micro(1_000), msg).ok()
}

/// The job id a committed submit transaction created.
fn job_of(client: &Client, hash: &Hash32) -> Option<u64> {
    let r = client.wait_for_tx(hash, Duration::from_secs(120)).ok().filter(|r| r.code == 0)?;
    r.event_id("jobs.submitted", "job")
}

/// Submits signed back to back at consecutive nonces, this many per nonce lookup.
const SUBMIT_CHUNK: usize = 32;

/// The job each sent transaction created, with its send time: read from the
/// event stream, or asked of the node for a transaction the stream has not
/// shown within a minute.
fn burst_jobs(client: &Client, seen: &Mutex<Seen>, sent: &[(Hash32, Instant)]) -> Vec<(u64, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let known = {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            sent.iter().filter(|(h, _)| s.submitted.contains_key(h)).count()
        };
        if known == sent.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let known: Vec<Option<u64>> = sent.iter().map(|(h, _)| s.submitted.get(h).copied()).collect();
    drop(s);
    sent.iter()
        .zip(known)
        .filter_map(|((h, t), id)| Some((id.or_else(|| job_of(client, h))?, *t)))
        .collect()
}

fn wait_finished(seen: &Mutex<Seen>, ids: &[u64], timeout: Duration, label: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let done = {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter().filter(|id| s.finished.contains_key(id)).count()
        };
        eprint!("\rbench: {label}: {done}/{} jobs finished", ids.len());
        if done == ids.len() || Instant::now() > deadline {
            eprintln!();
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn dispatch(ctx: &Ctx, a: DispatchArgs) -> anyhow::Result<()> {
    eprintln!("bench: starting a devnet (3 providers, {} ms blocks, {} jobs at once each)", a.block_ms, a.max_jobs);
    let net = BenchNet::start(
        a.block_ms,
        &["--providers", "3", "--storage-providers", "3", "--test-accounts", &a.buyers.to_string(), "--provider-max-jobs", &a.max_jobs.to_string()],
    )?;
    let client = net.client();
    let chain_id = client.status()?.chain_id;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (rpc, seen, stop) = (net.rpc.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || watch_events(rpc, seen, stop));
    }
    std::thread::sleep(Duration::from_millis(300));
    let spec = noop_spec(a.pricing);

    // Latency: one job at a time, each followed to its result.
    let key = net.key("dev")?;
    let mut latency: Vec<(u64, Instant)> = Vec::new();
    for i in 0..a.latency_jobs {
        let t = Instant::now();
        let Some(id) = submit_job(&client, &key, &chain_id, &spec).and_then(|h| job_of(&client, &h)) else { continue };
        latency.push((id, t));
        wait_finished(&seen, &[id], Duration::from_secs(30), &format!("latency {}/{}", i + 1, a.latency_jobs));
    }

    // Throughput: every buyer sends its share without waiting for blocks.
    let sent: Arc<Mutex<Vec<(Hash32, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut threads = Vec::new();
    for b in 1..=a.buyers {
        let key = net.key(&format!("test{b}"))?;
        let (client, chain_id, spec, sent, next, errors, total) =
            (client.clone(), chain_id.clone(), spec.clone(), sent.clone(), next.clone(), errors.clone(), a.jobs);
        // Like any client with many jobs to send: nonces counted locally, no
        // waiting on blocks; job ids come from the event stream.
        threads.push(std::thread::spawn(move || loop {
            let n = next.fetch_add(SUBMIT_CHUNK, Ordering::Relaxed);
            if n >= total {
                return;
            }
            let count = SUBMIT_CHUNK.min(total - n);
            let t = Instant::now();
            let msgs = (0..count).map(|_| Msg::Jobs(JobMsg::Submit { spec: spec.clone() })).collect();
            for r in client.sign_and_submit_many(&key, &chain_id, Amount::from_micro(1_000), msgs) {
                match r {
                    Ok(h) => sent.lock().unwrap_or_else(|p| p.into_inner()).push((h, t)),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let burst = burst_jobs(&client, &seen, &sent);
    let ids: Vec<u64> = burst.iter().map(|(id, _)| *id).collect();
    wait_finished(&seen, &ids, Duration::from_secs(300), "throughput");
    stop.store(true, Ordering::Relaxed);
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let last = ids.iter().filter_map(|id| s.finished.get(id)).max().copied().unwrap_or_else(Instant::now);
    let elapsed = last.duration_since(started).as_secs_f64();
    let completed = ids.iter().filter(|id| s.finished.contains_key(id)).count();
    let lat = |pairs: &[(u64, Instant)], map: &HashMap<u64, Instant>| {
        let mut v: Vec<f64> = pairs.iter().filter_map(|(id, t)| Some(map.get(id)?.duration_since(*t).as_secs_f64())).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (to_running, to_result) = (lat(&latency, &s.leased), lat(&latency, &s.finished));
    let (burst_running, burst_result) = (lat(&burst, &s.leased), lat(&burst, &s.finished));
    drop(s);
    let succeeded = ids.iter().filter(|id| client.get::<JobDto>(&format!("/jobs/{id}")).is_ok_and(|j| j.state == "succeeded")).count();
    // Only jobs that ran and reported count toward throughput.
    let rate = succeeded as f64 / elapsed;
    let block = a.block_ms as f64 / 1000.0;
    let rss = net.tree_peak_rss_mib();
    drop(net);
    eprintln!("bench: measuring Ray's task round trip (if installed)...");
    let ray = ray_rates(1000);
    let p = percentile;
    let view = serde_json::json!({
        "pricing": format!("{:?}", a.pricing).to_lowercase(), "block_ms": a.block_ms,
        "latency_jobs": latency.len(),
        "submit_to_running_p50_s": p(&to_running, 0.5), "submit_to_running_p99_s": p(&to_running, 0.99),
        "submit_to_running_p50_blocks": p(&to_running, 0.5) / block,
        "submit_to_result_p50_s": p(&to_result, 0.5), "submit_to_result_p99_s": p(&to_result, 0.99),
        "burst_jobs": a.jobs, "burst_sent": sent.len(), "burst_completed": completed, "burst_succeeded": succeeded,
        "submit_errors": errors.load(Ordering::Relaxed), "jobs_per_s": rate,
        "burst_submit_to_running_p50_s": p(&burst_running, 0.5), "burst_submit_to_result_p99_s": p(&burst_result, 0.99),
        "ray_sync_tasks_per_s": ray.map(|r| r.0), "ray_async_tasks_per_s": ray.map(|r| r.1),
        "ratio_vs_ray_async": ray.map(|r| rate / r.1),
        "devnet_peak_rss_mib": rss, "bench_peak_rss_mib": tessera_node::bench::peak_rss_mib(),
    });
    ctx.print(&view, |_| {
        println!("dispatch bench: no-op wasm jobs ({:?} pricing, {} ms blocks) through order, award, run, report, settle", a.pricing, a.block_ms);
        println!(
            "  one at a time ({} jobs): submit -> running p50 {:.3} s = {:.2} block intervals (goal <= 2), p99 {:.3} s",
            latency.len(),
            p(&to_running, 0.5),
            p(&to_running, 0.5) / block,
            p(&to_running, 0.99)
        );
        println!("                           submit -> result  p50 {:.3} s, p99 {:.3} s", p(&to_result, 0.5), p(&to_result, 0.99));
        println!(
            "  burst of {} from {} buyers: {completed} finished, {succeeded} succeeded ({} submit errors) in {elapsed:.2} s = {rate:.1} succeeded jobs/s",
            a.jobs,
            a.buyers,
            errors.load(Ordering::Relaxed)
        );
        println!(
            "                           submit -> running p50 {:.3} s, submit -> result p99 {:.3} s",
            p(&burst_running, 0.5),
            p(&burst_result, 0.99)
        );
        match ray {
            Some((sync, asyn)) => println!(
                "  Ray (same machine, this run): {sync:.0} sync tasks/s, {asyn:.0} async tasks/s; jobs/s vs Ray async: {:.3} (goal >= 1)",
                rate / asyn
            ),
            None => println!("  Ray: not installed (pip install ray) - no peer figure this run"),
        }
        println!("  peak RSS: devnet with its providers {rss:.0} MiB, this process {:.0} MiB", tessera_node::bench::peak_rss_mib());
    });
    Ok(())
}

pub struct EmbedArgs {
    pub sentences: usize,
    pub model_dir: PathBuf,
    pub block_ms: u64,
}

fn bench_sentences(n: usize) -> Vec<String> {
    let subjects = ["The provider", "A validator", "The buyer", "Each shard", "The model", "A GPU", "The ledger", "Our network"];
    let verbs = ["stores", "verifies", "computes", "streams", "settles", "encodes", "replicates", "schedules"];
    let objects = ["the dataset", "a checkpoint", "every proof", "the embeddings", "a training job", "the escrow", "fresh blocks", "its results"];
    let tails = ["before noon.", "on a busy day.", "without a single fault.", "for the whole cluster.", "in under a second."];
    (0..n)
        .map(|i| {
            format!(
                "{} {} {} {} (#{i})",
                subjects[i % 8],
                verbs[(i / 8) % 8],
                objects[(i / 64) % 8],
                tails[(i / 3) % 5]
            )
        })
        .collect()
}

pub fn embed(ctx: &Ctx, a: EmbedArgs) -> anyhow::Result<()> {
    let dir = &a.model_dir;
    let file = |n: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(n);
        anyhow::ensure!(p.is_file(), "{} is missing: run scripts/fetch-model.sh (or pass --model-dir)", p.display());
        Ok(p)
    };
    let (model, tokenizer, config) = (file("model.safetensors")?, file("tokenizer.json")?, file("config.json")?);
    let sentences = bench_sentences(a.sentences);
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();

    eprintln!("bench: {} sentences with candle directly, in this process", a.sentences);
    let t = Instant::now();
    let e = tessera_runtime::embed::Embedder::load(&model, &tokenizer, &config, tessera_runtime::embed::device())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let direct_vectors = e.embed(&refs, true).map_err(|e| anyhow::anyhow!("{e}"))?;
    let direct_s = t.elapsed().as_secs_f64();
    drop(e);

    eprintln!("bench: the same sentences as a job through a devnet");
    let net = BenchNet::start(a.block_ms, &["--providers", "3", "--storage-providers", "3", "--model-source", dir.to_str().unwrap_or(".")])?;
    let client = net.client();
    let key = net.key("dev")?;
    let chain_id = client.status()?.chain_id;
    let hash = |p: &Path| -> anyhow::Result<Hash32> { Ok(Hash32::blake3_reader(std::fs::File::open(p)?)?.0) };
    let text = sentences.join("\n");
    let input_path = net.home.join("sentences.txt");
    std::fs::write(&input_path, &text)?;
    // Model loading and input transfer count, as they would for a user.
    let t = Instant::now();
    let input = if text.len() <= tessera_ledger::jobs::MAX_INLINE_BYTES - 1024 {
        Input::Inline(text.into_bytes())
    } else {
        let opts = tessera_client::storage::PutOptions {
            scheme: "2+1".parse().map_err(anyhow::Error::msg)?,
            segment_bytes: tessera_client::storage::DEFAULT_SEGMENT_BYTES,
            duration_blocks: 10_000,
            max_price_per_gib_block: Amount::parse_tsr("0.01").expect("constant"),
        };
        let r = tessera_client::storage::put(&client, &key, &input_path, &opts, &mut |_, _, _| {})?;
        Input::Stored { cid: r.cid.to_string(), size: r.bytes }
    };
    let spec = JobSpec {
        name: "bench-embed".into(),
        kind: JobKind::Embed(EmbedJob {
            model: hash(&model)?,
            tokenizer: hash(&tokenizer)?,
            config: hash(&config)?,
            input,
            format: VectorFormat::Npy,
            normalize: true,
            wall_secs: 3600,
        }),
        order: bench_order(512, 20_000, Pricing::Fixed),
        output: None,
    };
    let h = client.sign_and_submit(&key, &chain_id, Amount::from_micro(1_000), Msg::Jobs(JobMsg::Submit { spec }))?;
    let r = client.wait_for_tx(&h, Duration::from_secs(60))?;
    anyhow::ensure!(r.code == 0, "embed job refused: {}", r.log);
    let id: u64 = r.event_id("jobs.submitted", "job").context("no job id")?;
    let j = loop {
        let j: JobDto = client.get(&format!("/jobs/{id}"))?;
        if j.is_final() {
            break j;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(3600), "the embed job did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    anyhow::ensure!(j.state == "succeeded", "the embed job {}: {}", j.state, j.reason.unwrap_or_default());
    let endpoint = tessera_client::jobs::provider_endpoint(&client, &j)?;
    let manifest = tessera_client::jobs::fetch_manifest(&endpoint, &j.result.context("no result")?)?;
    let out = net.home.join("vectors.npy");
    tessera_client::jobs::fetch_file(&endpoint, &manifest.files[0], &out)?;
    let network_s = t.elapsed().as_secs_f64();
    let got = tessera_runtime::embed::from_npy(&std::fs::read(&out)?).map_err(anyhow::Error::msg)?;
    let worst = got.iter().flatten().zip(direct_vectors.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let rss = net.tree_peak_rss_mib();
    drop(net);

    let n = a.sentences as f64;
    let view = serde_json::json!({
        "sentences": a.sentences, "direct_s": direct_s, "network_s": network_s,
        "direct_sentences_per_s": n / direct_s, "network_sentences_per_s": n / network_s,
        "ratio": direct_s / network_s, "max_abs_difference": worst, "device": format!("{:?}", tessera_runtime::embed::device()),
        "devnet_peak_rss_mib": rss, "bench_peak_rss_mib": tessera_node::bench::peak_rss_mib(),
    });
    ctx.print(&view, |_| {
        println!("embed bench: {} sentences, all-MiniLM-L6-v2 (candle, {:?})", a.sentences, tessera_runtime::embed::device());
        println!("  direct in this process: {:>8.1} sentences/s ({direct_s:.2} s, model load included)", n / direct_s);
        println!("  through the network:    {:>8.1} sentences/s ({network_s:.2} s: submit, lease, fetch model and input, run, report, fetch result)", n / network_s);
        println!("  ratio: {:.2} (goal >= 0.90); vectors agree within {worst:.1e}", direct_s / network_s);
        println!("  peak RSS: devnet with its providers {rss:.0} MiB, this process {:.0} MiB", tessera_node::bench::peak_rss_mib());
    });
    Ok(())
}
