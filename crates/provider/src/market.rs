//! The provider's market side: follows the node's event stream (`/events`),
//! feeds the decision core, places bids, runs leased jobs on worker threads
//! and reports their results. On start and after every reconnect it resyncs
//! from the ledger, so a restarted provider picks up the leases it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;
use tessera_client::api::{BlockEventDto, JobDto};
use tessera_client::events::{BlockStream, StreamItem};
use tessera_client::Client;
use tessera_crypto::KeyPair;
use tessera_ledger::jobs::JobMsg;
use tessera_ledger::market::{BasePrices, MarketMsg, Pricing, Resources};
use tessera_ledger::{Event, Msg};
use tessera_types::{Address, Amount};

use crate::decide::{Action, Decider, Input, OpenOrder};
use crate::executor::{Executor, Verdict};

pub struct MarketConfig {
    pub key: KeyPair,
    pub rpc: String,
    pub chain_id: String,
}

/// Runs until `stop` is set.
pub fn run(cfg: MarketConfig, mut decider: Decider, executor: Arc<Executor>, stop: Arc<AtomicBool>) {
    let me = cfg.key.address();
    let client = Client::new(&cfg.rpc);
    let (tx, rx) = channel::<Input>();
    {
        let (tx, rpc, stop) = (tx.clone(), cfg.rpc.clone(), stop.clone());
        std::thread::Builder::new()
            .name("market-events".into())
            .spawn(move || follow_events(&rpc, me, &tx, &stop))
            .expect("spawn event thread");
    }
    // A fixed pool of workers runs leased jobs (a burst of leases waits in the
    // queue instead of starting a thread each); reports are confirmed off the
    // workers by one checker thread.
    let (work_tx, work_rx) = channel::<(u64, u64)>();
    let work_rx = Arc::new(std::sync::Mutex::new(work_rx));
    let (check_tx, check_rx) = channel::<PendingReport>();
    {
        let (client, key, chain_id) = (client.clone(), cfg.key.clone(), cfg.chain_id.clone());
        std::thread::Builder::new()
            .name("report-checker".into())
            .spawn(move || check_reports(&client, &key, &chain_id, check_rx))
            .expect("spawn report checker");
    }
    for w in 0..decider.max_jobs.max(1) {
        let (executor, tx, key, client, chain_id, work_rx, check_tx) =
            (executor.clone(), tx.clone(), cfg.key.clone(), client.clone(), cfg.chain_id.clone(), work_rx.clone(), check_tx.clone());
        std::thread::Builder::new()
            .name(format!("job-worker-{w}"))
            .spawn(move || loop {
                let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((job, lease)) = next else { return };
                if let Some(pending) = run_job(&executor, &client, &key, &chain_id, job, lease) {
                    let _ = check_tx.send(pending);
                }
                let _ = tx.send(Input::JobDone { job });
            })
            .expect("spawn job worker");
    }
    let dynamic = decider.strategy == crate::decide::Strategy::Dynamic;
    let mut last_base = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let input = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(i) => i,
            Err(RecvTimeoutError::Timeout) => {
                if dynamic && let Ok(s) = client.status() && s.height > last_base {
                    last_base = s.height;
                    if let Ok(b) = client.get::<BasePrices>("/market/base-prices") {
                        decider.step(Input::BasePrices(b));
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for action in decider.step(input) {
            match action {
                Action::Bid { order, price } => {
                    let msg = Msg::Market(MarketMsg::PlaceBid { order, price_per_block: price });
                    match crate::agent::submit(&client, &cfg.key, &cfg.chain_id, msg) {
                        Ok(_) => println!("provider {me}: bid {price} TSR/block on order {order}"),
                        Err(e) => eprintln!("provider {me}: bid on order {order} refused: {e}"),
                    }
                }
                Action::Run { job, lease } => {
                    let _ = work_tx.send((job, lease));
                }
                Action::Abort { job } => println!("provider {me}: job {job} left this provider; its result will not be reported"),
            }
        }
    }
}

/// A report sent and not yet seen committed.
struct PendingReport {
    job: u64,
    msg: Msg,
    hash: tessera_types::Hash32,
    attempt: u32,
    /// Times it was looked up and not found.
    misses: u32,
    due: std::time::Instant,
}

/// Lookups (3 s apart) before a report missing from the chain is sent again:
/// under load it may simply be waiting in the mempool.
const REPORT_MISSES: u32 = 5;

/// Runs one job and sends its report (or hands its lease back); returns the
/// report to confirm.
fn run_job(executor: &Executor, client: &Client, key: &KeyPair, chain_id: &str, job: u64, lease: u64) -> Option<PendingReport> {
    let me = key.address();
    let dto = match client.get::<JobDto>(&format!("/jobs/{job}")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("provider {me}: cannot read job {job}: {e}");
            return None;
        }
    };
    let spec = match dto.decode_spec() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("provider {me}: {e}");
            return None;
        }
    };
    println!("provider {me}: running job {job} ({} {:?}) on lease {lease}", spec.kind.name(), spec.name);
    let msg = match executor.run(job, lease, &spec) {
        Verdict::Report(outcome) => Msg::Jobs(JobMsg::Report { job, outcome }),
        Verdict::HandBack(reason) => {
            eprintln!("provider {me}: cannot run job {job}: {reason}; handing the lease back");
            Msg::Market(MarketMsg::CloseLease { lease })
        }
    };
    send_report(client, key, chain_id, job, msg, 1)
}

const REPORT_ATTEMPTS: u32 = 5;

fn send_report(client: &Client, key: &KeyPair, chain_id: &str, job: u64, msg: Msg, first: u32) -> Option<PendingReport> {
    for attempt in first..=REPORT_ATTEMPTS {
        match crate::agent::submit(client, key, chain_id, msg.clone()) {
            Ok(hash) => {
                let due = std::time::Instant::now() + Duration::from_secs(3);
                return Some(PendingReport { job, msg, hash, attempt, misses: 0, due });
            }
            Err(e) => {
                eprintln!("provider {}: report for job {job} not sent (attempt {attempt}): {e}", key.address());
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    None
}

/// The report settles the lease. It is not polled for: a few blocks after
/// sending, the checker looks it up once, and sends it again only if the node
/// lost it (a second report of a settled job is refused and changes nothing).
fn check_reports(client: &Client, key: &KeyPair, chain_id: &str, rx: std::sync::mpsc::Receiver<PendingReport>) {
    let me = key.address();
    let mut queue: std::collections::VecDeque<PendingReport> = std::collections::VecDeque::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(p) => queue.push_back(p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if queue.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(250)),
        }
        while queue.front().is_some_and(|p| p.due <= std::time::Instant::now()) {
            let mut p = queue.pop_front().expect("front exists");
            match client.tx(&p.hash) {
                Ok(r) if r.code == 0 => {}
                Ok(r) => eprintln!("provider {me}: report for job {} rejected: {}", p.job, r.log),
                Err(_) if p.misses + 1 < REPORT_MISSES => {
                    p.misses += 1;
                    p.due = std::time::Instant::now() + Duration::from_secs(3);
                    queue.push_back(p);
                }
                // Settled some other way (or already reported): nothing to resend.
                Err(_) if client.get::<JobDto>(&format!("/jobs/{}", p.job)).is_ok_and(|j| j.is_final() || j.provider != Some(me)) => {}
                Err(_) if p.attempt < REPORT_ATTEMPTS => {
                    eprintln!("provider {me}: report for job {} not committed yet; sending it again", p.job);
                    if let Some(again) = send_report(client, key, chain_id, p.job, p.msg, p.attempt + 1) {
                        queue.push_back(again);
                    }
                }
                Err(e) => eprintln!("provider {me}: giving up on the report for job {}: {e}", p.job),
            }
        }
    }
}

/// Reads the node's block stream, turning ledger events into decider inputs.
/// Reconnects (and resyncs) whenever the stream breaks.
fn follow_events(rpc: &str, me: Address, tx: &Sender<Input>, stop: &AtomicBool) {
    let client = Client::new(rpc);
    while !stop.load(Ordering::Relaxed) {
        let stream = match BlockStream::connect(rpc) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("provider {me}: event stream: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // Connected first, then resync: nothing falls between the two.
        if resync(&client, me, tx).is_err() {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        for item in stream {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let inputs = match item {
                // Missed blocks: read the ledger's state instead.
                StreamItem::Lagged => {
                    let _ = resync(&client, me, tx);
                    continue;
                }
                StreamItem::Block(block) => block_inputs(&client, me, &block),
            };
            for input in inputs {
                if tx.send(input).is_err() {
                    return;
                }
            }
        }
    }
}

/// Open job auctions and the jobs leased to this provider, from the ledger.
fn resync(client: &Client, me: Address, tx: &Sender<Input>) -> Result<(), ()> {
    let jobs: Vec<JobDto> = client.get("/jobs?limit=1000").map_err(|_| ())?;
    for j in jobs {
        let input = match j.state.as_str() {
            "leased" if j.provider == Some(me) => j.lease.map(|lease| Input::JobLeased { job: j.id, lease }),
            "queued" => open_order(&j),
            _ => None,
        };
        if let Some(i) = input {
            tx.send(i).map_err(|_| ())?;
        }
    }
    Ok(())
}

fn open_order(j: &JobDto) -> Option<Input> {
    let spec = j.decode_spec().ok()?;
    Some(Input::OrderOpened(OpenOrder {
        id: j.order,
        resources: spec.order.resources,
        max_price_per_block: spec.order.max_price_per_block,
        pricing: spec.order.pricing,
        job: Some(j.id),
    }))
}

/// The order a `jobs.submitted` / `jobs.replaced` event describes.
fn order_from_event(e: &Event, job: u64) -> Option<OpenOrder> {
    let pricing = match e.get("pricing")? {
        "auction" => Pricing::Auction,
        _ => Pricing::Fixed,
    };
    Some(OpenOrder {
        id: attr(e, "order")?,
        resources: Resources {
            cpu_cores: attr(e, "cpu_cores")?,
            ram_mb: attr(e, "ram_mb")?,
            disk_gb: attr(e, "disk_gb")?,
            gpus: attr(e, "gpus")?,
            gpu_memory_mb: attr(e, "gpu_memory_mb")?,
        },
        max_price_per_block: amount(e, "max_price_per_block")?,
        pricing,
        job: Some(job),
    })
}

fn attr<T: std::str::FromStr>(e: &Event, name: &str) -> Option<T> {
    e.get(name)?.parse().ok()
}

fn amount(e: &Event, name: &str) -> Option<Amount> {
    Amount::parse_tsr(e.get(name)?).ok()
}

fn block_inputs(client: &Client, me: Address, block: &BlockEventDto) -> Vec<Input> {
    let events = block.txs.iter().filter(|t| t.code == 0).flat_map(|t| t.events.iter()).chain(block.end_events.iter());
    let mut out = Vec::new();
    for e in events {
        match e.kind.as_str() {
            "jobs.submitted" | "jobs.replaced" => {
                let Some(job) = attr::<u64>(e, "job") else { continue };
                match order_from_event(e, job) {
                    Some(o) => out.push(Input::OrderOpened(o)),
                    // An event without the terms: read the job instead.
                    None => {
                        if let Ok(mut d) = client.get::<JobDto>(&format!("/jobs/{job}")) {
                            if let Some(order) = attr::<u64>(e, "order") {
                                d.order = order;
                            }
                            out.extend(open_order(&d));
                        }
                    }
                }
            }
            "market.bid_placed" => {
                if let (Some(order), Some(provider), Some(price)) =
                    (attr::<u64>(e, "order"), attr::<Address>(e, "provider"), amount(e, "price_per_block"))
                {
                    out.push(Input::RivalBid { order, provider, price });
                }
            }
            "market.lease_opened" | "market.order_expired" | "market.order_cancelled" => {
                if let Some(order) = attr::<u64>(e, "order") {
                    out.push(Input::OrderClosed { order });
                }
            }
            "jobs.leased" => {
                if let (Some(job), Some(lease), Some(provider)) =
                    (attr::<u64>(e, "job"), attr::<u64>(e, "lease"), attr::<Address>(e, "provider"))
                    && provider == me
                {
                    out.push(Input::JobLeased { job, lease });
                }
            }
            "jobs.succeeded" | "jobs.failed" => {
                if let Some(job) = attr::<u64>(e, "job") {
                    out.push(Input::JobDone { job });
                }
            }
            "jobs.cancelled" => {
                if let Some(job) = attr::<u64>(e, "job") {
                    out.push(Input::JobGone { job });
                }
            }
            "jobs.provider_lost" => {
                if let (Some(job), Some(provider)) = (attr::<u64>(e, "job"), attr::<Address>(e, "provider"))
                    && provider == me
                {
                    out.push(Input::JobGone { job });
                }
            }
            _ => {}
        }
    }
    out
}
